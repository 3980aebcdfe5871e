"""Rules for the rate-limiter tests."""

from __future__ import annotations

from typing import Any

from ratelimit.rules import Rule


def make_rule(rule_id: str = "r", *, rate: int = 1, period_s: float = 60, burst: int = 1, **fields: Any) -> Rule:
    """A rule on every route, keyed by IP unless told; by default one request a minute, no burst."""
    return Rule(id=rule_id, routes=("*",), key=fields.pop("key", "ip"), rate=rate, period_s=period_s,
                burst=burst, **fields)
