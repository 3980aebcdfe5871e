"""The write-behind against real Redis and PostgreSQL: batches, takeovers, replays, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.redis import AutoPipeline
from core.scripts import preload
from queueing import keys
from queueing.holds import (
    Hold,
    SiteFull,
    hold_scripts,
    hold_seat,
    make_permanent,
    ms_to_datetime,
    release_seat,
)
from queueing.writebehind import (
    GROUP,
    apply_events,
    drain_once,
    ensure_groups,
    list_dead_letters,
    parse_event,
    replay_dead_letters,
    run_consumer,
    trim_acknowledged,
)
from tests.queueing.test_holds import exam_with_sites, make_registrations

TTL_S = 1800


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the flushed test database with the hold scripts loaded."""
    client = AutoPipeline(redis_url, connections=2, timeout_ms=5000)
    await preload(client, hold_scripts())
    try:
        yield client
    finally:
        await client.close()


async def pg_holds(conn: asyncpg.Connection, exam_id: int) -> dict[int, tuple[int, int | None]]:
    """registration → (site, expiry ms) of every registration with a site, per PostgreSQL."""
    rows = await conn.fetch(
        "SELECT id, site_id, hold_expires_at FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL", exam_id)
    return {row["id"]: (row["site_id"], None if row["hold_expires_at"] is None
                        else round(row["hold_expires_at"].timestamp() * 1000)) for row in rows}


async def redis_holds(redis: aioredis.Redis, exam_id: int) -> dict[int, tuple[int, int | None]]:
    """registration → (site, expiry ms) of every hold, per Redis."""
    sites = await redis.hgetall(keys.holds(exam_id))
    expiry = dict(await redis.zrange(keys.hold_expiry(exam_id), 0, -1, withscores=True))
    return {int(reg): (int(site), None if reg not in expiry else int(expiry[reg])) for reg, site in sites.items()}


async def test_drain_writes_exactly_the_holds(pg: asyncpg.Connection, redis: aioredis.Redis,
                                              pipeline: AutoPipeline) -> None:
    exam_id, (site, _) = await exam_with_sites(pg, redis, [100, 10])
    regs = await make_registrations(pg, exam_id, 2000)

    results = await asyncio.gather(*(hold_seat(pipeline, exam_id, reg, site, ttl_s=TTL_S)
                                     for reg in regs), return_exceptions=True)
    assert sum(isinstance(r, Hold) for r in results) == 100
    assert sum(isinstance(r, SiteFull) for r in results) == 1900

    result = await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c1", batch_size=5000)

    assert (result.read, result.applied, result.failed) == (100, 100, 0)
    expected = await redis_holds(redis, exam_id)
    assert len(expected) == 100
    assert await pg_holds(pg, exam_id) == expected
    assert (await redis.xpending(keys.holds_stream(exam_id), GROUP))["pending"] == 0
    assert (await drain_once(redis, pg, [keys.holds_stream(exam_id)], consumer_name="c1")).read == 0


async def test_only_the_latest_event_applies_in_any_order(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [5, 5])
    reg, other = await make_registrations(pg, exam_id, 2)
    await hold_seat(redis, exam_id, reg, site_a, ttl_s=TTL_S)
    await hold_seat(redis, exam_id, reg, site_b, ttl_s=TTL_S)
    await release_seat(redis, exam_id, reg)
    final = await hold_seat(redis, exam_id, reg, site_a, ttl_s=60)
    await hold_seat(redis, exam_id, other, site_b, ttl_s=TTL_S)
    await release_seat(redis, exam_id, other)
    stream = keys.holds_stream(exam_id)
    events = [parse_event(stream, entry_id.decode(), fields) for entry_id, fields in await redis.xrange(stream)]
    assert [e.type for e in events] == ["hold", "move", "release", "hold", "hold", "release"]

    # newest first, one at a time, as consumers racing each other might
    applied = [await apply_events(pg, redis, [event]) for event in reversed(events)]
    assert applied == [1, 0, 1, 0, 0, 0]
    want = {reg: (site_a, final.expires_at_ms)}
    assert await pg_holds(pg, exam_id) == want
    assert await pg.fetchval("SELECT hold_expires_at FROM registrations WHERE id = $1", reg) \
        == ms_to_datetime(final.expires_at_ms or 0)
    # everything again, in a batch, twice: nothing changes
    assert await apply_events(pg, redis, events + events) == 2
    assert await pg_holds(pg, exam_id) == want


async def test_crashed_consumer_loses_and_duplicates_nothing(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, site_b) = await exam_with_sites(pg, redis, [30, 30])
    regs = await make_registrations(pg, exam_id, 40)
    for reg in regs:
        await hold_seat(redis, exam_id, reg, site_a if reg % 2 else site_b, ttl_s=TTL_S)
    stream = keys.holds_stream(exam_id)
    await ensure_groups(redis, [stream])

    # consumer "a" reads everything, applies half of it, and dies before acknowledging anything
    reply = await redis.xreadgroup(GROUP, "a", {stream: ">"}, count=100)
    entries = reply[0][1]
    assert len(entries) == 40
    await apply_events(pg, redis, [parse_event(stream, i.decode(), f) for i, f in entries[:20]])
    # meanwhile the holds keep changing
    for reg in regs[:10]:
        await release_seat(redis, exam_id, reg)

    taken = await drain_once(redis, pg, [stream], consumer_name="b", min_idle_ms=0)
    assert (taken.claimed, taken.read, taken.failed) == (40, 10, 0)  # a's 40, then the 10 releases
    assert (taken.applied, taken.superseded) == (40, 10)  # latest per registration; 10 holds were released since
    assert await pg_holds(pg, exam_id) == await redis_holds(redis, exam_id)
    assert len(await pg_holds(pg, exam_id)) == 30
    pending = await redis.xpending(stream, GROUP)
    assert pending["pending"] == 0

    # "a" comes back and applies its stale entries again: no effect
    await apply_events(pg, redis, [parse_event(stream, i.decode(), f) for i, f in entries])
    assert await pg_holds(pg, exam_id) == await redis_holds(redis, exam_id)


