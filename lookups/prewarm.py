"""Prewarm: every ticket and score record of an exam loaded into Redis before the peak.

The records are read from PostgreSQL with a server-side cursor (``FETCH_ROWS`` at a time),
already encoded as the value Redis keeps (``records.RECORDS_SQL``), grouped by hash bucket
and written with one ``HSET`` per bucket per chunk through a pipeline, while the next chunk
is fetched. Running it again overwrites with the current
values; a record deleted in PostgreSQL stays in Redis until the exam's keys are dropped
(``drop``) — lookups compare the name anyway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.catalogue import Exam
from core.redis import pack_command
from core.redis_cluster import is_cluster
from core.timeutil import utcnow
from lookups import records

log = logging.getLogger("examgate.lookups")

YIELD_EVERY = 10_000  # rows grouped (or commands packed) between yields to the event loop: ~15 ms
FETCH_ROWS = 100_000  # ~16,000 HSETs per chunk whatever its size: bigger chunks, fewer replies
SCORES_HOT = timedelta(days=7)  # scores are looked up heavily for a week after release

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PrewarmReport:
    """What a prewarm loaded: records with scores, records with tickets (every record has one), seconds."""

    exam_id: int
    scores: int
    tickets: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {"exam_id": self.exam_id, "scores": self.scores, "tickets": self.tickets, "seconds": self.seconds}


async def _write(redis: aioredis.Redis, exam_id: int, rows: list[asyncpg.Record]) -> None:
    by_bucket: dict[int, list[str]] = defaultdict(list)
    bucket = records.bucket
    for start in range(0, len(rows), YIELD_EVERY):
        for id_number, ticket_no, _, value in rows[start:start + YIELD_EVERY]:
            by_id, by_ticket = "i:" + id_number, "t:" + ticket_no
            by_bucket[bucket(by_id)] += (by_id, value)
            by_bucket[bucket(by_ticket)] += (by_ticket, value)
        await asyncio.sleep(0)  # the admin route prewarms in a gateway process: let its requests in
    prefix = records.bucket_prefix(exam_id)
    await write_hashes(redis, [(prefix + str(number), flat) for number, flat in by_bucket.items()])


async def write_hashes(redis: aioredis.Redis, hashes: list[tuple[str, list[str]]]) -> None:
    """One ``HSET key field value …`` per (key, flat fields and values), sent as one buffer on one connection."""
    # Packed by hiredis and written as one buffer: redis-py's own pipeline packs in Python,
    # which was more than half of a prewarm's time (measured: 2.6 of 4.5 s per 100,000 records).
    parts = []
    for start in range(0, len(hashes), YIELD_EVERY):
        parts += [pack_command(("HSET", key, *flat)) for key, flat in hashes[start:start + YIELD_EVERY]]
        await asyncio.sleep(0)
    if not is_cluster(redis):
        conn = await redis.connection_pool.get_connection()
        try:
            await _send_all(conn, b"".join(parts), len(parts))
        finally:
            await redis.connection_pool.release(conn)
        return
    # On a cluster, each node's share goes to that node as one buffer.
    cluster = await cast("RedisCluster", redis).initialize()  # a client that has sent nothing has no slot map yet
    by_node: dict[str, tuple[ClusterNode, list[bytes]]] = {}
    for (key, _), part in zip(hashes, parts, strict=True):
        node = cluster.get_node_from_key(key)
        if node is None:
            raise ConnectionError(f"no node of the Redis Cluster serves {key}")
        by_node.setdefault(node.name, (node, []))[1].append(part)
    for node, node_parts in by_node.values():
        conn = node.acquire_connection()
        try:
            await _send_all(conn, b"".join(node_parts), len(node_parts))
        finally:
            node.release(conn)


async def _send_all(conn: Any, packed: bytes, replies: int) -> None:
    """Write the commands in one buffer and read their replies; a failure drops the connection."""
    try:
        await conn.send_packed_command(packed, check_health=False)
        for _ in range(replies):
            await conn.read_response()  # an error reply raises here
    except BaseException:
        await conn.disconnect()  # replies may be left unread: the connection cannot be reused
        raise


async def prewarm(pool: asyncpg.Pool, redis: aioredis.Redis, exam_id: int, *,
                  progress: Progress | None = None) -> PrewarmReport:
    """Load the exam's records into Redis; ``progress(done, total)`` after each chunk."""
    started = time.perf_counter()
    scores = tickets = 0
    async with pool.acquire() as conn:
        total = await conn.fetchval("SELECT count(*) FROM admission_tickets WHERE exam_id = $1", exam_id)
        async with conn.transaction(readonly=True):
            # Until the last write: a correction in flight commits first and is in the snapshot, or waits.
            await conn.execute(records.EXAM_LOCK_SQL, [exam_id])
            cursor = await conn.cursor(records.RECORDS_SQL, exam_id)
            writing: asyncio.Task[None] | None = None
            try:
                while True:
                    rows = await cursor.fetch(FETCH_ROWS)
                    if not rows:
                        break
                    tickets += len(rows)
                    scores += sum(1 for row in rows if row[2])
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(_write(redis, exam_id, rows))
                    if progress is not None:
                        progress(tickets, total)
                if writing is not None:
                    await writing
                    writing = None
                # Still under the lock: a new generation (lookups.corrections), also ending one a correction
                # left pending when its process died before it settled.
                await redis.set(records.generation_key(exam_id), secrets.token_hex(8))
            finally:
                if writing is not None:
                    writing.cancel()
    seconds = round(time.perf_counter() - started, 2)
    await redis.hset(records.meta_key(exam_id), mapping={"tickets": tickets, "scores": scores,
                                                          "prewarmed_at": int(time.time()), "seconds": seconds})
    return PrewarmReport(exam_id, scores, tickets, seconds)


