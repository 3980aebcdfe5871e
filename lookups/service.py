"""Reading lookup records: Redis first; PostgreSQL on a miss, one query per key at a time, capped.

``submit`` issues the record's ``HGET`` at once (it leaves in the same auto-pipelined batch
as the request's captcha check); ``finish`` awaits it. A miss — or Redis not answering —
falls back to PostgreSQL:

- **single-flight**: concurrent lookups of one key share one query;
- **a cap** on queries in flight per process: beyond it ``LookupsBusy`` (503), so a cold
  cache at release time cannot pile the peak onto PostgreSQL;
- **negative caching**: a key PostgreSQL does not know is answered "not found" from
  process memory for ``memory_ttl_s``;
- a record found is written back to Redis (when Redis answers), so the next lookups hit,
  and kept in process memory for as long: lookups whose Redis read missed just before the
  write-back landed (or all of them, while Redis is down) do not ask again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from core.errors import CoreError, storage_errors
from core.redis import REDIS_DOWN, AutoPipeline, abandon
from lookups import records

log = logging.getLogger("examgate.lookups")

REMEMBERED_MAX = 100_000  # answers from PostgreSQL kept in memory before the cache is pruned
Key = tuple[int, str, str]


class LookupsBusy(CoreError):
    """Too many PostgreSQL fallbacks in flight in this process (HTTP 503, retry shortly)."""


class Lookups:
    """One per gateway process."""

    def __init__(self, pool: asyncpg.Pool, redis: AutoPipeline, *, max_pg_in_flight: int = 16,
                 memory_ttl_s: float = 10.0) -> None:
        self.pool = pool
        self.redis = redis
        self.max_pg_in_flight = max_pg_in_flight
        self.memory_ttl_s = memory_ttl_s
        self._flights: dict[Key, asyncio.Future[records.Record | None]] = {}
        self._recent: dict[Key, tuple[float, records.Record | None]] = {}  # key → (expires, record or None)
        self.pg_in_flight = 0
        self.pg_queries = 0
        self.refused = 0

    def submit(self, exam_id: int, mode: str, value: str) -> asyncio.Future[Any] | None:
        """Issue the record's Redis read now; None when Redis cannot even take the command."""
        name = records.field_name(mode, value)
        try:
            return self.redis.submit(b"HGET", records.bucket_key(exam_id, name), name)
        except REDIS_DOWN:
            return None

    @staticmethod
    def abandon(pending: asyncio.Future[Any] | None) -> None:
        """Drop a submitted read whose answer is no longer wanted."""
        if pending is not None:
            abandon(pending)

    async def finish(self, exam_id: int, mode: str, value: str,
                     pending: asyncio.Future[Any] | None) -> records.Record | None:
        """The record (None when there is none), from Redis or, on a miss or Redis down, from PostgreSQL."""
        redis_up = pending is not None
        if pending is not None:
            try:
                raw = await pending
            except REDIS_DOWN as exc:
                log.warning("lookup read from Redis failed, asking PostgreSQL: %s", exc)
                raw, redis_up = None, False
            if raw is not None:
                return records.decode(raw)
        return await self._from_postgres((exam_id, mode, value), write_back=redis_up)

    async def _from_postgres(self, key: Key, *, write_back: bool) -> records.Record | None:
        remembered = self._recent.get(key)
        if remembered is not None:
            if remembered[0] > time.monotonic():
                return remembered[1]
            del self._recent[key]
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        if self.pg_in_flight >= self.max_pg_in_flight:
            self.refused += 1
            raise LookupsBusy(f"{self.pg_in_flight} PostgreSQL lookups in flight")
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        self.pg_in_flight += 1
        try:
            value = await self._query(key)
            record = None if value is None else records.decode(value)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # marked retrieved: nobody else may be waiting
            raise
        finally:
            self.pg_in_flight -= 1
            del self._flights[key]
        flight.set_result(record)
        self._remember(key, record)
        if record is not None and value is not None and write_back:
            self._write_back(key[0], record, value)
        return record

    async def _query(self, key: Key) -> str | None:
        """The record's stored value as PostgreSQL writes it, or None."""
        exam_id, mode, value = key
        sql = records.ONE_BY_ID_SQL if mode == "id_number" else records.ONE_BY_TICKET_SQL
        self.pg_queries += 1
        async with storage_errors():
            return await self.pool.fetchval(sql, exam_id, value)

    def _remember(self, key: Key, record: records.Record | None) -> None:
        now = time.monotonic()
        if len(self._recent) >= REMEMBERED_MAX:
            self._recent = {k: v for k, v in self._recent.items() if v[0] > now}
            if len(self._recent) >= REMEMBERED_MAX:
                self._recent.clear()
        self._recent[key] = (now + self.memory_ttl_s, record)

    def _write_back(self, exam_id: int, record: records.Record, value: str) -> None:
        for key, name in records.placements(exam_id, record.id_number, record.ticket_no):
            try:
                pending = self.redis.submit(b"HSET", key, name, value)
            except REDIS_DOWN:
                return
            pending.add_done_callback(_ignore_result)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failed write-back only costs the next lookup a query
