"""The in-process GCRA: same answers as the script, its share of the rule, bounded memory."""

from __future__ import annotations

import pytest

from ratelimit.local import LocalGCRA, decide, emission_us
from tests.ratelimit.factories import make_rule

pytestmark = pytest.mark.unit


def test_allows_up_to_burst_then_denies_until_the_retry_time() -> None:
    bucket = LocalGCRA(emission_s=1.0, burst=3)
    results = [bucket.check("a", now_s=100.0) for _ in range(4)]

    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert [r.reset_s for r in results] == [1.0, 2.0, 3.0, 1.0]
    assert not bucket.check("a", now_s=100.999_999).allowed
    assert bucket.check("a", now_s=101.0).allowed
    assert bucket.check("b", now_s=101.0).remaining == 2  # subjects are independent


def test_sustained_rate_is_burst_plus_rate_times_elapsed() -> None:
    bucket = LocalGCRA(emission_s=0.01, burst=5)
    admitted = sum(bucket.check("a", now_s=50 + step * 0.001).allowed for step in range(2_000))  # 2 s, 1 kHz
    assert admitted == 5 + 200 - 1  # the last emission would fall at exactly 2 s


def test_cost_and_cost_above_burst() -> None:
    bucket = LocalGCRA(emission_s=60.0, burst=5)
    assert bucket.check("a", 0.0, cost=2).remaining == 3
    assert bucket.check("a", 0.0, cost=2).remaining == 1
    denied = bucket.check("a", 0.0, cost=2)
    assert (denied.allowed, denied.remaining, denied.reset_s) == (False, 1, 60.0)
    assert not bucket.check("b", 0.0, cost=6).allowed


def test_decide_is_all_or_nothing_and_shadow_never_blocks() -> None:
    roomy, tight, shadow = LocalGCRA(60.0, 10), LocalGCRA(60.0, 1), LocalGCRA(60.0, 1)
    first = decide([(roomy, "a", 1, True), (tight, "a", 1, True), (shadow, "a", 1, False)], 0.0)
    assert first.allowed

    denied = decide([(roomy, "a", 1, True), (tight, "a", 1, True)], 1.0)
    assert not denied.allowed and denied.retry_after_s == pytest.approx(59.0)
    assert denied.results[0][:2] == (True, 9)  # not consumed
    assert roomy.check("a", 1.0).remaining == 8

    with_shadow = decide([(roomy, "b", 1, True), (shadow, "a", 1, False)], 2.0)
    assert with_shadow.allowed and with_shadow.retry_after_s == 0
    assert with_shadow.results[1].allowed is False


def test_share_of_a_rule_per_process() -> None:
    rule = make_rule(rate=100, period_s=1, burst=20, cost=1)
    share = LocalGCRA.for_rule(rule, processes=4)
    assert share.emission_us == 40_000  # 25/s
    assert share.tolerance_us == 5 * 40_000
    heavy = LocalGCRA.for_rule(make_rule(rate=100, period_s=1, burst=20, cost=8), processes=4)
    assert heavy.tolerance_us == 8 * heavy.emission_us  # never below one request's cost


def test_memory_is_bounded_and_expired_subjects_go_first() -> None:
    bucket = LocalGCRA(emission_s=1.0, burst=1, max_entries=100)
    for i in range(100):
        bucket.check(f"old{i}", now_s=0.0)
    for i in range(50):
        bucket.check(f"new{i}", now_s=10.0)  # the old ones are full again: evicted on the first insert
    assert len(bucket) == 50
    for i in range(500):
        bucket.check(f"live{i}", now_s=10.5)
    assert len(bucket) <= 100
    assert not bucket.check("live499", now_s=10.5).allowed  # the newest are kept


def test_emission_rounds_up_to_whole_microseconds() -> None:
    assert emission_us(0.1) == 100_000
    assert emission_us(1 / 3) == 333_334
    assert emission_us(1e-9) == 1
