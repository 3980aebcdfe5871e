"""Certificates in PostgreSQL and Redis: the prewarm, the import hook inside a transaction, the fallback."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db
from core.redis import AutoPipeline
from lookups import cert_prewarm, certificates
from tests.factories import make_exam


async def add_certificates(pg: asyncpg.Connection, count: int, *, names: list[str] | None = None) -> list[str]:
    """``count`` certificates of a new exam (level mid), numbered uniquely; their numbers."""
    exam_id = await make_exam(pg)
    prefix = "C" + secrets.token_hex(4).upper()
    numbers = [f"{prefix}{index:06d}" for index in range(count)]
    await pg.executemany(
        "INSERT INTO certificates (cert_no, name, id_number, exam_id, level_code, approved_on, management_no) "
        "VALUES ($1, $2, $3, $4, 'mid', DATE '2026-05-01', $5)",
        [(number, (names or [])[index] if index < len(names or []) else f"持证人{index}", f"1101051990010{index:05d}",
          exam_id, f"GL-{number}") for index, number in enumerate(numbers)])
    return numbers


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    opened = await db.create_pool(db.PoolSettings(pg_dsn, 1, 2))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the flushed test database."""
    client = AutoPipeline(redis_url, connections=1, timeout_ms=1000)
    try:
        yield client
    finally:
        await client.close()


async def test_prewarm_loads_every_certificate_as_postgresql_writes_it(pg: asyncpg.Connection, pool: asyncpg.Pool,
                                                                       redis: aioredis.Redis) -> None:
    numbers = await add_certificates(pg, 120)
    seen: list[tuple[int, int]] = []
    report = await cert_prewarm.prewarm(pool, redis, progress=lambda done, total: seen.append((done, total)))
    total = await pg.fetchval("SELECT count(*) FROM certificates")
    assert report.certificates == total >= 120 and seen[-1] == (total, total)
    for number in numbers[::7]:
        stored = await redis.hget(certificates.bucket_key(number), number)
        assert stored is not None
        assert certificates.decode(stored) == certificates.decode(await pg.fetchval(certificates.ONE_SQL, number))
    assert int(await redis.hget(certificates.META_KEY, "certificates")) == total
    assert await cert_prewarm.drop(redis) > 0
    assert await redis.hget(certificates.bucket_key(numbers[0]), numbers[0]) is None


async def test_the_hook_writes_changes_inside_the_transaction_before_commit(pg: asyncpg.Connection,
                                                                           redis: aioredis.Redis) -> None:
    numbers = await add_certificates(pg, 3)
    hook = cert_prewarm.changed_hook(redis)
    gone = numbers[2]
    await redis.hset(certificates.bucket_key(gone), gone, "stale")
    async with pg.transaction():
        await pg.execute("UPDATE certificates SET management_no = 'GL-NEW' WHERE cert_no = $1", numbers[0])
        await pg.execute("DELETE FROM certificates WHERE cert_no = $1", gone)
        await hook(pg, [numbers[0], numbers[1], gone, numbers[0]])
        # Redis has the new values while the import's transaction is still open
        written = certificates.decode(await redis.hget(certificates.bucket_key(numbers[0]), numbers[0]))
        assert written.management_no == "GL-NEW"
        assert await redis.hget(certificates.bucket_key(gone), gone) is None
        second = await redis.hget(certificates.bucket_key(numbers[1]), numbers[1])
        assert certificates.decode(second).cert_no == numbers[1]
    await hook(pg, [])  # nothing changed: nothing asked


async def test_a_redis_failure_fails_the_hook(pg: asyncpg.Connection) -> None:
    numbers = await add_certificates(pg, 1)
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        with pytest.raises(aioredis.ConnectionError):
            async with pg.transaction():
                await cert_prewarm.changed_hook(dead)(pg, numbers)
    finally:
        await dead.aclose()


