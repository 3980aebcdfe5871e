"""The connection guard's count per address (the served behaviour: tests/hardening/test_slow_clients.py)."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.connections import ConnectionGuard

pytestmark = pytest.mark.unit


def test_connections_per_address_are_capped_but_not_a_trusted_proxys() -> None:
    guard = ConnectionGuard(Settings(max_connections_per_address=2, trusted_proxies=("10.0.0.0/8",)))
    assert guard.admit("198.51.100.1") and guard.admit("198.51.100.1")
    assert not guard.admit("198.51.100.1")
    assert guard.admit("198.51.100.2")
    assert all(guard.admit("10.1.2.3") for _ in range(10))  # a proxy carries everyone's connections
    guard.release("198.51.100.1")
    assert guard.admit("198.51.100.1")
    for address in ("198.51.100.1", "198.51.100.1", "198.51.100.2", "10.1.2.3"):
        guard.release(address)
    assert guard.open_per_address == {}  # nothing kept for addresses with nothing open


def test_no_cap_counts_nothing() -> None:
    guard = ConnectionGuard(Settings(max_connections_per_address=0))
    assert all(guard.admit("198.51.100.1") for _ in range(1000))
    assert guard.open_per_address == {}
