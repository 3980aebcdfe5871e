"""The circuit breaker, on a fake clock."""

from __future__ import annotations

import pytest

from ratelimit.breaker import Breaker

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: Breaker) -> str:
    """The breaker's state, read fresh (a property mypy would otherwise narrow)."""
    return breaker.state


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown_s=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # resets the run
    for _ in range(2):
        breaker.record_failure()
    assert state(breaker) == "closed" and breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open" and breaker.opened == 1
    assert not breaker.allow()


def test_half_open_lets_one_probe_and_success_closes() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.999
    assert not breaker.allow()
    clock.now += 0.001
    assert state(breaker) == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow() and not breaker.allow()  # everyone else waits for it
    breaker.record_success()
    assert state(breaker) == "closed" and breaker.allow() and breaker.allow()


def test_failed_probe_opens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert breaker.opened == 1  # reopening after a probe is not a new trip


def test_lost_or_abandoned_probe_is_replaced() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.allow()
    breaker.abandon()  # the probing request was cancelled
    assert breaker.allow()
    clock.now += 2.0  # and this probe never reports at all
    assert breaker.allow()