async def test_poison_entries_end_in_dead_letters_and_replay(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [5, 5])
    good, bad = await make_registrations(pg, exam_id, 2)
    # a site Redis knows and PostgreSQL does not (yet): its events violate the foreign key
    ghost = await pg.fetchval("SELECT max(id) FROM exam_sites") + 1000
    await redis.set(keys.site_left(exam_id, ghost), 3)
    await hold_seat(redis, exam_id, good, site_a, ttl_s=TTL_S)
    await hold_seat(redis, exam_id, bad, ghost, ttl_s=TTL_S)
    stream = keys.holds_stream(exam_id)
    await redis.xadd(stream, {"type": "hold", "registration": "not-a-number"})

    rounds = [await drain_once(redis, pg, [stream], consumer_name="c", min_idle_ms=0, max_deliveries=2)
              for _ in range(4)]
    # delivered, claimed again, then a third delivery would pass max_deliveries: dead letters
    assert [(r.applied, r.failed, r.dead) for r in rounds] == [(1, 2, 0), (0, 2, 0), (0, 0, 2), (0, 0, 0)]
    assert await pg_holds(pg, exam_id) == {good: (site_a, (await redis_holds(redis, exam_id))[good][1])}
    assert (await redis.xpending(stream, GROUP))["pending"] == 0

    letters = await list_dead_letters(redis)
    assert len(letters) == 2
    fk, malformed = sorted(letters, key=lambda letter: letter.fields.get("registration") != str(bad))
    assert fk.stream == stream and fk.deliveries == 3 and "ForeignKeyViolation" in fk.error
    assert fk.fields["site"] == str(ghost) and fk.fields["type"] == "hold"
    assert "malformed" in malformed.error
    assert await redis.hlen(keys.HOLDS_FAILURES) == 0

    # the site arrives in PostgreSQL: replaying the dead letter applies it
    await pg.execute(
        """INSERT INTO exam_sites (id, exam_id, province, city, name, address, capacity, rooms)
           VALUES ($1, $2, '11', '测试市', '新考点', '测试路 2 号', 3, 1)""", ghost, exam_id)
    assert await replay_dead_letters(redis, [fk.id]) == 1
    assert [letter.id for letter in await list_dead_letters(redis)] == [malformed.id]
    replayed = await drain_once(redis, pg, [stream], consumer_name="c")
    assert (replayed.read, replayed.applied) == (1, 1)
    assert await pg_holds(pg, exam_id) == await redis_holds(redis, exam_id)

    # replaying everything: the malformed one fails again, the other is gone
    assert await replay_dead_letters(redis) == 1
    assert (await drain_once(redis, pg, [stream], consumer_name="c")).failed == 1


async def test_paid_seat_is_never_cleared(pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [5, 5])
    (reg,) = await make_registrations(pg, exam_id, 1)
    await hold_seat(redis, exam_id, reg, site_a, ttl_s=TTL_S)
    await make_permanent(redis, exam_id, reg, site_a)
    stream = keys.holds_stream(exam_id)
    await drain_once(redis, pg, [stream], consumer_name="c")
    assert await pg_holds(pg, exam_id) == {reg: (site_a, None)}
    await pg.execute("UPDATE registrations SET status = 'paid' WHERE id = $1", reg)

    await release_seat(redis, exam_id, reg, force=True)
    await drain_once(redis, pg, [stream], consumer_name="c")
    assert await pg_holds(pg, exam_id) == {reg: (site_a, None)}


async def test_run_consumer_and_trim(pg_dsn: str, pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    exam_id, (site_a, _) = await exam_with_sites(pg, redis, [50, 5])
    regs = await make_registrations(pg, exam_id, 20)
    stream = keys.holds_stream(exam_id)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    stop = asyncio.Event()

    async def streams() -> list[str]:
        return [stream]

    task = asyncio.create_task(run_consumer(redis, pool, consumer_name="w1", stop_event=stop, streams=streams,
                                            block_ms=50, trim_interval_s=0))
    try:
        for reg in regs:
            await hold_seat(redis, exam_id, reg, site_a, ttl_s=TTL_S)
        async with asyncio.timeout(10):
            # The write-behind worker fills PostgreSQL: there is no event here to wait on, so poll.
            while len(await pg_holds(pg, exam_id)) < 20:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert await pg_holds(pg, exam_id) == await redis_holds(redis, exam_id)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await pool.close()
    await trim_acknowledged(redis, stream)
    assert await redis.xlen(stream) == 0
