"""The limiter against real Redis: verdicts, the denial cache, concurrency and the sustained rate."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import redis.asyncio as aioredis

from core.redis import AutoPipeline
from loadtest.processes import RedisServer
from ratelimit.errors import RateLimited
from ratelimit.keys import rule_key
from ratelimit.limiter import Limiter, LimiterSettings
from tests.ratelimit.factories import make_rule


async def test_verdict_states_and_keys(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    per_ip = make_rule("login-ip", rate=10, period_s=60, burst=2)
    per_account = make_rule("login-account", rate=5, period_s=300, burst=5, key="account")
    checks = [(per_ip, "203.0.113.7"), (per_account, "张三")]

    first = await limiter.check(checks)
    await limiter.check(checks)
    third = await limiter.check(checks)

    assert first.allowed and first.source == "redis" and not first.unavailable
    assert [(s.rule_id, s.allowed, s.limit, s.remaining, s.quota, s.window_s) for s in first.states] == [
        ("login-ip", True, 2, 1, 10, 60), ("login-account", True, 5, 4, 5, 300)]
    assert 5.9 < first.states[0].reset_s <= 6.0
    assert not third.allowed and third.source == "redis"
    assert first.refusal() is None
    refusal = third.refusal()
    assert isinstance(refusal, RateLimited) and refusal.rule_ids == ("login-ip",)
    assert refusal.retry_after_s == third.retry_after_s and refusal.verdict is third
    assert 5.9 < third.retry_after_s <= 6.0
    assert third.states[1].remaining == 3  # the refused request took nothing from the account rule
    assert sorted(await redis.keys("*")) == sorted(
        [rule_key("login-ip", "203.0.113.7").encode(), rule_key("login-account", "张三").encode()])
    assert limiter.counters["checks"] == 3 and limiter.counters["denied"] == 1


async def test_rules_off_are_ignored(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    off = make_rule("off", mode="off")

    verdict = await limiter.check([(off, "a"), (off, "a")])

    assert verdict.allowed and verdict.source == "none" and verdict.states == ()
    assert pipeline.commands_sent == 0
    assert (await limiter.check([(off, "a"), (make_rule("on"), "a")])).states[0].rule_id == "on"


async def test_shadow_denials_are_reported_and_counted(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    enforce, shadow = make_rule("e", burst=10), make_rule("s", mode="shadow")
    await limiter.check([(enforce, "a"), (shadow, "a")])

    verdict = await limiter.check([(enforce, "a"), (shadow, "a")])
    again = await limiter.check([(enforce, "a"), (shadow, "a")])

    assert verdict.allowed and verdict.shadow_denied == ("s",)
    assert again.source == "redis"  # shadow denials are not cached
    assert verdict.states[0].remaining == 8 and again.states[0].remaining == 7
    assert limiter.counters["shadow_denials"] == 2 and limiter.counters["denied"] == 0


async def test_cached_denial_makes_no_redis_call(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    rule = make_rule("login-ip")
    assert (await limiter.check([(rule, "a")])).allowed
    denied = await limiter.check([(rule, "a")])
    sent = pipeline.commands_sent

    cached = await limiter.check([(rule, "a"), (make_rule("other", burst=10), "a")])

    assert not denied.allowed and denied.source == "redis"
    assert not cached.allowed and cached.source == "denial_cache"
    assert pipeline.commands_sent == sent
    assert 0 < cached.retry_after_s <= denied.retry_after_s
    assert denied.retry_after_s - cached.retry_after_s < 0.5
    assert [(s.rule_id, s.allowed, s.remaining) for s in cached.states] == [("login-ip", False, 0)]
    assert (await limiter.check([(rule, "b")])).allowed  # other subjects are not affected
    assert limiter.counters["denial_cache_hits"] == 1 and limiter.counters["denied"] == 2


async def test_cached_denial_ends_at_the_retry_time(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    rule = make_rule(rate=5, period_s=1, burst=1)
    await limiter.check([(rule, "a")])
    denied = await limiter.check([(rule, "a")])
    assert (await limiter.check([(rule, "a")])).source == "denial_cache"

    await asyncio.sleep(denied.retry_after_s)
    verdict = await limiter.check([(rule, "a")])

    assert verdict.allowed and verdict.source == "redis"


async def test_denial_cache_is_bounded(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline, LimiterSettings(denial_cache_entries=8))
    rule = make_rule()
    for i in range(40):
        await limiter.check([(rule, f"s{i}")])
        await limiter.check([(rule, f"s{i}")])
    assert len(limiter._plans_by_rule[rule].denials) <= 8
    for i in range(39, 33, -1):  # the newest are kept
        assert (await limiter.check([(rule, f"s{i}")])).source == "denial_cache"
    assert (await limiter.check([(rule, "s0")])).source == "redis"


async def test_denial_cache_follows_the_rule_config(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    rule = make_rule("r")
    await limiter.check([(rule, "a")])
    await limiter.check([(rule, "a")])

    reloaded = dataclasses.replace(rule)  # a config reload parses an equal rule anew
    relaxed = dataclasses.replace(rule, mode="shadow")

    assert reloaded is not rule
    assert (await limiter.check([(reloaded, "a")])).source == "denial_cache"
    verdict = await limiter.check([(relaxed, "a")])
    assert verdict.allowed and verdict.source == "redis" and verdict.shadow_denied == ("r",)


async def test_concurrent_requests_never_exceed_the_burst(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    limiter = Limiter(pipeline)
    per_ip, per_account = make_rule("ip", burst=30), make_rule("account", burst=20, key="account")

    verdicts = await asyncio.gather(*(
        limiter.check([(per_ip, "10.0.0.1"), (per_account, f"user{i % 2}")]) for i in range(200)))

    assert sum(v.allowed for v in verdicts) == 30  # 20 for user0 would be 40 > 30: the IP rule binds
    allowed_users = [i % 2 for i, v in enumerate(verdicts) if v.allowed]
    assert allowed_users.count(0) <= 20 and allowed_users.count(1) <= 20


async def test_sustained_rate_is_burst_plus_rate_times_elapsed(server: RedisServer) -> None:
    # A test-owned server: two seconds is long enough for another suite's FLUSHDB on the shared
    # test db to land mid-test and hand out a fresh burst.
    client = AutoPipeline(server.url, connections=2, timeout_ms=1_000)
    limiter = Limiter(client, LimiterSettings(budget_ms=1_000))
    rule = make_rule("steady", rate=200, period_s=1, burst=20, on_redis_error="closed")
    admitted = 0
    duration_s = 2.0
    # GCRA keeps at most the burst: a process frozen longer than burst / rate (a virtual machine's
    # stolen CPU, a collection) cannot claim what accrued meanwhile. Such stalls are measured and
    # the part beyond that window is what nobody could have used.
    window_s = 20 / 200
    frozen_s = 0.0

    async def hammer(deadline: float) -> None:
        nonlocal admitted
        while time.monotonic() < deadline:
            verdict = await limiter.check([(rule, "hot")])
            admitted += verdict.allowed
            await asyncio.sleep(0)  # a cached denial returns without yielding

    async def watch(deadline: float) -> None:
        nonlocal frozen_s
        last = time.monotonic()
        while last < deadline:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            frozen_s += max(0.0, now - last - window_s)
            last = now

    try:
        await limiter.preload()
        started = time.monotonic()
        await asyncio.gather(watch(started + duration_s), *(hammer(started + duration_s) for _ in range(50)))
        elapsed_s = time.monotonic() - started
    finally:
        await client.close()

    most = 20 + 200 * elapsed_s
    least = 20 + 200 * (elapsed_s - frozen_s)
    assert 0.95 * least <= admitted <= 1.05 * most, (admitted, least, most, frozen_s, limiter.counters)
    assert limiter.counters["redis_errors"] == 0
    assert limiter.counters["denial_cache_hits"] > 0


async def test_failure_rules_count_only_recorded_failures(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    """A ``counts: failures`` rule never consumes on a check; ``failures=True`` does, until it refuses."""
    limiter = Limiter(pipeline)
    rule = make_rule(rate=3, period_s=60, burst=3, counts="failures")
    for _ in range(10):
        assert (await limiter.check([(rule, "acct")])).allowed
    for _ in range(3):
        await limiter.check([(rule, "acct")], failures=True)
    refused = await limiter.check([(rule, "acct")])
    assert not refused.allowed and refused.retry_after_s > 0
