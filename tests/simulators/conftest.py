"""Fixtures of the simulator tests: the payments tests' key set, simulator and merchant client."""

from tests.payments.conftest import client, keys, keys_dir, paysim

__all__ = ["client", "keys", "keys_dir", "paysim"]
