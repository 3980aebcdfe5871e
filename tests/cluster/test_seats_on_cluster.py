"""Seat holds on a Redis Cluster (three masters, a replica each): the race, and a master killed mid-race.

The gateway (2 processes) and the worker run with ``EXAMGATE_REDIS_CLUSTER=true`` against the module's
own cluster, and answer a hold only once a replica has it (``EXAMGATE_HOLD_REPLICAS=1``): a hold the
candidate was told about must survive the failover of its exam's master.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.cluster_servers import RedisClusterServers
from loadtest.processes import Process, start_gateway, start_worker
from queueing import keys as qkeys
from tests.cluster.conftest import CLUSTER_ENV
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
    wait_drained,
    wait_inventory,
)


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, redis_cluster: RedisClusterServers) -> Iterator[Process]:
    process = start_gateway(pg_dsn, redis_cluster.url, workers=2, **CLUSTER_ENV)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
def worker(pg_dsn: str, gateway: Process, redis_cluster: RedisClusterServers) -> Iterator[Process]:
    process = start_worker(pg_dsn, redis_cluster.url, **FAST_WORKER, **CLUSTER_ENV)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()



async def put_seat(http: aiohttp.ClientSession, gateway: Process, registration_id: int, token: str,
                   site_id: int) -> tuple[int, str]:
    async with http.put(f"{gateway.url}/api/v1/registrations/{registration_id}/seat", json={"site_id": site_id},
                        headers=bearer(token)) as resp:
        body = await resp.json()
        if resp.status == 200:
            return 200, str(body["site_id"])
        return resp.status, body["error"]["code"] + ":" + str(body["error"].get("details", {}).get("reason", ""))


async def candidates(pg: asyncpg.Connection, url: str, exam_id: int, count: int) -> tuple[list[int], list[str]]:
    candidate_ids = await make_candidates(pg, count)
    registrations = await make_registrations(pg, exam_id, candidate_ids)
    return registrations, await make_sessions(url, candidate_ids, cluster=True)


async def test_a_thousand_race_for_a_hundred_seats_on_a_cluster(
        gateway: Process, worker: Process, pg: asyncpg.Connection, redis_cluster: RedisClusterServers,
        store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 100)])
    await wait_inventory(store, exam_id, [site_id])
    registrations, tokens = await candidates(pg, redis_cluster.url, exam_id, 1000)

    results = await asyncio.gather(*(put_seat(http, gateway, r, t, site_id)
                                     for r, t in zip(registrations, tokens, strict=True)))
    assert Counter(status for status, _ in results) == {200: 100, 409: 900}
    winners = {r for r, (status, _) in zip(registrations, results, strict=True) if status == 200}
    assert await redis_holds(store, exam_id) == dict.fromkeys(winners, site_id)
    assert await seats_left(store, exam_id, site_id) == 0
    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == dict.fromkeys(winners, site_id)


async def test_a_master_killed_mid_race_oversells_nothing_and_keeps_every_answered_hold(
        gateway: Process, worker: Process, pg: asyncpg.Connection, redis_cluster: RedisClusterServers,
        store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    capacity = 300
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", capacity)])
    await wait_inventory(store, exam_id, [site_id])
    registrations, tokens = await candidates(pg, redis_cluster.url, exam_id, 1200)
    master = redis_cluster.master_for_key(qkeys.site_left(exam_id, site_id))
    answered: dict[int, str] = {}
    statuses: Counter[tuple[int, str]] = Counter()
    killed = asyncio.Event()

    async def candidate(registration_id: int, token: str) -> None:
        # A candidate asks until told yes or no: a 503 (the master gone, a hold not yet confirmed) is asked again.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, detail = await put_seat(http, gateway, registration_id, token, site_id)
            statuses[(status, detail if status != 200 else "")] += 1
            if status == 200:
                answered[registration_id] = detail
                if len(answered) == capacity // 3 and not killed.is_set():
                    killed.set()
                    redis_cluster.kill(master)
                    recovering.append(asyncio.create_task(recover()))
                return
            if status == 409:
                return
            assert status == 503, (status, detail)
            await asyncio.sleep(0.2)

    async def recover() -> None:
        # The replica takes over; until the old master is back as its replica, no hold there is confirmed.
        await asyncio.to_thread(redis_cluster.wait_for_failover, master)
        await asyncio.sleep(1)
        await asyncio.to_thread(redis_cluster.restart, master)

    recovering: list[asyncio.Task[None]] = []
    await asyncio.gather(*(candidate(r, t) for r, t in zip(registrations, tokens, strict=True)))
    assert killed.is_set(), "the race ended before the master was killed"
    await asyncio.gather(*recovering)

    held = await redis_holds(store, exam_id)
    left = await seats_left(store, exam_id, site_id)
    assert len(held) + left == capacity, (len(held), left)
    assert len(held) <= capacity
    lost = {r for r in answered if held.get(r) != site_id}
    assert not lost, f"{len(lost)} answered holds lost in the failover; answers: {statuses}"
    # Once the shard had a replica again, every seat was sold and confirmed; everyone else was told no.
    assert len(answered) == capacity, statuses
    assert statuses[(409, "site_full:")] == len(registrations) - capacity, statuses
    await wait_drained(store, exam_id, timeout_s=60)
    in_pg = await pg_holds(pg, exam_id)
    assert len(in_pg) <= capacity
    assert in_pg == held
    print(f"answers during the failover race: {dict(statuses)}")
