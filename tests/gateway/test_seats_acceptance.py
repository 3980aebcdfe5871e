"""Seat holds under real concurrency: a 2,000-to-100 race, moves under contention, a worker killed
mid-batch, expiry. Gateway with 2 processes; workers started per test as needed."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from core.timeutil import utcnow
from loadtest.processes import Process, start_gateway, start_worker
from queueing import keys as qkeys
from tests.conftest import TEST_REDIS_URL
from tests.gateway.seat_stack import (
    FAST_WORKER,
    bearer,
    exam_ready,
    make_candidates,
    make_registrations,
    make_sessions,
    pg_holds,
    redis_holds,
    seats_left,
    set_live,
    wait_drained,
    wait_inventory,
)


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
def worker(pg_dsn: str, gateway: Process) -> Iterator[Process]:
    process = start_worker(pg_dsn, TEST_REDIS_URL, **FAST_WORKER)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        yield session


async def put_seat(http: aiohttp.ClientSession, gateway: Process, registration_id: int, token: str,
                   site_id: int) -> tuple[int, str]:
    async with http.put(f"{gateway.url}/api/v1/registrations/{registration_id}/seat", json={"site_id": site_id},
                        headers=bearer(token)) as resp:
        body = await resp.json()
        return resp.status, body["error"]["code"] if resp.status != 200 else str(body["site_id"])


async def candidates_with_registrations(pg: asyncpg.Connection, redis_url: str, exam_id: int,
                                        count: int) -> tuple[list[int], list[str]]:
    candidate_ids = await make_candidates(pg, count)
    registrations = await make_registrations(pg, exam_id, candidate_ids)
    return registrations, await make_sessions(redis_url, candidate_ids)


async def test_two_thousand_race_for_a_hundred_seats(gateway: Process, worker: Process, pg: asyncpg.Connection,
                                                     redis_url: str, store: aioredis.Redis,
                                                     http: aiohttp.ClientSession) -> None:
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 100)])
    await wait_inventory(store, exam_id, [site_id])
    registrations, tokens = await candidates_with_registrations(pg, redis_url, exam_id, 2000)

    results = await asyncio.gather(*(put_seat(http, gateway, r, t, site_id)
                                     for r, t in zip(registrations, tokens, strict=True)))
    assert Counter(status for status, _ in results) == {200: 100, 409: 1900}
    assert {code for status, code in results if status == 409} == {"site_full"}
    winners = {r for r, (status, _) in zip(registrations, results, strict=True) if status == 200}
    assert await redis_holds(store, exam_id) == dict.fromkeys(winners, site_id)
    assert await seats_left(store, exam_id, site_id) == 0

    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == dict.fromkeys(winners, site_id)


async def test_moves_under_contention_keep_every_seat(gateway: Process, worker: Process, pg: asyncpg.Connection,
                                                      redis_url: str, store: aioredis.Redis,
                                                      http: aiohttp.ClientSession) -> None:
    capacity = 40
    exam_id, sites = await exam_ready(pg, gateway, [("11", capacity), ("11", capacity)])
    await wait_inventory(store, exam_id, sites)
    registrations, tokens = await candidates_with_registrations(pg, redis_url, exam_id, 120)
    rng = random.Random(7)
    for _ in range(4):  # rounds of everyone asking for a random site at once
        results = await asyncio.gather(*(put_seat(http, gateway, r, t, rng.choice(sites))
                                         for r, t in zip(registrations, tokens, strict=True)))
        assert {status for status, _ in results} <= {200, 409}, Counter(results)
        holds = await redis_holds(store, exam_id)
        for site_id in sites:
            held = sum(1 for s in holds.values() if s == site_id)
            assert held + await seats_left(store, exam_id, site_id) == capacity
    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == await redis_holds(store, exam_id)
    assert len(await redis_holds(store, exam_id)) == 2 * capacity  # 120 wanted 80 seats: all taken


async def test_worker_killed_mid_batch_loses_and_duplicates_nothing(
        gateway: Process, pg_dsn: str, pg: asyncpg.Connection, redis_url: str, store: aioredis.Redis,
        http: aiohttp.ClientSession) -> None:
    exam_id, sites = await exam_ready(pg, gateway, [("11", 1000), ("11", 1000)])
    async with http.get(f"{gateway.url}/api/v1/exams/{exam_id}/sites"):  # the gateway loads the seat counts
        pass
    await wait_inventory(store, exam_id, sites, worker=False)
    registrations, tokens = await candidates_with_registrations(pg, redis_url, exam_id, 800)
    # No worker runs: the events wait in the stream. Each registration holds, then half of them move.
    await asyncio.gather(*(put_seat(http, gateway, r, t, sites[0]) for r, t in zip(registrations, tokens, strict=True)))
    await asyncio.gather(*(put_seat(http, gateway, r, t, sites[1])
                           for r, t in list(zip(registrations, tokens, strict=True))[::2]))
    expected = await redis_holds(store, exam_id)
    assert len(expected) == 800

    slow = {**FAST_WORKER, "EXAMGATE_WRITEBEHIND_BATCH_SIZE": "10"}
    first = start_worker(pg_dsn, TEST_REDIS_URL, **slow)
    try:
        deadline = time.monotonic() + 20
        while not 0 < len(await pg_holds(pg, exam_id)) < 700:
            assert time.monotonic() < deadline, "the worker did not start draining"
            await asyncio.sleep(0.002)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    assert len(await pg_holds(pg, exam_id)) < 800
    second = start_worker(pg_dsn, TEST_REDIS_URL, **slow)
    try:
        await wait_drained(store, exam_id, timeout_s=30)  # includes what the killed one read but never acked
    finally:
        assert second.stop() == 0, second.log()
    assert await pg_holds(pg, exam_id) == expected
    rows = await pg.fetch("SELECT site_id, count(*) AS n FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL "
                          "GROUP BY site_id", exam_id)
    assert {row["site_id"]: row["n"] for row in rows} == {sites[0]: 400, sites[1]: 400}
    for site_id in sites:
        assert await seats_left(store, exam_id, site_id) == 600


async def test_expired_holds_are_released(gateway: Process, worker: Process, pg: asyncpg.Connection,
                                          redis_url: str, store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 3)])
    await wait_inventory(store, exam_id, [site_id])
    await set_live(gateway, {"seats": {"hold_ttl_s": 60}})  # the shortest the live config allows
    registrations, tokens = await candidates_with_registrations(pg, redis_url, exam_id, 3)
    before = utcnow()
    async with http.put(f"{gateway.url}/api/v1/registrations/{registrations[0]}/seat", json={"site_id": site_id},
                        headers=bearer(tokens[0])) as resp:
        assert resp.status == 200
        expires = datetime.fromisoformat((await resp.json())["hold_expires_at"])
    assert before + timedelta(seconds=59) <= expires <= utcnow() + timedelta(seconds=61)
    for registration_id, token in zip(registrations[1:], tokens[1:], strict=True):
        assert (await put_seat(http, gateway, registration_id, token, site_id))[0] == 200
    await wait_drained(store, exam_id)
    assert len(await pg_holds(pg, exam_id)) == 3

    # A minute passes for the first two holds (their expiry moved into the past).
    past_ms = int(time.time() * 1000) - 1
    await store.zadd(qkeys.hold_expiry(exam_id), {str(r): past_ms for r in registrations[:2]})
    deadline = time.monotonic() + 10
    while len(await redis_holds(store, exam_id)) != 1:
        assert time.monotonic() < deadline, "the sweeper did not release the expired holds"
        await asyncio.sleep(0.05)
    assert await seats_left(store, exam_id, site_id) == 2
    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == {registrations[2]: site_id}
    # An approved registration whose hold lapsed before payment takes a seat again.
    assert (await put_seat(http, gateway, registrations[0], tokens[0], site_id))[0] == 200
    assert await seats_left(store, exam_id, site_id) == 1
