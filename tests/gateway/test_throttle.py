"""Rate limits through a running gateway with two processes, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from loadtest.processes import Process, RedisServer, start_gateway, start_redis


def admin_token(gateway: Process) -> str:
    secrets = json.loads((Path(gateway.extra["run_dir"]) / "secrets.json").read_text())
    return str(next(iter(secrets["admin_tokens"].values())))


async def configure(gateway: Process, patch: dict[str, Any]) -> int:
    """PATCH the live config and wait until every process of the gateway applies it."""
    headers = {"Authorization": f"Bearer {admin_token(gateway)}", "Content-Type": "application/merge-patch+json"}
    async with aiohttp.ClientSession() as session:
        async with session.patch(gateway.url + "/admin/api/v1/config", json=patch, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            version = int((await resp.json())["version"])
        deadline = time.monotonic() + 5
        seen: dict[int, int] = {}
        while time.monotonic() < deadline:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
                for _ in range(8):
                    async with fresh.get(gateway.url + "/healthz") as reply:
                        body = await reply.json()
                        seen[body["pid"]] = body["config_version"]
            if len(seen) >= gateway_processes(gateway) and all(v >= version for v in seen.values()):
                return version
            await asyncio.sleep(0.05)
        raise AssertionError(f"config version {version} not applied everywhere: {seen}")


def gateway_processes(gateway: Process) -> int:
    return int(gateway.extra.get("workers", "2"))


def rule(rule_id: str, routes: list[str], key: str, rate: int, period_s: float, burst: int,
         **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "routes": routes, "key": key, "rate": rate, "period_s": period_s,
            "burst": burst, **extra}


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    # Metrics rendered on every scrape: the shadow-denial count is read right before and after. These
    # tests measure the rules' arithmetic, not the fail-open budget: with the production 75 ms, a CI
    # machine busy elsewhere for a moment let decisions time out and pass (4x the rate allowed once).
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_BENCH_ROUTES="true",
                            EXAMGATE_METRICS_CACHE_S="0", EXAMGATE_RATELIMIT_BUDGET_MS="1000")
    process.extra["workers"] = "2"
    yield process
    assert process.stop() == 0, process.log()


async def hammer(url: str, clients: int, duration_s: float) -> tuple[Counter[int], float, list[Any]]:
    """``clients`` concurrent loops for ``duration_s``; statuses, elapsed time and a sample 429."""
    statuses: Counter[int] = Counter()
    refusals: list[Any] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        stop_at = started + duration_s

        async def loop() -> None:
            while time.monotonic() < stop_at:
                async with session.get(url) as resp:
                    statuses[resp.status] += 1
                    if resp.status == 429 and len(refusals) < 3:
                        refusals.append((dict(resp.headers), await resp.json()))
                    else:
                        await resp.read()

        await asyncio.gather(*(loop() for _ in range(clients)))
        return statuses, time.monotonic() - started, refusals


async def test_sustained_rate_within_5_percent_across_both_processes(gateway: Process) -> None:
    rate_per_s, burst = 100, 20
    await configure(gateway, {"ratelimit": {"rules": [
        rule("sustained", ["bench.noop"], "global", rate_per_s, 1, burst)]}})
    statuses, elapsed_s, refusals = await hammer(gateway.url + "/_bench/noop", clients=50, duration_s=10)
    expected = burst + rate_per_s * elapsed_s
    assert set(statuses) <= {200, 429}
    assert abs(statuses[200] - expected) <= 0.05 * expected, (statuses, elapsed_s)
    assert statuses[429] > statuses[200]
    headers, body = refusals[0]
    assert body["error"]["code"] == "too_many_requests"
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Policy"] == '"sustained";q=100;w=1'
    assert re.fullmatch(r'"sustained";r=\d+;t=\d+', headers["RateLimit"])


async def test_burst_is_honoured(gateway: Process) -> None:
    await configure(gateway, {"ratelimit": {"rules": [rule("burst", ["bench.redis_get"], "ip", 1, 3600, 5)]}})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        replies = await asyncio.gather(*(session.get(gateway.url + "/_bench/redis-get") for _ in range(15)))
        statuses = Counter(reply.status for reply in replies)
        for reply in replies:
            reply.release()
    assert statuses == {200: 5, 429: 10}


async def test_a_denial_leaves_the_other_rules_quota_untouched(gateway: Process) -> None:
    strict = rule("strict", ["bench.redis_get_plain"], "ip", 1, 3600, 2)
    loose = rule("loose", ["bench.redis_get_plain"], "global", 1, 3600, 10)
    await configure(gateway, {"ratelimit": {"rules": [strict, loose]}})
    async with aiohttp.ClientSession() as session:
        first = [await (await session.get(gateway.url + "/_bench/redis-get-plain")).read() for _ in range(2)]
        assert len(first) == 2
        denied = [(await session.get(gateway.url + "/_bench/redis-get-plain")).status for _ in range(6)]
        assert denied == [429] * 6
    # Only the two admitted requests used the loose rule's quota: 8 of its 10 are left.
    await configure(gateway, {"ratelimit": {"rules": [{**strict, "mode": "off"}, loose]}})
    async with aiohttp.ClientSession() as session:
        statuses = Counter([(await session.get(gateway.url + "/_bench/redis-get-plain")).status for _ in range(12)])
    assert statuses == {200: 8, 429: 4}


async def test_shadow_rules_block_nothing_and_count_would_be_denials(gateway: Process) -> None:
    await configure(gateway, {"ratelimit": {"rules": [
        rule("shadowed", ["bench.sleep"], "global", 1, 3600, 1, mode="shadow")]}})
    async with aiohttp.ClientSession() as session:
        before = await shadow_denials(session, gateway)
        statuses = Counter([(await session.get(gateway.url + "/_bench/sleep?ms=1")).status for _ in range(10)])
        assert statuses == {200: 10}
        await asyncio.sleep(0.1)
        assert await shadow_denials(session, gateway) - before == 9


async def shadow_denials(session: aiohttp.ClientSession, gateway: Process) -> float:
    scraper = {"Authorization": f"Bearer {gateway.metrics_token()}"}
    async with session.get(gateway.url + "/metrics", headers=scraper) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    found = re.findall(r'^examgate_ratelimit_events\{event="shadow_denials"\} (\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


async def test_redis_stopped_mid_test(pg_dsn: str, own_redis: RedisServer) -> None:
    gateway = start_gateway(pg_dsn, own_redis.url, workers=2, EXAMGATE_BENCH_ROUTES="true",
                            EXAMGATE_RATELIMIT_BUDGET_MS="100", EXAMGATE_REDIS_TIMEOUT_MS="200")
    gateway.extra["workers"] = "2"
    try:
        await configure(gateway, {"ratelimit": {"rules": [
            rule("fails-open", ["bench.noop"], "global", 1000, 1, 1000, on_redis_error="open"),
            rule("fails-closed", ["bench.sleep"], "global", 1000, 1, 1000, on_redis_error="closed"),
            rule("fails-local", ["exams.list"], "global", 6, 3600, 6, on_redis_error="local"),
        ]}})
        own_redis.stop()

        async def timed(session: aiohttp.ClientSession, path: str) -> tuple[int, float]:
            started = time.monotonic()
            async with session.get(gateway.url + path) as resp:
                await resp.read()
                return resp.status, time.monotonic() - started

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            opened = [await timed(session, "/_bench/noop") for _ in range(10)]
            closed = [await timed(session, "/_bench/sleep?ms=1") for _ in range(10)]
            local = [await timed(session, "/api/v1/exams") for _ in range(30)]
        assert {status for status, _ in opened} == {200}
        assert {status for status, _ in closed} == {503}
        local_ok = sum(status == 200 for status, _ in local)
        assert 1 <= local_ok <= 6 and {status for status, _ in local} <= {200, 429}
        slowest_s = max(elapsed for _, elapsed in opened + closed + local)
        assert slowest_s < 1.0, f"a request waited {slowest_s:.2f} s for a dead Redis"

        own_redis.start()
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            while True:
                statuses = {(await timed(session, "/_bench/sleep?ms=1"))[0] for _ in range(4)}
                if statuses == {200}:
                    break
                assert time.monotonic() < deadline, "the limiter did not recover after Redis came back"
                await asyncio.sleep(0.2)
    finally:
        gateway.stop()
