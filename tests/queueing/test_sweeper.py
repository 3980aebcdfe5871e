"""The sweeper and hold_expire.lua against real Redis: only expired, unchanged, unpaid holds go."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from core.redis import AutoPipeline
from queueing import keys
from queueing.holds import EXPIRE, event_keys, hold_seat, make_permanent
from queueing.sweeper import run_sweeper, sweep_exam, sweep_once
from queueing.writebehind import drain_once
from tests.queueing.test_holds import (
    exam_with_sites,
    left,
    make_registrations,
    stream_events,
)

NOW_MS = 1_750_000_000_000


async def test_releases_expired_holds_only(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [10, 10])
    expired, refreshed, live, paid = await make_registrations(pg, exam_id, 4)
    await hold_seat(redis, exam_id, expired, site_a, ttl_s=60, now_ms=NOW_MS)
    await hold_seat(redis, exam_id, refreshed, site_a, ttl_s=60, now_ms=NOW_MS)
    await hold_seat(redis, exam_id, refreshed, site_b, ttl_s=60, now_ms=NOW_MS + 50_000)  # moved later
    await hold_seat(redis, exam_id, live, site_b, ttl_s=3600, now_ms=NOW_MS)
    await hold_seat(redis, exam_id, paid, site_b, ttl_s=60, now_ms=NOW_MS)
    await make_permanent(redis, exam_id, paid, site_b, now_ms=NOW_MS)

    assert await sweep_exam(redis, exam_id, now_ms=NOW_MS + 59_999) == 0
    assert await sweep_exam(redis, exam_id, now_ms=NOW_MS + 60_000) == 1

    held = await redis.hgetall(keys.holds(exam_id))
    assert {int(reg) for reg in held} == {refreshed, live, paid}
    assert (await left(redis, exam_id, site_a), await left(redis, exam_id, site_b)) == (10, 7)
    event = (await stream_events(redis, exam_id))[-1]
    assert {k: event[k] for k in ("type", "registration", "site", "old_site", "expires_at_ms")} == {
        "type": "expire", "registration": str(expired), "site": "", "old_site": str(site_a),
        "expires_at_ms": str(NOW_MS + 60_000)}

    # much later: the moved hold expires too, the paid one never does
    assert await sweep_once(redis, [exam_id], now_ms=NOW_MS + 10**9) == 2
    assert await redis.hgetall(keys.holds(exam_id)) == {str(paid).encode(): str(site_b).encode()}
    assert await left(redis, exam_id, site_b) == 9

    # PostgreSQL follows the expire events
    await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c")
    rows = await pg.fetch("SELECT id, site_id FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL", exam_id)
    assert [(row["id"], row["site_id"]) for row in rows] == [(paid, site_b)]


async def test_expire_script_leaves_changed_holds(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [5, 5])
    await hold_seat(redis, exam_id, 1, site_a, ttl_s=60, now_ms=NOW_MS)
    expiry = NOW_MS + 60_000
    script_keys = [*event_keys(exam_id), keys.site_left(exam_id, site_a)]

    assert await EXPIRE.run(redis, script_keys, [1, site_a, expiry - 1, expiry]) == [0, b""]  # other expiry seen
    assert await EXPIRE.run(redis, [*event_keys(exam_id), keys.site_left(exam_id, site_b)],
                            [1, site_b, expiry, expiry]) == [0, b""]  # other site seen
    assert await EXPIRE.run(redis, script_keys, [1, site_a, expiry, expiry - 1]) == [0, b""]  # not expired yet
    assert await redis.hlen(keys.holds(exam_id)) == 1 and await left(redis, exam_id, site_a) == 4

    reply = await EXPIRE.run(redis, script_keys, [1, site_a, expiry, expiry])
    assert reply[0] == 1 and int(reply[1]) > 0
    assert await redis.hlen(keys.holds(exam_id)) == 0 and await left(redis, exam_id, site_a) == 5

    # an expiry entry without a hold is dropped, with no event and no seat returned
    await redis.zadd(keys.hold_expiry(exam_id), {"9": 5})
    assert await EXPIRE.run(redis, event_keys(exam_id), [9, "", 5, expiry]) == [2, b""]
    assert await redis.zcard(keys.hold_expiry(exam_id)) == 0
    assert await redis.xlen(keys.holds_stream(exam_id)) == 2


async def test_sweeping_while_holds_are_refreshed(pg: asyncpg.Connection, redis: aioredis.Redis,
                                                  redis_url: str) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [300, 5])
    regs = list(range(1, 301))
    for reg in regs:
        await hold_seat(redis, exam_id, reg, site_a, ttl_s=1, now_ms=NOW_MS)
    later = NOW_MS + 5000

    pipeline = await AutoPipeline.connect(redis_url, connections=2, timeout_ms=5000)  # as the gateway does
    try:
        refreshes = [hold_seat(pipeline, exam_id, reg, site_a, ttl_s=60, now_ms=later)
                     for reg in regs[::2]]
        released, *_ = await asyncio.gather(sweep_exam(redis, exam_id, now_ms=later, batch_size=50), *refreshes)
    finally:
        await pipeline.close()

    held = {int(reg) for reg in await redis.hkeys(keys.holds(exam_id))}
    # a refresh either came first (the sweeper then leaves it) or took the seat again after the release
    assert held == set(regs[::2])
    assert released >= 150
    assert await left(redis, exam_id, site_a) + len(held) == 300
    assert all(score > later for _, score in await redis.zrange(keys.hold_expiry(exam_id), 0, -1, withscores=True))


async def test_run_sweeper_stops(redis: aioredis.Redis) -> None:
    stop = asyncio.Event()

    async def exams() -> list[int]:
        stop.set()
        return [123456]

    await asyncio.wait_for(run_sweeper(redis, exams=exams, stop_event=stop, interval_s=10), 2)
