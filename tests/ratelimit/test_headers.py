"""Retry-After and the IETF RateLimit-Policy / RateLimit fields."""

from __future__ import annotations

import pytest

from ratelimit.headers import (
    most_restrictive,
    policy_quota,
    ratelimit_header,
    ratelimit_headers,
    ratelimit_policy_header,
    retry_after_header,
)
from ratelimit.limiter import RuleState, Verdict
from tests.ratelimit.factories import make_rule

pytestmark = pytest.mark.unit


def state(rule_id: str, allowed: bool, remaining: int, reset_s: float, *, enforced: bool = True) -> RuleState:
    return RuleState(rule_id, allowed, 10, remaining, reset_s, 10, 60, enforced)


def test_retry_after_rounds_up_to_whole_seconds_at_least_one() -> None:
    assert retry_after_header(0) == "1"
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.001) == "2"
    assert retry_after_header(59.999) == "60"
    for ms in range(1, 5_000, 7):  # never earlier than the real retry time
        assert int(retry_after_header(ms / 1000)) * 1000 >= ms


def test_policy_quota_uses_whole_second_windows() -> None:
    assert policy_quota(make_rule(rate=10, period_s=60)) == (10, 60)
    assert policy_quota(make_rule(rate=100, period_s=0.5)) == (200, 1)
    assert policy_quota(make_rule(rate=3, period_s=1.5)) == (4, 2)
    assert policy_quota(make_rule(rate=7, period_s=0.3)) == (23, 1)


def test_fields_for_an_allowed_request() -> None:
    verdict = Verdict(True, 0.0, (
        state("login-ip", True, 3, 11.2),
        state("login-account", True, 1, 40.0),
        state("login-shadow", False, 0, 5.0, enforced=False),
    ), ("login-shadow",), "redis")

    assert ratelimit_policy_header(verdict) == '"login-ip";q=10;w=60, "login-account";q=10;w=60'
    assert ratelimit_header(verdict) == '"login-account";r=1;t=40'
    assert ratelimit_headers(verdict) == {
        "RateLimit-Policy": '"login-ip";q=10;w=60, "login-account";q=10;w=60',
        "RateLimit": '"login-account";r=1;t=40',
    }


def test_fields_for_a_denied_request_match_retry_after() -> None:
    verdict = Verdict(False, 12.3, (
        state("a", True, 0, 30.0),
        state("b", False, 2, 4.5),
        state("c", False, 0, 12.3),
    ), (), "redis")

    picked = most_restrictive(verdict)
    assert picked is not None and picked.rule_id == "c"
    headers = ratelimit_headers(verdict)
    assert headers["RateLimit"] == '"c";r=0;t=13'
    assert headers["Retry-After"] == "13"


def test_no_fields_without_enforced_rules() -> None:
    unavailable = Verdict(False, 2.0, (), (), "fallback_closed", True)
    assert ratelimit_headers(unavailable) == {"Retry-After": "2"}
    assert ratelimit_headers(Verdict(True, 0.0, (), (), "none")) == {}
    assert ratelimit_header(Verdict(True, 0.0, (state("s", True, 1, 1, enforced=False),), (), "redis")) is None


def test_policy_names_are_structured_field_strings() -> None:
    verdict = Verdict(True, 0.0, (state('we"ird\\', True, 1, 1.0),), (), "redis")
    assert ratelimit_policy_header(verdict) == '"we\\"ird\\\\";q=10;w=60'
