"""Reconcile against real Redis and PostgreSQL: a flushed or tampered Redis is rebuilt exactly."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta

import asyncpg
import redis.asyncio as aioredis

from core.timeutil import utcnow
from queueing import keys
from queueing.holds import (
    SiteFull,
    datetime_to_ms,
    hold_seat,
    make_permanent,
    release_seat,
)
from queueing.reconcile import ReconcileError, reconcile, reconcile_exam
from queueing.sweeper import sweep_exam
from queueing.writebehind import (
    GROUP,
    drain,
    drain_once,
    ensure_groups,
    run_consumer,
    unapplied_events,
)
from tests.queueing.test_holds import exam_with_sites, make_registrations
from tests.queueing.test_writebehind import pg_holds, redis_holds

TTL_S = 1800


async def snapshot(redis: aioredis.Redis, exam_id: int, sites: list[int]) -> dict[str, object]:
    """Every hold and seat count of an exam in Redis."""
    return {
        "holds": await redis.hgetall(keys.holds(exam_id)),
        "expiry": await redis.zrange(keys.hold_expiry(exam_id), 0, -1, withscores=True),
        "left": await redis.mget([keys.site_left(exam_id, site) for site in sites]),
    }


async def busy_exam(pg: asyncpg.Connection, redis: aioredis.Redis) -> tuple[int, list[int], list[int]]:
    """An exam whose holds went through takes, moves, releases and a payment, drained to PostgreSQL."""
    exam_id, sites = await exam_with_sites(pg, redis, [20, 20])
    regs = await make_registrations(pg, exam_id, 30)
    for index, reg in enumerate(regs):
        await hold_seat(redis, exam_id, reg, sites[index % 2], ttl_s=TTL_S + index)
    for reg in regs[:5]:
        await hold_seat(redis, exam_id, reg, sites[1], ttl_s=TTL_S)
    for reg in regs[5:9]:
        await release_seat(redis, exam_id, reg)
    await make_permanent(redis, exam_id, regs[10], sites[0])
    await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c", batch_size=1000)
    await pg.execute("UPDATE registrations SET status = 'paid' WHERE id = $1", regs[10])
    return exam_id, sites, regs


async def test_flushdb_is_restored_exactly(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites, regs = await busy_exam(pg, redis)
    before = await snapshot(redis, exam_id, sites)
    assert len(before["holds"]) == 26  # type: ignore[arg-type]

    await redis.flushdb()  # db 12, the tests' own
    report = await reconcile(pg, redis, exam_id)

    assert await snapshot(redis, exam_id, sites) == before
    (drift,) = report.exams
    assert drift.drifted and report.drifted
    assert (drift.holds_expected, drift.holds_added, drift.holds_removed, drift.holds_changed) == (26, 26, 0, 0)
    assert [(s.site_id, s.expected_left, s.found_left) for s in drift.sites] == [
        (sites[0], int(before["left"][0]), None), (sites[1], int(before["left"][1]), None)]  # type: ignore[index]
    assert report.as_dict()["exams"][0]["holds_added"] == 26

    # nothing changes now: a second run finds no drift
    again = await reconcile(pg, redis, exam_id)
    assert not again.drifted and again.as_dict()["exams"][0]["sites"] == []

    # holds carry on after the rebuild, and the write-behind follows them
    moved = await hold_seat(redis, exam_id, regs[20], sites[1], ttl_s=TTL_S)
    await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c")
    assert await pg.fetchval("SELECT site_id FROM registrations WHERE id = $1", regs[20]) == moved.site_id


async def test_tampered_redis_is_repaired(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites, regs = await busy_exam(pg, redis)
    before = await snapshot(redis, exam_id, sites)
    await redis.set(keys.site_left(exam_id, sites[0]), 99)
    await redis.hset(keys.holds(exam_id), mapping={"424242": sites[0], str(regs[11]): sites[0]})
    await redis.hdel(keys.holds(exam_id), str(regs[12]))
    await redis.zadd(keys.hold_expiry(exam_id), {"424242": 1, str(regs[10]): 5})  # the paid one made expiring

    report = await reconcile(pg, redis)  # every exam

    assert await snapshot(redis, exam_id, sites) == before
    drift = next(exam for exam in report.exams if exam.exam_id == exam_id)
    assert (drift.holds_added, drift.holds_removed, drift.holds_changed) == (1, 1, 2)
    assert [(s.site_id, s.found_left) for s in drift.sites if s.drifted] == [(sites[0], 99)]
    # events older than a repair never apply over it
    assert await redis.hmget(keys.hold_last_event(exam_id), [str(regs[11]), str(regs[12])]) == [None, None]


async def test_stream_is_drained_first(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [5, 5])
    regs = await make_registrations(pg, exam_id, 3)
    for reg in regs:
        await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S)
    before = await snapshot(redis, exam_id, sites)

    report = await reconcile(pg, redis, exam_id)  # PostgreSQL has not seen these holds yet

    assert report.events_drained == 3 and not report.drifted
    assert await snapshot(redis, exam_id, sites) == before


async def test_expired_holds_are_left_to_the_sweeper(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [5, 5])
    stale, fresh = await make_registrations(pg, exam_id, 2)
    past, future = utcnow() - timedelta(minutes=5), utcnow() + timedelta(minutes=5)
    place = "UPDATE registrations SET site_id = $2, hold_expires_at = $3 WHERE id = $1"
    await pg.execute(place, stale, sites[0], past)
    await pg.execute(place, fresh, sites[0], future)

    await redis.flushdb()
    report = await reconcile(pg, redis, exam_id)

    assert report.exams[0].holds_added == 2
    assert int(await redis.get(keys.site_left(exam_id, sites[0])) or 0) == 3
    assert await redis.zscore(keys.hold_expiry(exam_id), str(stale)) == datetime_to_ms(past)
    assert await sweep_exam(redis, exam_id) == 1
    await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c")
    rows = await pg.fetch("SELECT id FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL", exam_id)
    assert [row["id"] for row in rows] == [fresh]
    assert int(await redis.get(keys.site_left(exam_id, sites[0])) or 0) == 4


async def test_holds_in_flight_are_kept_as_redis_has_them(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [5, 5])
    regs = await make_registrations(pg, exam_id, 5)
    stream = keys.holds_stream(exam_id)
    for reg in regs[:3]:
        await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S)
    await drain_once(redis, pg, [stream], consumer_name="c")
    # Not in PostgreSQL yet: a move, a release, a new hold (read by a consumer that never
    # acknowledged it), and a new hold not even read.
    await hold_seat(redis, exam_id, regs[0], sites[1], ttl_s=TTL_S)
    await release_seat(redis, exam_id, regs[1])
    await hold_seat(redis, exam_id, regs[3], sites[1], ttl_s=TTL_S)
    await redis.xreadgroup(GROUP, "crashed", {stream: ">"}, count=3)
    await hold_seat(redis, exam_id, regs[4], sites[0], ttl_s=TTL_S)
    assert set(await unapplied_events(redis, stream)) == {regs[0], regs[1], regs[3], regs[4]}
    before = await snapshot(redis, exam_id, sites)
    await redis.set(keys.site_left(exam_id, sites[0]), 99)  # drift elsewhere is still repaired

    drift = await reconcile_exam(pg, redis, exam_id)

    assert await snapshot(redis, exam_id, sites) == before
    assert drift.holds_in_flight == 4 and drift.holds_expected == 4
    assert (drift.holds_added, drift.holds_removed, drift.holds_changed) == (0, 0, 0)
    assert [(s.site_id, s.found_left, s.expected_left) for s in drift.sites if s.drifted] == [(sites[0], 99, 3)]
    # the events are still the latest: the write-behind applies them afterwards
    await drain_once(redis, pg, [stream], consumer_name="c", min_idle_ms=0)
    assert await pg_holds(pg, exam_id) == await redis_holds(redis, exam_id)
    assert await unapplied_events(redis, stream) == {}


async def test_unapplied_events_without_a_group_or_a_stream(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [5])
    (reg,) = await make_registrations(pg, exam_id, 1)
    stream = keys.holds_stream(exam_id)
    assert await unapplied_events(redis, stream) == {}
    first = await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S)
    second = await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S)
    assert await unapplied_events(redis, stream) == {reg: {first.event, second.event}}  # no group yet
    await ensure_groups(redis, [stream])
    assert await unapplied_events(redis, stream, page_size=1) == {reg: {first.event, second.event}}
    await drain_once(redis, pg, [stream], consumer_name="c")
    assert await unapplied_events(redis, stream) == {}


async def test_holds_taken_while_reconcile_runs_are_never_undone(pg_dsn: str, pg: asyncpg.Connection,
                                                                   redis: aioredis.Redis) -> None:
    capacity = 30
    exam_id, sites = await exam_with_sites(pg, redis, [capacity, capacity])
    regs = await make_registrations(pg, exam_id, 80)
    stream = keys.holds_stream(exam_id)
    pool = await asyncpg.create_pool(pg_dsn, min_size=2, max_size=6)
    rng = random.Random(11)
    acknowledged: dict[int, int] = {}  # registration → the site of its last hold answered with success
    reconciled = contended = 0

    async def take(reg: int, site: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await hold_seat(redis, exam_id, reg, site, ttl_s=TTL_S)
        except SiteFull:
            return
        acknowledged[reg] = site

    async def reconcile_repeatedly(until: asyncio.Task[list[None]], drain_first: bool) -> None:
        nonlocal reconciled, contended
        while not until.done():
            try:
                if drain_first:
                    await reconcile(pool, redis, exam_id, min_idle_ms=60_000)
                else:
                    await reconcile_exam(pool, redis, exam_id)
                reconciled += 1
            except ReconcileError:
                contended += 1

    consumer = asyncio.create_task(run_consumer(redis, pool, consumer_name="w", streams=[stream], block_ms=5,
                                                batch_size=7))
    try:
        for round_no in range(6):
            burst = asyncio.gather(*(take(reg, rng.choice(sites), rng.uniform(0, 0.15))
                                     for reg in rng.sample(regs, 50)))
            burst_task = asyncio.ensure_future(burst)
            await asyncio.gather(burst_task, reconcile_repeatedly(burst_task, drain_first=round_no % 2 == 0),
                                 reconcile_repeatedly(burst_task, drain_first=False))
            held = await redis_holds(redis, exam_id)
            assert {reg: site for reg, (site, _) in held.items()} == acknowledged, f"round {round_no}"
            counts = Counter(site for site, _ in held.values())
            for site in sites:
                left = int(await redis.get(keys.site_left(exam_id, site)) or -1)
                assert counts[site] + left == capacity, f"round {round_no}, site {site}"
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert reconciled > 0, f"every reconcile was contended ({contended})"
    await drain(redis, pool, [stream], consumer_name="final", min_idle_ms=0)
    await pool.close()
    assert {reg: site for reg, (site, _) in (await pg_holds(pg, exam_id)).items()} == acknowledged
    final = await reconcile(pg, redis, exam_id)
    assert not final.drifted, final.as_dict()
