"""Reconcile against real Redis and PostgreSQL: a flushed or tampered Redis is rebuilt exactly."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import redis.asyncio as aioredis

from core.timeutil import utcnow
from queueing import keys
from queueing.holds import datetime_to_ms, hold_seat, make_permanent, release_seat
from queueing.reconcile import reconcile
from queueing.sweeper import sweep_exam
from queueing.writebehind import drain_once
from tests.queueing.test_holds import exam_with_sites, make_registrations

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
        await hold_seat(redis, exam_id, reg, sites[index % 2], ttl_s=TTL_S + index, admitted=True)
    for reg in regs[:5]:
        await hold_seat(redis, exam_id, reg, sites[1], ttl_s=TTL_S, admitted=True)
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
    moved = await hold_seat(redis, exam_id, regs[20], sites[1], ttl_s=TTL_S, admitted=True)
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
        await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S, admitted=True)
    before = await snapshot(redis, exam_id, sites)

    report = await reconcile(pg, redis, exam_id)  # PostgreSQL has not seen these holds yet

    assert report.events_drained == 3 and not report.drifted
    assert await snapshot(redis, exam_id, sites) == before


async def test_expired_holds_are_left_to_the_sweeper(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [5, 5])
    stale, fresh = await make_registrations(pg, exam_id, 2)
    past, future = utcnow() - timedelta(minutes=5), utcnow() + timedelta(minutes=5)
    await pg.execute("UPDATE registrations SET site_id = $2, hold_expires_at = $3 WHERE id = $1", stale, sites[0], past)
    await pg.execute("UPDATE registrations SET site_id = $2, hold_expires_at = $3 WHERE id = $1", fresh, sites[0], future)

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
