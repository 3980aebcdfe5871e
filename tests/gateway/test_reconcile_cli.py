"""Rebuilding Redis from PostgreSQL: ``examgate reconcile`` after a FLUSHDB, the admin route, the worker's
own rebuild, and ``examgate ctl deadletters``. On a test-owned redis-server (flushing it harms nobody)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.processes import (
    ROOT,
    Process,
    RedisServer,
    examgate_env,
    start_gateway,
    start_worker,
)
from queueing import keys as qkeys
from tests.gateway.seat_stack import (
    FAST_WORKER,
    bearer,
    exam_ready,
    make_candidates,
    make_registrations,
    make_sessions,
    pg_holds,
    wait_inventory,
)


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, own_redis: RedisServer) -> Iterator[Process]:
    process = start_gateway(pg_dsn, own_redis.url, workers=2)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


def examgate(pg_dsn: str, gateway: Process, redis_url: str, *args: str) -> str:
    env = examgate_env(pg_dsn, redis_url, Path(gateway.extra["run_dir"]))
    done = subprocess.run([sys.executable, "-m", "examgate", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def snapshot(redis: aioredis.Redis, exam_id: int, site_ids: list[int]) -> dict[str, Any]:
    return {
        "holds": await redis.hgetall(qkeys.holds(exam_id)),
        "expiry": await redis.zrange(qkeys.hold_expiry(exam_id), 0, -1, withscores=True),
        "left": await redis.mget([qkeys.site_left(exam_id, s) for s in site_ids]),
    }


async def test_reconcile_restores_inventory_and_holds_after_a_flush(
        gateway: Process, pg_dsn: str, pg: asyncpg.Connection, own_redis: RedisServer, store: aioredis.Redis) -> None:
    exam_id, sites = await exam_ready(pg, gateway, [("11", 10), ("11", 10), ("37", 10)])
    await wait_inventory(store, exam_id, sites, worker=False)  # loaded by the sites route
    candidates = await make_candidates(pg, 6)
    registrations = await make_registrations(pg, exam_id, candidates)
    tokens = await make_sessions(own_redis.url, candidates)
    async with aiohttp.ClientSession() as http:
        for index, (registration_id, token) in enumerate(zip(registrations, tokens, strict=True)):
            for site_id in ([sites[0], sites[1]] if index == 0 else [sites[index % 2]]):
                async with http.put(f"{gateway.url}/api/v1/registrations/{registration_id}/seat",
                                    json={"site_id": site_id}, headers=bearer(token)) as resp:
                    assert resp.status == 200, await resp.text()
        # No worker runs: the first reconcile writes the stream to PostgreSQL before it compares.
        out = examgate(pg_dsn, gateway, own_redis.url, "reconcile", "--exam", str(exam_id))
        assert "hold events written to PostgreSQL first: 6" in out and "no drift found" in out, out
        assert len(await pg_holds(pg, exam_id)) == 6
        before = await snapshot(store, exam_id, sites)
        assert [int(v) for v in before["left"]] == [8, 6, 10]

        await store.flushdb()
        report = json.loads(examgate(pg_dsn, gateway, own_redis.url, "reconcile", "--exam", str(exam_id), "--json"))
        (exam,) = report["exams"]
        assert report["drifted"] and exam["holds_added"] == 6 and exam["holds_expected"] == 6
        assert {s["site_id"]: s["found_left"] for s in exam["sites"]} == dict.fromkeys(sites, None)
        assert await snapshot(store, exam_id, sites) == before

        admin = {"Authorization": f"Bearer {gateway.admin_token()}"}
        async with http.post(f"{gateway.url}/admin/api/v1/reconcile?exam_id={exam_id}", headers=admin) as resp:
            assert resp.status == 200
            assert (await resp.json())["drifted"] is False
        async with http.post(f"{gateway.url}/admin/api/v1/reconcile?exam_id=abc", headers=admin) as resp:
            assert resp.status == 422
        async with http.post(f"{gateway.url}/admin/api/v1/reconcile") as resp:
            assert resp.status == 401

    # The worker does the same by itself once the seat counts are gone.
    await store.flushdb()
    worker = start_worker(pg_dsn, own_redis.url, **FAST_WORKER)
    try:
        deadline = time.monotonic() + 15
        while await snapshot(store, exam_id, sites) != before:
            assert time.monotonic() < deadline, f"the worker did not rebuild the holds:\n{worker.log()}"
            await asyncio.sleep(0.1)
    finally:
        assert worker.stop() == 0, worker.log()


async def test_ctl_lists_and_replays_dead_letters(gateway: Process, pg_dsn: str, own_redis: RedisServer,
                                                  store: aioredis.Redis) -> None:
    letter = {"type": "hold", "registration": "1", "site": "1", "old_site": "", "expires_at_ms": "",
              "event": "5", "dl_stream": qkeys.holds_stream(424242), "dl_entry_id": "1-0", "dl_deliveries": "6",
              "dl_error": "UndefinedTableError('boom')", "dl_at_ms": "1"}
    letter_id = (await store.xadd(qkeys.HOLDS_DEAD_LETTERS, letter)).decode()
    ctl = ["ctl", "--url", gateway.url, "--token", gateway.admin_token()]
    listed = examgate(pg_dsn, gateway, own_redis.url, *ctl, "deadletters", "list")
    assert letter_id in listed and "UndefinedTableError" in listed and "hold" in listed
    replayed = examgate(pg_dsn, gateway, own_redis.url, *ctl, "deadletters", "replay", letter_id)
    assert "replayed 1 dead letter(s)" in replayed
    assert await store.xlen(qkeys.HOLDS_DEAD_LETTERS) == 0
    (entry,) = await store.xrange(qkeys.holds_stream(424242))
    assert entry[1][b"registration"] == b"1" and b"dl_error" not in entry[1]
    assert "(no dead letters)" in examgate(pg_dsn, gateway, own_redis.url, *ctl, "deadletters", "list")
