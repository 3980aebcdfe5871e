"""Certificates into Redis: the whole table before verifications need it, and each import's changes before it commits.

- ``prewarm`` reads every certificate with a server-side cursor (``FETCH_ROWS`` at a time),
  already encoded by PostgreSQL (``certificates.ALL_SQL``), grouped by hash bucket and written
  with one ``HSET`` per bucket per chunk (``lookups.prewarm.write_hashes``), the next chunk
  fetched meanwhile; then it marks every bucket complete and records what it loaded in
  ``certificates.META_KEY``. It holds ``certificates.LOCK_SQL`` from before its snapshot to its last
  write, so an import committing meanwhile is either in the snapshot or writes after it.
- ``changed_hook`` is the ``certificates`` import kind's hook: awaited inside the import's
  transaction, before COMMIT, it reads the changed certificates through that transaction and
  writes them (or deletes those no longer there), so a verification never answers from an
  older record once the import is committed. It takes ``certificates.LOCK_SHARED_SQL`` first (held
  to the import's COMMIT): a prewarm in progress is waited for, one starting waits for the COMMIT.
  A Redis failure fails the import: nothing commits that Redis does not have.
- ``keep_warm`` is the worker's task: a prewarm whenever Redis has lost the records (no
  ``META_KEY``: a flushed or new Redis), checked every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from core.db import Conn
from lookups import certificates
from lookups.prewarm import FETCH_ROWS, YIELD_EVERY, write_hashes

__all__ = ["CertificatesPrewarmed", "changed_hook", "drop", "keep_warm", "prewarm", "prewarm_if_lost",
           "write_changed"]

log = logging.getLogger("examgate.lookups")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CertificatesPrewarmed:
    """What a prewarm loaded: certificates, seconds."""

    certificates: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {"certificates": self.certificates, "seconds": self.seconds}


async def _write(redis: aioredis.Redis, rows: Sequence[asyncpg.Record]) -> None:
    by_bucket: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(rows), YIELD_EVERY):
        for cert_no, value in rows[start:start + YIELD_EVERY]:
            by_bucket[certificates.bucket_key(cert_no)] += (cert_no, value)
        await asyncio.sleep(0)  # the admin route prewarms in a gateway process: let its requests in
    await write_hashes(redis, list(by_bucket.items()))


async def prewarm(pool: asyncpg.Pool, redis: aioredis.Redis, *,
                  progress: Progress | None = None) -> CertificatesPrewarmed:
    """Load every certificate into Redis; ``progress(done, total)`` after each chunk."""
    started = time.perf_counter()
    loaded = 0
    async with pool.acquire() as conn:
        total = await conn.fetchval("SELECT count(*) FROM certificates")
        async with conn.transaction(readonly=True):
            await conn.execute(certificates.LOCK_SQL)  # until the last write: see the module docstring
            cursor = await conn.cursor(certificates.ALL_SQL)
            writing: asyncio.Task[None] | None = None
            try:
                while rows := await cursor.fetch(FETCH_ROWS):
                    loaded += len(rows)
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(_write(redis, rows))
                    if progress is not None:
                        progress(loaded, total)
                if writing is not None:
                    await writing
                    writing = None
                marked = str(int(time.time()))
                await write_hashes(redis, [(f"{certificates.PREFIX}{number}", [certificates.COMPLETE_FIELD, marked])
                                           for number in range(certificates.BUCKETS)])
            finally:
                if writing is not None:
                    writing.cancel()
    seconds = round(time.perf_counter() - started, 2)
    await redis.hset(certificates.META_KEY, mapping={"certificates": loaded, "prewarmed_at": int(time.time()),
                                                      "seconds": seconds})
    return CertificatesPrewarmed(loaded, seconds)


async def write_changed(conn: Conn, redis: aioredis.Redis, cert_nos: Sequence[Any]) -> int:
    """Write the records of ``cert_nos`` as ``conn`` sees them (deleting those it does not): how many were written."""
    wanted = sorted({str(cert_no) for cert_no in cert_nos})
    if not wanted:
        return 0
    await conn.execute(certificates.LOCK_SHARED_SQL)
    rows = await conn.fetch(certificates.SOME_SQL, wanted)
    found = {row["cert_no"]: row["value"] for row in rows}
    async with redis.pipeline(transaction=False) as pipe:
        for cert_no in wanted:
            key = certificates.bucket_key(cert_no)
            if cert_no in found:
                pipe.hset(key, cert_no, found[cert_no])
            else:
                pipe.hdel(key, cert_no)
        await pipe.execute()
    return len(found)


def changed_hook(redis: aioredis.Redis) -> Callable[[Conn, Sequence[Any]], Awaitable[None]]:
    """The ``certificates`` import kind's hook: the changed certificates written to Redis before the import commits."""
    async def write_certificates(conn: Conn, cert_nos: Sequence[Any]) -> None:
        written = await write_changed(conn, redis, cert_nos)
        log.info("certificates import: %d records written to Redis", written)
    return write_certificates


async def drop(redis: aioredis.Redis) -> int:
    """Delete every certificate key (records, meta, cached PDFs); the number deleted."""
    deleted = 0
    async for key in redis.scan_iter(match=certificates.PREFIX + "*", count=1000):
        deleted += await redis.delete(key)
    return deleted


async def prewarm_if_lost(pool: asyncpg.Pool, redis: aioredis.Redis) -> CertificatesPrewarmed | None:
    """Prewarm when Redis has no record of a prewarm (a new or flushed Redis); None when it has one."""
    if await redis.exists(certificates.META_KEY):
        return None
    report = await prewarm(pool, redis)
    log.info("prewarmed %d certificates in %.1f s", report.certificates, report.seconds)
    return report


async def keep_warm(pool: asyncpg.Pool, redis: aioredis.Redis, *, interval_s: float = 60.0) -> None:
    """The worker's ``certificates-prewarm`` task: ``prewarm_if_lost`` every ``interval_s``."""
    while True:
        await prewarm_if_lost(pool, redis)
        await asyncio.sleep(interval_s)
