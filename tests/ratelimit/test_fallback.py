"""Redis trouble, on a test-owned redis-server: time budget, breaker, open/closed/local, recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from core.redis import AutoPipeline
from loadtest.processes import RedisServer
from ratelimit.errors import LimiterUnavailable
from ratelimit.headers import ratelimit_headers
from ratelimit.limiter import Limiter, LimiterSettings, Verdict
from ratelimit.rules import Rule
from tests.ratelimit.factories import make_rule

BUDGET_MS = 100
MAX_CHECK_S = 0.5


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the test-owned server."""
    pipeline = AutoPipeline(server.url, connections=1, timeout_ms=1_000)
    try:
        yield pipeline
    finally:
        await pipeline.close()


def limiter_for(client: AutoPipeline, **settings: object) -> Limiter:
    return Limiter(client, LimiterSettings(budget_ms=BUDGET_MS, **settings))  # type: ignore[arg-type]


async def timed_check(limiter: Limiter, checks: Sequence[tuple[Rule, str]]) -> Verdict:
    """A check, asserting it returned well within the time budget."""
    started = time.monotonic()
    verdict = await limiter.check(checks)
    elapsed = time.monotonic() - started
    assert elapsed < MAX_CHECK_S, f"check took {elapsed:.3f} s"
    return verdict


async def test_open_rule_allows_while_redis_is_down(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client)
    rule = make_rule("open", on_redis_error="open")
    assert (await timed_check(limiter, [(rule, "a")])).source == "redis"
    server.stop()

    verdict = await timed_check(limiter, [(rule, "a")])

    assert verdict.allowed and verdict.source == "fallback_open" and not verdict.unavailable
    assert verdict.states == ()  # nothing known, nothing advertised
    assert limiter.counters["fallback_open"] == 1 and limiter.counters["redis_errors"] == 1


async def test_closed_rule_answers_unavailable(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client, unavailable_retry_after_s=2.0)
    server.stop()
    closed = make_rule("closed", on_redis_error="closed")

    verdict = await timed_check(limiter, [(closed, "a"), (make_rule("open", on_redis_error="open"), "a")])

    assert not verdict.allowed and verdict.unavailable and verdict.source == "fallback_closed"
    assert verdict.retry_after_s == 2.0
    assert isinstance(verdict.refusal(), LimiterUnavailable)
    assert ratelimit_headers(verdict) == {"Retry-After": "2"}
    assert limiter.counters["fallback_closed"] == 1 and limiter.counters["fallback_open"] == 0


async def test_closed_wins_over_local_and_consumes_nothing(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client)
    server.stop()
    closed = make_rule("closed", on_redis_error="closed")
    local = make_rule("local", burst=3, on_redis_error="local")

    verdict = await timed_check(limiter, [(local, "a"), (closed, "a")])
    alone = await timed_check(limiter, [(local, "a")])

    assert verdict.source == "fallback_closed" and verdict.unavailable
    assert alone.source == "fallback_local" and alone.states[0].remaining == 2


async def test_shadow_rules_never_block_in_fallback(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client)
    server.stop()
    shadow_closed = make_rule("sc", mode="shadow", on_redis_error="closed")
    shadow_local = make_rule("sl", mode="shadow", on_redis_error="local")

    first = await timed_check(limiter, [(shadow_closed, "a"), (shadow_local, "a")])
    second = await timed_check(limiter, [(shadow_closed, "a"), (shadow_local, "a")])

    assert first.allowed and second.allowed and second.shadow_denied == ("sl",)
    assert limiter.counters["shadow_denials"] == 1


async def test_local_rule_keeps_limiting_at_its_share(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client, processes=2, breaker_failures=2)
    rule = make_rule("local", rate=20, period_s=1, burst=4, on_redis_error="local")  # here: 10/s, burst 2
    server.stop()
    admitted = 0
    denied: list[Verdict] = []
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        verdict = await timed_check(limiter, [(rule, "a")])
        assert verdict.source == "fallback_local"
        admitted += verdict.allowed
        if not verdict.allowed:
            denied.append(verdict)
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started

    assert abs(admitted - (2 + 10 * elapsed)) <= 2
    assert all(0 < v.retry_after_s <= 0.1 for v in denied)
    assert denied[0].states[0].rule_id == "local" and denied[0].states[0].remaining == 0
    assert limiter.counters["fallback_local"] == admitted + len(denied)


async def test_open_breaker_stops_calling_redis(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client, breaker_failures=3, breaker_cooldown_s=60)
    rule = make_rule(on_redis_error="open")
    server.stop()

    verdicts = [await timed_check(limiter, [(rule, "a")]) for _ in range(10)]

    assert all(v.allowed and v.source == "fallback_open" for v in verdicts)
    assert limiter.counters["redis_calls"] == 3 and limiter.counters["breaker_open"] == 7
    assert limiter.counters["fallback_open"] == 10
    assert limiter.breaker.state == "open" and limiter.breaker.opened == 1


async def test_hung_redis_costs_at_most_the_budget(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client, breaker_failures=3, breaker_cooldown_s=60)
    rule = make_rule(on_redis_error="local", burst=5)
    assert (await timed_check(limiter, [(rule, "a")])).source == "redis"
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        concurrent = await asyncio.gather(*(timed_check(limiter, [(rule, f"c{i}")]) for i in range(20)))
        sequential = [await timed_check(limiter, [(rule, "a")]) for _ in range(5)]
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)

    assert all(v.source == "fallback_local" for v in concurrent + sequential)
    assert limiter.counters["redis_timeouts"] == limiter.counters["redis_calls"] - 1 >= 3
    assert limiter.breaker.state == "open"


async def test_recovers_when_redis_comes_back(client: AutoPipeline, server: RedisServer) -> None:
    limiter = limiter_for(client, breaker_failures=2, breaker_cooldown_s=0.2)
    rule = make_rule(on_redis_error="closed")
    await limiter.preload()
    server.stop()
    for _ in range(5):
        assert (await timed_check(limiter, [(rule, "a")])).source == "fallback_closed"
    assert limiter.breaker.state == "open"

    server.start()  # same port, empty: the script must be loaded again
    deadline = time.monotonic() + 5
    verdict = await timed_check(limiter, [(rule, "a")])
    while verdict.source != "redis" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        verdict = await timed_check(limiter, [(rule, "a")])

    assert verdict.source == "redis" and verdict.allowed
    assert str(limiter.breaker.state) == "closed"
    assert not (await timed_check(limiter, [(rule, "a")])).allowed
