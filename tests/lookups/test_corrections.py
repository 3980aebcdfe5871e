"""Score corrections in Redis: the changed records written inside the import's transaction, put back when it
rolls back, never overwritten by a prewarm that read before the commit; real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.imports import run_import
from core.redis import AutoPipeline
from core.scripts import load_scripts
from lookups import prewarm, records
from lookups.corrections import ScoreCorrections
from lookups.service import Lookups, marker_field
from tests.gateway.test_lookup_routes import make_results


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=4) as made:
        yield made


@pytest.fixture
async def hook(pool: asyncpg.Pool, redis: aioredis.Redis) -> AsyncIterator[ScoreCorrections]:
    corrections = ScoreCorrections(pool, redis)
    yield corrections
    await corrections.settled()


async def _stored(redis: aioredis.Redis, exam_id: int, person: dict[str, Any]) -> list[dict[str, str] | None]:
    """The scores Redis holds for ``person`` under each field (None: no record there)."""
    found = []
    for mode in records.MODES:
        name = records.field_name(mode, person[mode])
        raw = await redis.hget(records.bucket_key(exam_id, name), name)
        found.append(None if raw is None else dict(records.decode(raw).scores))
    return found


async def _registration(pg: asyncpg.Connection, person: dict[str, Any]) -> int:
    return int(await pg.fetchval("SELECT registration_id FROM admission_tickets WHERE ticket_no = $1",
                                 person["ticket_no"]))


def _csv(exam_code: str, rows: list[tuple[dict[str, Any], str, str]]) -> bytes:
    lines = ["exam_code,ticket_no,id_number,subject_code,score"]
    lines += [f"{exam_code},{p['ticket_no']},{p['id_number']},{subject},{score}" for p, subject, score in rows]
    return ("\n".join(lines) + "\n").encode()


async def test_an_import_writes_exactly_the_changed_records_before_its_commit(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, hook: ScoreCorrections) -> None:
    exam_id, people = await make_results(pg, 4)
    await prewarm.prewarm(pool, redis, exam_id)
    code = await pg.fetchval("SELECT code FROM exams WHERE id = $1", exam_id)
    generation = await redis.get(records.generation_key(exam_id))
    seen_inside: list[list[dict[str, str] | None]] = []
    committed = await pg.fetchval("SELECT count(*) FROM score_changes")

    async def watching(conn: Any, keys: Any) -> None:
        await hook(conn, keys)
        seen_inside.append(await _stored(redis, exam_id, people[1]))
        # not committed yet: nobody else sees the change in PostgreSQL
        assert await pg.fetchval("SELECT count(*) FROM score_changes") == committed

    # one score changed, one the same as stored (no change), one new row for another candidate's subject
    data = _csv(code, [(people[1], "101", "99.5"), (people[2], "102", "72.5"), (people[3], "102", "80")])
    result = await run_import(pool, "scores", data, content_type="text/csv", batch_id="fix-1", actor="test",
                              hooks={"scores": watching})
    assert (result.rows, result.applied) == (3, 2)
    await hook.settled()
    assert seen_inside == [[{"101": "99.5", "102": "72.5"}] * 2]
    assert await _stored(redis, exam_id, people[1]) == [{"101": "99.5", "102": "72.5"}] * 2
    assert await _stored(redis, exam_id, people[3]) == [{"101": str(people[3]["score_101"]), "102": "80"}] * 2
    assert await _stored(redis, exam_id, people[0]) == [{"101": str(people[0]["score_101"]), "102": "72.5"}] * 2
    after = await redis.get(records.generation_key(exam_id))
    assert after is not None and after != generation
    assert hook.repaired == 0

    # the same batch again changes nothing and calls no hook
    again = await run_import(pool, "scores", data, content_type="text/csv", batch_id="fix-1", actor="test",
                             hooks={"scores": watching})
    assert again.already_applied and len(seen_inside) == 1


async def test_a_correction_rolled_back_after_its_hook_is_written_back(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, hook: ScoreCorrections) -> None:
    exam_id, people = await make_results(pg, 2)
    await prewarm.prewarm(pool, redis, exam_id)
    person = people[0]
    registration = await _registration(pg, person)
    before = await _stored(redis, exam_id, person)

    class Failed(Exception):
        pass

    async def failing_correction() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE scores SET score = 12.5 WHERE registration_id = $1 AND subject_code = '101'",
                               registration)
            await hook(conn, [registration])
            assert await _stored(redis, exam_id, person) == [{"101": "12.5", "102": "72.5"}] * 2
            raise Failed  # the commit never happens

    with pytest.raises(Failed):
        await failing_correction()
    await hook.settled()
    assert hook.repaired == 1
    assert await _stored(redis, exam_id, person) == before


async def test_a_prewarm_waits_for_a_correction_in_flight_and_reads_it(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, hook: ScoreCorrections) -> None:
    exam_id, people = await make_results(pg, 3)
    person = people[2]
    registration = await _registration(pg, person)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("UPDATE scores SET score = 1.5 WHERE registration_id = $1 AND subject_code = '102'",
                           registration)
        await hook(conn, [registration])
        warming = asyncio.create_task(prewarm.prewarm(pool, redis, exam_id))
        # The prewarm waits on the exam's records lock the correction holds until its COMMIT.
        while not await pg.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                    "AND classid = $1", records.RECORDS_LOCK_CLASS):
            assert not warming.done()
            await asyncio.sleep(0.01)
        await transaction.commit()
    await warming
    await hook.settled()
    # Its snapshot came after the COMMIT: it wrote the corrected value, not the one before.
    assert await _stored(redis, exam_id, person) == [{"101": str(person["score_101"]), "102": "1.5"}] * 2


async def test_a_process_memory_serves_no_answer_read_before_a_correction(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str,
        hook: ScoreCorrections) -> None:
    exam_id, people = await make_results(pg, 2)  # not prewarmed: every first lookup falls back to PostgreSQL
    person = people[1]
    registration = await _registration(pg, person)
    code = await pg.fetchval("SELECT code FROM exams WHERE id = $1", exam_id)
    fields = [(records.bucket_key(exam_id, name), name)
              for name in (records.field_name(mode, person[mode]) for mode in records.MODES)]
    client = await AutoPipeline.connect(redis_url)
    service = Lookups(pool, client, memory_ttl_s=600)

    async def lookup() -> str:
        record = await service.finish(exam_id, "id_number", person["id_number"],
                                      service.submit(exam_id, "id_number", person["id_number"]))
        assert record is not None
        return record.scores["101"]

    async def lost() -> None:  # the record's field vanishes from Redis (once the write-back has landed)
        for _ in range(1000):
            if await redis.hexists(*fields[0]):
                break
            await asyncio.sleep(0.01)
        await redis.hdel(*fields[0])

    try:
        old = str(person["score_101"])
        assert await lookup() == old and service.pg_queries == 1
        await lost()
        assert await lookup() == old and service.pg_queries == 1  # from memory

        # Between the hook and the COMMIT the generation is pending: nothing is served from memory or kept.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE scores SET score = 33.5 WHERE registration_id = $1 AND subject_code = '101'",
                               registration)
            await hook(conn, [registration])
            assert (await redis.get(records.generation_key(exam_id))).startswith(b"pending:")
            await redis.hdel(fields[0][0], fields[0][1])
            assert await lookup() == old and service.pg_queries == 2  # PostgreSQL: not committed yet
            assert await lookup() == old and service.pg_queries == 3  # not kept
        await hook.settled()
        assert not (await redis.get(records.generation_key(exam_id))).startswith(b"pending:")
        await redis.hdel(fields[0][0], fields[0][1])
        assert await lookup() == "33.5" and service.pg_queries == 4  # the old answer is not served

        # Through an import, the same.
        data = _csv(code, [(person, "101", "44")])
        await run_import(pool, "scores", data, content_type="text/csv", batch_id="fix-memory", actor="test",
                         hooks={"scores": hook})
        assert await lookup() == "44"  # the hook's value in Redis
        await hook.settled()
        await lost()
        assert await lookup() == "44" and service.pg_queries == 5
    finally:
        await client.close()


async def test_a_write_back_read_before_a_correction_never_lands(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, hook: ScoreCorrections) -> None:
    exam_id, people = await make_results(pg, 1)
    person = people[0]
    registration = await _registration(pg, person)
    name = records.field_name("id_number", person["id_number"])
    bucket = records.bucket_key(exam_id, name)
    script = load_scripts("lookups")["write_back"]
    old = await pg.fetchval(records.ONE_BY_ID_SQL, exam_id, person["id_number"])
    # No correction yet: written where missing, never over a value present.
    assert await script.run(redis, [bucket], [name, old, ""]) == 1
    assert await script.run(redis, [bucket], [name, "other", ""]) == 0
    await redis.hdel(bucket, name)
    # A correction writes the record and its marker; the field is then lost (deleted, evicted).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE scores SET score = 61 WHERE registration_id = $1 AND subject_code = '101'",
                           registration)
        await hook(conn, [registration])
    await hook.settled()
    marker = await redis.hget(bucket, marker_field(name))
    assert marker is not None
    await redis.hdel(bucket, name)
    # A fallback that read the marker before the correction does not write its old value back.
    assert await script.run(redis, [bucket], [name, old, ""]) == 0
    assert await redis.hget(bucket, name) is None
    # One that read the correction's marker does.
    new = await pg.fetchval(records.ONE_BY_ID_SQL, exam_id, person["id_number"])
    assert await script.run(redis, [bucket], [name, new, marker]) == 1
    assert records.decode(await redis.hget(bucket, name)).scores["101"] == "61"
