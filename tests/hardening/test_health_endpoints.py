"""Health endpoints through a running two-process gateway: what they cost and whether they tell the truth.

``/metrics`` answers only operators and the scraper and renders at most once a second per
process; ``/readyz`` asks the stores at most once a second per process, still turns 503 soon
after a store goes away, and reports a dead worker and a missing ticket font as degraded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from loadtest.processes import Process, start_gateway, start_redis, start_worker
from tests.gateway.test_app import assert_error_shape

HEARTBEAT_S = "0.2"  # the worker beats every 0.2 s: it counts as gone 0.6 s after its last beat
CACHE_S = 1.0  # the default readiness and metrics cache


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_WORKER_HEARTBEAT_S=HEARTBEAT_S)
    yield process
    assert process.stop() == 0, process.log()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape_token(gateway: Process) -> str:
    """The dedicated scrape token, generated into the secrets file beside the admin tokens."""
    return str(json.loads((Path(gateway.extra["run_dir"]) / "secrets.json").read_text())["metrics_token"])


def sample(text: str, name: str) -> float:
    found = re.findall(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} is not in the exposition"
    return float(found[0])


async def fresh_sample(gateway: Process, name: str) -> float:
    """``name`` from a render made now: every process's cached render is older than the cache interval."""
    await asyncio.sleep(CACHE_S + 0.1)
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/metrics", headers=bearer(gateway.admin_token())) as resp:
            assert resp.status == 200, await resp.text()
            return sample(await resp.text(), name)


async def ready_body(session: aiohttp.ClientSession, gateway: Process) -> tuple[int, dict[str, Any]]:
    async with session.get(gateway.url + "/readyz") as resp:
        return resp.status, await resp.json()


