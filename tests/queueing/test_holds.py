"""Seat holds against real Redis: hold_take.lua and hold_release.lua, and concurrency that never oversells."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.catalogue import load_catalogue
from core.redis import AutoPipeline
from core.scripts import preload
from queueing import keys
from queueing.holds import (
    RELEASE,
    TAKE,
    Hold,
    InventoryMissing,
    Release,
    SeatLocked,
    SiteFull,
    active_exam_ids,
    current_hold,
    has_live_hold,
    hold_scripts,
    hold_seat,
    hold_streams,
    make_permanent,
    release_seat,
)
from queueing.inventory import ensure_inventory
from tests.factories import make_exam, phone_block

NOW_MS = 1_750_000_000_000
TTL_S = 1800


async def make_registrations(conn: asyncpg.Connection, exam_id: int, count: int) -> list[int]:
    """``count`` draft registrations of new candidates in one statement; their ids in order."""
    tag = secrets.token_hex(4)
    phone_base = await phone_block(conn, count)
    rows = await conn.fetch(
        """WITH c AS (
               INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               SELECT 'u' || $1 || '-' || g, 'x', '考生' || g, 'passport', 'P' || $1 || g,
                      '19' || lpad(($2 + g)::text, 9, '0'), 'c' || $1 || g || '@example.com', 'q', 'x'
                 FROM generate_series(1, $3::int) AS g
               RETURNING id)
           INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                      subjects, work_years)
           SELECT id, $4, '11', '测试市', 'mid', 'fin', '{101}', 5 FROM c ORDER BY id
           RETURNING id""",
        tag, phone_base, count, exam_id,
    )
    return sorted(row["id"] for row in rows)


async def exam_with_sites(
    conn: asyncpg.Connection, redis: aioredis.Redis, capacities: list[int]
) -> tuple[int, list[int]]:
    """An exam with sites of these capacities and its seat inventory loaded; (exam id, site ids)."""
    exam_id = await make_exam(conn, sites=[("11", capacity) for capacity in capacities])
    catalogue = await load_catalogue(conn)
    exam = catalogue.exam(exam_id)
    assert exam is not None
    await ensure_inventory(conn, redis, exam)
    return exam_id, sorted(exam.sites)


async def left(redis: aioredis.Redis, exam_id: int, site_id: int) -> int:
    """Seats left at a site, as Redis says."""
    value = await redis.get(keys.site_left(exam_id, site_id))
    assert value is not None
    return int(value)


async def stream_events(redis: aioredis.Redis, exam_id: int) -> list[dict[str, str]]:
    """The exam's hold events, oldest first, as text."""
    entries = await redis.xrange(keys.holds_stream(exam_id))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the flushed test database with the hold scripts loaded."""
    client = AutoPipeline(redis_url, connections=2, timeout_ms=5000)
    await preload(client, hold_scripts())
    try:
        yield client
    finally:
        await client.close()


def test_scripts_have_headers() -> None:
    for script in hold_scripts().values():
        header = "\n".join(line for line in script.source.splitlines() if line.startswith("--"))
        assert "KEYS[1]" in header and "ARGV[1]" in header and "Returns" in header, script.name


async def test_take_refresh_and_move(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [10, 5])

    hold = await hold_seat(redis, exam_id, 7, site_a, ttl_s=TTL_S, now_ms=NOW_MS)
    assert hold.site_id == site_a and hold.previous_site_id is None
    assert hold.expires_at_ms == NOW_MS + TTL_S * 1000
    assert hold.expires_at is not None and hold.expires_at.timestamp() * 1000 == hold.expires_at_ms
    assert await left(redis, exam_id, site_a) == 9
    assert await current_hold(redis, exam_id, 7) == (site_a, NOW_MS + TTL_S * 1000)

    refreshed = await hold_seat(redis, exam_id, 7, site_a, ttl_s=TTL_S, now_ms=NOW_MS + 5000)
    assert refreshed.previous_site_id == site_a and refreshed.expires_at_ms == NOW_MS + 5000 + TTL_S * 1000
    assert await left(redis, exam_id, site_a) == 9
    assert refreshed.event == hold.event + 1

    moved = await hold_seat(redis, exam_id, 7, site_b, ttl_s=60, now_ms=NOW_MS + 6000)  # no hint
    assert moved.previous_site_id == site_a and moved.site_id == site_b
    assert (await left(redis, exam_id, site_a), await left(redis, exam_id, site_b)) == (10, 4)
    assert await redis.hgetall(keys.holds(exam_id)) == {b"7": str(site_b).encode()}
    assert await redis.zrange(keys.hold_expiry(exam_id), 0, -1, withscores=True) == [(b"7", NOW_MS + 66_000)]
    assert await redis.hget(keys.hold_last_event(exam_id), "7") == str(moved.event).encode()

    events = await stream_events(redis, exam_id)
    assert events == [
        {"type": "hold", "registration": "7", "site": str(site_a), "old_site": "",
         "expires_at_ms": str(NOW_MS + TTL_S * 1000), "event": str(hold.event)},
        {"type": "hold", "registration": "7", "site": str(site_a), "old_site": str(site_a),
         "expires_at_ms": str(NOW_MS + 5000 + TTL_S * 1000), "event": str(refreshed.event)},
        {"type": "move", "registration": "7", "site": str(site_b), "old_site": str(site_a),
         "expires_at_ms": str(NOW_MS + 66_000), "event": str(moved.event)},
    ]
    # event numbers start at the first event's time × 1000: larger than any before a flush
    assert hold.event == NOW_MS * 1000 + 1


async def test_wrong_hint_is_corrected(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [3, 3])
    await hold_seat(redis, exam_id, 1, site_a, ttl_s=TTL_S)

    reply = await TAKE.run(redis, [*_base(exam_id), keys.site_left(exam_id, site_b), keys.site_left(exam_id, site_b)],
                           [1, site_b, site_b, NOW_MS, 1000, "0"])
    assert reply == [-2, str(site_a).encode()]  # the script checks the belief, writes nothing
    assert await left(redis, exam_id, site_b) == 3

    moved = await hold_seat(redis, exam_id, 1, site_b, ttl_s=TTL_S, current_site=site_b)
    assert moved.previous_site_id == site_a
    assert (await left(redis, exam_id, site_a), await left(redis, exam_id, site_b)) == (3, 2)


def _base(exam_id: int) -> list[str]:
    return [keys.holds(exam_id), keys.hold_expiry(exam_id), keys.hold_last_event(exam_id),
            keys.hold_event_counter(exam_id), keys.holds_stream(exam_id), keys.seat_rights(exam_id)]


async def test_full_and_missing_write_nothing(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [1, 0])
    await hold_seat(redis, exam_id, 1, site_a, ttl_s=TTL_S)
    before = await redis.xlen(keys.holds_stream(exam_id))

    with pytest.raises(SiteFull) as full:
        await hold_seat(redis, exam_id, 2, site_a, ttl_s=TTL_S)
    assert full.value.site_id == site_a
    with pytest.raises(SiteFull):
        await hold_seat(redis, exam_id, 1, site_b, ttl_s=TTL_S)  # a move to a full site
    with pytest.raises(InventoryMissing):
        await hold_seat(redis, exam_id, 2, 999_999, ttl_s=TTL_S)

    assert (await current_hold(redis, exam_id, 1))[0] == site_a
    assert await current_hold(redis, exam_id, 2) == (None, None)
    assert await left(redis, exam_id, site_a) == 0
    assert await redis.xlen(keys.holds_stream(exam_id)) == before


async def test_release(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [2, 2])
    await hold_seat(redis, exam_id, 5, site_a, ttl_s=TTL_S)

    released = await release_seat(redis, exam_id, 5)
    assert released.site_id == site_a and released.event > 0
    assert await left(redis, exam_id, site_a) == 2
    assert await redis.hlen(keys.holds(exam_id)) == 0 and await redis.zcard(keys.hold_expiry(exam_id)) == 0
    assert (await stream_events(redis, exam_id))[-1] == {
        "type": "release", "registration": "5", "site": "", "old_site": str(site_a), "expires_at_ms": "",
        "event": str(released.event)}

    assert await release_seat(redis, exam_id, 5) == Release(5, None, 0)  # nothing to release: no event
    assert await redis.xlen(keys.holds_stream(exam_id)) == 2
    assert await RELEASE.run(redis, _base(exam_id), [5, "", NOW_MS, 0, ""]) == [0, b""]


async def test_permanent_holds(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [2, 2])
    await hold_seat(redis, exam_id, 5, site_a, ttl_s=TTL_S)

    kept = await make_permanent(redis, exam_id, 5, site_a)
    assert kept.site_id == site_a and kept.expires_at_ms is None and kept.expires_at is None
    assert await current_hold(redis, exam_id, 5) == (site_a, None)
    assert (await stream_events(redis, exam_id))[-1]["expires_at_ms"] == ""
    assert await make_permanent(redis, exam_id, 5, site_a) == Hold(5, site_a, None, site_a, kept.event + 1)

    # asking for the paid seat again changes nothing; another site or a release is refused
    assert (await hold_seat(redis, exam_id, 5, site_a, ttl_s=TTL_S)).expires_at_ms is None
    with pytest.raises(SeatLocked):
        await hold_seat(redis, exam_id, 5, site_b, ttl_s=TTL_S)
    with pytest.raises(SeatLocked):
        await release_seat(redis, exam_id, 5)
    assert await left(redis, exam_id, site_a) == 1
    assert (await release_seat(redis, exam_id, 5, force=True)).site_id == site_a
    assert await left(redis, exam_id, site_a) == 2

    # paid after the hold was gone: the seat is taken again if one is left
    again = await make_permanent(redis, exam_id, 6, site_b)
    assert again.previous_site_id is None and await left(redis, exam_id, site_b) == 1


async def test_2000_concurrent_holds_for_100_seats(pg: asyncpg.Connection, redis: aioredis.Redis,
                                                   pipeline: AutoPipeline) -> None:
    exam_id, (site, _) = await exam_with_sites(pg, redis, [100, 10])

    results = await asyncio.gather(
        *(hold_seat(pipeline, exam_id, reg, site, ttl_s=TTL_S) for reg in range(1, 2001)),
        return_exceptions=True,
    )

    holds = [r for r in results if isinstance(r, Hold)]
    full = [r for r in results if isinstance(r, SiteFull)]
    assert len(holds) == 100 and len(full) == 1900, {type(r) for r in results}
    assert await left(redis, exam_id, site) == 0
    assert await redis.hlen(keys.holds(exam_id)) == 100
    assert await redis.zcard(keys.hold_expiry(exam_id)) == 100
    assert await redis.xlen(keys.holds_stream(exam_id)) == 100
    assert sorted(int(r) for r in await redis.hkeys(keys.holds(exam_id))) == sorted(h.registration_id for h in holds)


async def test_moves_under_contention_keep_the_total(pg: asyncpg.Connection, redis: aioredis.Redis,
                                                     pipeline: AutoPipeline) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [60, 40])
    capacity = {sites[0]: 60, sites[1]: 40}
    regs = list(range(1, 91))  # 90 candidates for 100 seats: moves contend for the last ones
    first = await asyncio.gather(*(hold_seat(pipeline, exam_id, reg, sites[reg % 2], ttl_s=TTL_S)
                                   for reg in regs), return_exceptions=True)
    assert all(isinstance(r, (Hold, SiteFull)) for r in first)

    async def shuffle(reg: int, round_no: int) -> object:
        held, _ = await current_hold(pipeline, exam_id, reg)
        target = sites[(reg + round_no) % 2]
        if round_no % 3 == 2 and reg % 5 == 0:
            return await release_seat(pipeline, exam_id, reg, current_site=held)
        # a stale hint half the time: the script corrects it
        hint = held if reg % 2 else None
        return await hold_seat(pipeline, exam_id, reg, target, ttl_s=TTL_S, current_site=hint)

    for round_no in range(6):
        results = await asyncio.gather(*(shuffle(reg, round_no) for reg in regs), return_exceptions=True)
        assert all(isinstance(r, (Hold, Release, SiteFull)) for r in results), results
        held = await redis.hgetall(keys.holds(exam_id))
        for site in sites:
            at_site = sum(1 for value in held.values() if int(value) == site)
            assert at_site + await left(redis, exam_id, site) == capacity[site]
        assert await redis.zcard(keys.hold_expiry(exam_id)) == len(held)


async def test_active_exams_and_their_streams(pg: asyncpg.Connection) -> None:
    exam_id = await make_exam(pg)
    catalogue = await load_catalogue(pg)
    exam = catalogue.exam(exam_id)
    assert exam is not None

    assert exam_id in active_exam_ids(catalogue)
    assert exam_id not in active_exam_ids(catalogue, now=exam.registration_closes_at + timedelta(days=2))
    assert exam_id in active_exam_ids(catalogue, now=exam.registration_closes_at + timedelta(hours=23))
    assert hold_streams([exam_id]) == [f"eg:{{exam:{exam_id}}}:holds:stream"]
    assert keys.exam_of_holds_stream(hold_streams([exam_id])[0].encode()) == exam_id
    with pytest.raises(ValueError):
        keys.exam_of_holds_stream(keys.holds(exam_id))


async def test_live_hold(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [2, 2])
    assert not await has_live_hold(redis, exam_id, 1)
    await hold_seat(redis, exam_id, 1, site_a, ttl_s=60, now_ms=NOW_MS)
    assert await has_live_hold(redis, exam_id, 1, now_ms=NOW_MS + 59_999)
    assert not await has_live_hold(redis, exam_id, 1, now_ms=NOW_MS + 60_000)
    await make_permanent(redis, exam_id, 1, site_a)
    assert await has_live_hold(redis, exam_id, 1, now_ms=NOW_MS + 10**12)