async def drop(redis: aioredis.Redis, exam_id: int) -> int:
    """Delete every lookup key of the exam (after it is over); the number of keys deleted."""
    deleted = 0
    async for key in redis.scan_iter(match=f"eg:lk:{exam_id}:*", count=1000):
        deleted += await redis.delete(key)
    return deleted


def windows(exam: Exam, before_s: float) -> list[tuple[datetime, datetime]]:
    """When the exam's records must be warm: from ``before_s`` ahead of the ticket print window to its end,
    and from ``before_s`` ahead of the score release to a week after it."""
    ahead = timedelta(seconds=before_s)
    return [(exam.ticket_print_opens_at - ahead, exam.ticket_print_closes_at),
            (exam.score_release_at - ahead, exam.score_release_at + SCORES_HOT)]


async def prewarm_due(pool: asyncpg.Pool, redis: aioredis.Redis, exams: Iterable[Exam], *, before_s: float,
                      now: datetime | None = None) -> list[PrewarmReport]:
    """Prewarm every exam entering a window whose records were not loaded since the window began."""
    moment = now or utcnow()
    done = []
    for exam in exams:
        starts = [start for start, end in windows(exam, before_s) if start <= moment < end]
        if not starts:
            continue
        loaded = await redis.hget(records.meta_key(exam.id), "prewarmed_at")
        if loaded is not None and int(loaded) >= max(starts).timestamp():
            continue
        report = await prewarm(pool, redis, exam.id)
        log.info("prewarmed exam %d: %d ticket records, %d with scores, %.1f s", exam.id, report.tickets,
                 report.scores, report.seconds)
        done.append(report)
    return done


async def keep_prewarmed(pool: asyncpg.Pool, redis: aioredis.Redis, exams: Callable[[], Iterable[Exam]], *,
                         before_s: float, interval_s: float = 30.0) -> None:
    """The worker's ``prewarm`` task: ``prewarm_due`` every ``interval_s``."""
    while True:
        await prewarm_due(pool, redis, exams(), before_s=before_s)
        await asyncio.sleep(interval_s)