async def until_ready(gateway: Process, wanted: Callable[[int, dict[str, Any]], bool],
                      timeout_s: float) -> tuple[int, dict[str, Any], float]:
    """Poll /readyz until ``wanted(status, body)``; the answer and how long it took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            status, body = await ready_body(session, gateway)
            if wanted(status, body):
                return status, body, time.monotonic() - started
            assert time.monotonic() - started < timeout_s, (status, body)
            await asyncio.sleep(0.05)


async def test_metrics_refuse_anonymous_scrapes_without_rendering(gateway: Process) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/metrics") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert_error_shape(await resp.json(), "unauthorized")
        async with session.get(gateway.url + "/metrics", headers=bearer("not-a-token-" + "x" * 32)) as resp:
            assert resp.status == 401
            assert_error_shape(await resp.json(), "unauthorized")
        async with session.get(gateway.url + "/healthz") as resp:
            assert resp.status == 200  # liveness stays open

    before = await fresh_sample(gateway, "examgate_metrics_renders_total")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as session:

        async def anonymous() -> int:
            async with session.get(gateway.url + "/metrics") as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(anonymous() for _ in range(200)))
    assert set(statuses) == {401}
    # The only render between the two readings is the second reading's own.
    assert await fresh_sample(gateway, "examgate_metrics_renders_total") - before == 1


async def test_metrics_answer_the_operator_and_the_scrape_token(gateway: Process) -> None:
    async with aiohttp.ClientSession() as session:
        for token in (gateway.admin_token(), scrape_token(gateway)):
            async with session.get(gateway.url + "/metrics", headers=bearer(token)) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
                assert "examgate_requests_total" in text and "examgate_metrics_renders_total" in text


async def test_a_scrape_flood_renders_at_most_once_a_second_per_process(gateway: Process) -> None:
    token = gateway.admin_token()
    before = await fresh_sample(gateway, "examgate_metrics_renders_total")
    scrapes, spread_s = 300, 2.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=30)) as session:
        started = time.monotonic()

        async def scrape(index: int) -> int:
            await asyncio.sleep(index * spread_s / scrapes)
            async with session.get(gateway.url + "/metrics", headers=bearer(token)) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(scrape(i) for i in range(scrapes)))
        elapsed_s = time.monotonic() - started
    assert set(statuses) == {200}
    renders = await fresh_sample(gateway, "examgate_metrics_renders_total") - before
    # Per process: one render per second of the flood plus one at each edge; +1 for the last reading.
    assert renders <= 2 * (elapsed_s / CACHE_S + 2) + 1, (renders, elapsed_s)


async def test_a_readiness_flood_asks_the_stores_a_few_times(gateway: Process) -> None:
    before = await fresh_sample(gateway, "examgate_readiness_checks_total")
    calls = 500
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        started = time.monotonic()

        async def ready() -> int:
            async with session.get(gateway.url + "/readyz") as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(ready() for _ in range(calls)))
        elapsed_s = time.monotonic() - started
    assert set(statuses) == {200}
    checks = await fresh_sample(gateway, "examgate_readiness_checks_total") - before
    assert checks <= 2 * (elapsed_s / CACHE_S + 2), (checks, elapsed_s)


async def test_a_dead_worker_makes_readiness_degraded_and_leaves_admin_stats(gateway: Process, pg_dsn: str) -> None:
    from tests.conftest import TEST_REDIS_URL

    worker = start_worker(pg_dsn, TEST_REDIS_URL, EXAMGATE_WORKER_HEARTBEAT_S=HEARTBEAT_S)
    try:
        status, body, _ = await until_ready(gateway, lambda s, b: b.get("checks", {}).get("worker") == "ok", 5)
        assert status == 200 and body["status"] == "ready"
        workers = await admin_workers(gateway)
        live = [w for w in workers if w["alive"]]
        assert [w["id"].rpartition(":")[2] for w in live] == [str(worker.proc.pid)], workers
        assert 0 <= live[0]["last_seen_s"] < 1

        worker.proc.kill()  # a crash: no goodbye, only the heartbeat stops
        worker.proc.wait()
        status, body, took_s = await until_ready(gateway, lambda s, b: b.get("checks", {}).get("worker") == "missing",
                                                 5)
        # Still 200: every gateway shares the worker, and pulling them all out of rotation would be an outage.
        assert status == 200 and body["status"] == "degraded" and body["degraded"] == ["worker"], body
        assert took_s < 3 * float(HEARTBEAT_S) + CACHE_S + 1.5
        workers = await admin_workers(gateway)
        assert not [w for w in workers if w["alive"]], workers
        gone = next(w for w in workers if w["id"].endswith(f":{worker.proc.pid}"))
        assert gone["last_seen_s"] >= 3 * float(HEARTBEAT_S)
    finally:
        worker.stop()


async def admin_workers(gateway: Process) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/admin/api/v1/stats", headers=bearer(gateway.admin_token())) as resp:
            assert resp.status == 200, await resp.text()
            return list((await resp.json())["workers"])


async def test_a_missing_ticket_font_is_logged_at_start_and_reported_by_readiness(pg_dsn: str,
                                                                                   tmp_path: Path) -> None:
    from tests.conftest import TEST_REDIS_URL

    missing = tmp_path / "fonts" / "NoSuchFont.ttf"
    fontless = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_TICKET_FONT=str(missing))
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await ready_body(session, fontless)
        assert status == 200 and body["status"] == "degraded", body
        assert body["checks"]["pdf_font"] == "missing" and "pdf_font" in body["degraded"]
        errors = [line for line in fontless.log().splitlines() if " ERROR " in line and str(missing) in line]
        assert errors and all("scripts/system-deps.sh" in line for line in errors), fontless.log()
    finally:
        assert fontless.stop() == 0, fontless.log()


async def test_readiness_turns_503_soon_after_redis_goes_away(pg_dsn: str) -> None:
    own = start_redis()
    try:
        served = start_gateway(pg_dsn, own.url, workers=2)
        try:
            await until_ready(served, lambda s, b: s == 200, 5)
            own.stop()
            _, body, took_s = await until_ready(served, lambda s, b: s == 503, 5)
            assert took_s < 2.5, took_s
            assert_error_shape(body, "not_ready")
            assert body["error"]["details"]["missing"] == ["redis"]
            assert body["error"]["details"]["checks"]["worker"] == "unknown"
        finally:
            assert served.stop() == 0, served.log()
    finally:
        own.stop()