async def test_a_cold_number_asks_postgresql_once_and_is_written_back(
        pg: asyncpg.Connection, pool: asyncpg.Pool, pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    numbers = await add_certificates(pg, 1, names=["王五"])
    service = certificates.CertificateLookups(pool, pipeline, max_pg_in_flight=4, memory_ttl_s=10)
    number = numbers[0]
    found = await asyncio.gather(*(service.finish_key(number, service.submit_key(number)) for _ in range(50)))
    assert {record.name for record in found if record is not None} == {"王五"} and None not in found
    assert service.pg_queries == 1
    await pipeline.execute(b"PING")  # after the write-back the lookup did not wait for (one connection, in order)
    assert certificates.decode(await redis.hget(certificates.bucket_key(number), number)).name == "王五"
    fresh = certificates.CertificateLookups(pool, pipeline)
    assert (await fresh.finish_key(number, fresh.submit_key(number))) == found[0]
    assert fresh.pg_queries == 0  # from Redis
    assert await fresh.finish_key("NOSUCH000001", fresh.submit_key("NOSUCH000001")) is None
    assert await fresh.finish_key("NOSUCH000001", fresh.submit_key("NOSUCH000001")) is None
    assert fresh.pg_queries == 1  # an unknown number remembered in memory


async def test_a_bucket_marked_complete_answers_a_miss_without_postgresql(
        pg: asyncpg.Connection, pool: asyncpg.Pool, pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    numbers = await add_certificates(pg, 2)
    await cert_prewarm.prewarm(pool, redis)
    service = certificates.CertificateLookups(pool, pipeline)
    missing = "NOSUCH" + numbers[0][-6:]
    assert await service.finish_key(missing, service.submit_key(missing)) is None
    assert (await service.finish_key(numbers[0], service.submit_key(numbers[0]))).cert_no == numbers[0]
    assert service.pg_queries == 0
    # a bucket that lost its mark (evicted, or written before any prewarm) sends its misses to PostgreSQL
    await redis.hdel(certificates.bucket_key(missing), certificates.COMPLETE_FIELD)
    assert await service.finish_key(missing, service.submit_key(missing)) is None
    assert service.pg_queries == 1
    # a certificate added by an import to a complete bucket is found, and one removed is gone
    async with pg.transaction():
        await pg.execute("UPDATE certificates SET management_no = 'GL-X' WHERE cert_no = $1", numbers[1])
        await pg.execute("DELETE FROM certificates WHERE cert_no = $1", numbers[0])
        await cert_prewarm.changed_hook(redis)(pg, numbers)
    assert (await service.finish_key(numbers[1], service.submit_key(numbers[1]))).management_no == "GL-X"
    assert await service.finish_key(numbers[0], service.submit_key(numbers[0])) is None
    assert service.pg_queries == 1


async def test_a_prewarm_waits_for_an_import_in_flight_and_writes_what_it_committed(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    number = (await add_certificates(pg, 1))[0]
    transaction = pg.transaction()
    await transaction.start()
    await pg.execute("UPDATE certificates SET management_no = 'GL-COMMITTED' WHERE cert_no = $1", number)
    await cert_prewarm.changed_hook(redis)(pg, [number])  # holds the shared lock until the COMMIT
    prewarming = asyncio.create_task(cert_prewarm.prewarm(pool, redis))
    while not await pg.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                "AND classid = 17221 AND objid = 0"):
        assert not prewarming.done()
        await asyncio.sleep(0.01)  # until the prewarm is seen waiting for the lock
    await transaction.commit()
    report = await prewarming
    assert report.certificates >= 1
    stored = certificates.decode(await redis.hget(certificates.bucket_key(number), number))
    assert stored.management_no == "GL-COMMITTED"  # the prewarm's snapshot came after the COMMIT


async def test_the_worker_prewarms_only_a_redis_that_lost_the_certificates(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    number = (await add_certificates(pg, 1))[0]
    first = await cert_prewarm.prewarm_if_lost(pool, redis)  # a new Redis
    assert first is not None and first.certificates >= 1
    assert await redis.hget(certificates.bucket_key(number), number) is not None
    assert await cert_prewarm.prewarm_if_lost(pool, redis) is None  # warm: nothing done
    await redis.flushdb()
    again = await cert_prewarm.prewarm_if_lost(pool, redis)
    assert again is not None and await redis.hget(certificates.bucket_key(number), number) is not None
