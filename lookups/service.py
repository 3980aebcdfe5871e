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
  write-back landed (or all of them, while Redis is down) do not ask again;
- **generations**: a kind of record may name a generation key (``generation_key``; the score
  records: one per exam, replaced by every correction, ``lookups.corrections``). A miss reads the
  generation and the field's marker (``~<field>`` in the same hash, written by a correction) — one
  more round trip, on the miss path only: a hit stays the request's one ``HGET``. An answer is kept
  and shared by single-flight only under the generation it was read in, and none under a
  ``pending:`` generation (a correction between its Redis writes and its COMMIT). The write-back
  (``write_back.lua``, the queried field only) is ``HSETNX`` and only while the marker is the one
  read before the query: it never replaces a value written meanwhile, nor lands after a correction
  of the record, even one whose field was deleted since. A kind with no generation writes back
  every place with ``HSETNX``.

``CachedRecords`` is that machinery for any kind of record kept in Redis hashes; ``Lookups``
is it for the ticket and score records, ``lookups.certificates.CertificateLookups`` for
certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import asyncpg

from core.errors import CoreError, storage_errors
from core.redis import REDIS_DOWN, AutoPipeline, abandon
from core.scripts import Script, load_scripts
from lookups import records

log = logging.getLogger("examgate.lookups")

REMEMBERED_MAX = 100_000  # answers from PostgreSQL kept in memory before the cache is pruned
PENDING = b"pending:"  # a generation being replaced: a correction wrote its records and has not committed
NO_GENERATION = b"-"  # the generation of records whose kind names none
MARKER = "~"  # a field's marker: "~" + the field, in the same hash


def marker_field(field: str) -> str:
    """The field holding ``field``'s marker (the last correction that wrote it), in the same hash."""
    return MARKER + field


@functools.cache
def _write_back_script() -> Script:
    return load_scripts("lookups")["write_back"]
Key = tuple[int, str, str]
K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class LookupsBusy(CoreError):
    """Too many PostgreSQL fallbacks in flight in this process (HTTP 503, retry shortly)."""


class CachedRecords(Generic[K, R]):
    """Records kept in Redis hashes, read by key, with the PostgreSQL fallback described above.

    A kind of record says where a key lives in Redis (``location``), how a stored value reads
    (``decode``), how PostgreSQL writes one (``query``) and where a record found is written back
    (``placements``); the rest — the read, single-flight, the cap, the memory — is here.
    """

    def __init__(self, pool: asyncpg.Pool, redis: AutoPipeline, *, max_pg_in_flight: int = 16,
                 memory_ttl_s: float = 10.0) -> None:
        self.pool = pool
        self.redis = redis
        self.max_pg_in_flight = max_pg_in_flight
        self.memory_ttl_s = memory_ttl_s
        # (key, generation) → the query in flight; key → (expires, generation read before the query, record or None)
        self._flights: dict[tuple[K, bytes | None], asyncio.Future[R | None]] = {}
        self._recent: dict[K, tuple[float, bytes | None, R | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()  # write-backs under way (held until done)
        self.pg_in_flight = 0
        self.pg_queries = 0
        self.refused = 0

    def location(self, key: K) -> tuple[str, str]:
        """(hash key, field) where Redis keeps the record of ``key``."""
        raise NotImplementedError

    def decode(self, raw: bytes | str) -> R:
        """The record of a stored value."""
        raise NotImplementedError

    async def query(self, key: K) -> str | None:
        """The record's stored value as PostgreSQL writes it, or None."""
        raise NotImplementedError

    def placements(self, key: K, record: R) -> list[tuple[str, str]]:
        """(hash key, field) of every place Redis keeps ``record``."""
        return [self.location(key)]

    def generation_key(self, key: K) -> str | None:
        """The Redis key of the generation ``key``'s record is read under; None: the kind keeps none."""
        return None

    async def _generation(self, key: K) -> tuple[bytes, bytes] | None:
        """The current generation (made when there is none, so a Redis that lost it starts a new one) and the
        field's marker (b"": none); None: Redis did not answer."""
        name = self.generation_key(key)
        if name is None:
            return NO_GENERATION, b""
        bucket, field = self.location(key)
        try:
            # The marker before the generation: a correction sets pending before it writes, so a marker it
            # wrote is never seen beside a generation that is not pending (lookups.corrections).
            marker = self.redis.submit(b"HGET", bucket, marker_field(field))
            self.redis.submit(b"SET", name, secrets.token_hex(8), b"NX").add_done_callback(_ignore_result)
            generation = self.redis.submit(b"GET", name)
            found: bytes | None = await generation
            seen: bytes | None = await marker
        except REDIS_DOWN:
            return None
        return (PENDING if found is None else found), seen or b""  # gone meanwhile: trust nothing

    def read_command(self, key: K) -> tuple[bytes | str, ...]:
        """The Redis command reading ``key``'s record: ``HGET`` of its place."""
        name, field = self.location(key)
        return b"HGET", name, field

    def read_reply(self, reply: Any) -> tuple[bool, R | None]:
        """(answered, record) of ``read_command``'s reply; not answered: ask PostgreSQL. A value is the record,
        nothing is a miss."""
        return (False, None) if reply is None else (True, self.decode(reply))

    def submit_key(self, key: K) -> asyncio.Future[Any] | None:
        """Issue the record's Redis read now; None when Redis cannot even take the command."""
        try:
            return self.redis.submit(*self.read_command(key))
        except REDIS_DOWN:
            return None

    @staticmethod
    def abandon(pending: asyncio.Future[Any] | None) -> None:
        """Drop a submitted read whose answer is no longer wanted."""
        if pending is not None:
            abandon(pending)

    async def finish_key(self, key: K, pending: asyncio.Future[Any] | None) -> R | None:
        """The record (None when there is none), from Redis or, on a miss or Redis down, from PostgreSQL."""
        redis_up = pending is not None
        if pending is not None:
            try:
                reply = await pending
            except REDIS_DOWN as exc:
                log.warning("lookup read from Redis failed, asking PostgreSQL: %s", exc)
                redis_up = False
            else:
                answered, record = self.read_reply(reply)
                if answered:
                    return record
        return await self._from_postgres(key, write_back=redis_up)

    async def _from_postgres(self, key: K, *, write_back: bool) -> R | None:
        # Redis down: no generation to check, the memory is trusted as it is (lookups.corrections says how long).
        seen = await self._generation(key) if write_back else None
        generation, marker = seen if seen is not None else (None, b"")
        trusted = generation is not None and not generation.startswith(PENDING)
        remembered = self._recent.get(key)
        if remembered is not None:
            expires, read_in, record = remembered
            if expires > time.monotonic() and (generation is None or (trusted and read_in == generation)):
                return record
            del self._recent[key]
        # Under a pending generation a query in flight may have begun before the COMMIT: none is shared or kept.
        kept = generation is None or trusted
        flight_key = (key, generation)
        flight = self._flights.get(flight_key) if kept else None
        if flight is not None:
            return await asyncio.shield(flight)
        if self.pg_in_flight >= self.max_pg_in_flight:
            self.refused += 1
            raise LookupsBusy(f"{self.pg_in_flight} PostgreSQL lookups in flight")
        flight = asyncio.get_running_loop().create_future()
        if kept:
            self._flights[flight_key] = flight
        self.pg_in_flight += 1
        try:
            self.pg_queries += 1
            value = await self.query(key)
            record = None if value is None else self.decode(value)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # marked retrieved: nobody else may be waiting
            raise
        finally:
            self.pg_in_flight -= 1
            if kept:
                del self._flights[flight_key]
        flight.set_result(record)
        if kept:
            self._remember(key, generation, record)
        if record is not None and value is not None and trusted:
            self._write_back(key, record, value, marker)
        return record

    def _remember(self, key: K, generation: bytes | None, record: R | None) -> None:
        now = time.monotonic()
        if len(self._recent) >= REMEMBERED_MAX:
            self._recent = {k: v for k, v in self._recent.items() if v[0] > now}
            if len(self._recent) >= REMEMBERED_MAX:
                self._recent.clear()
        self._recent[key] = (now + self.memory_ttl_s, generation, record)

    def _write_back(self, key: K, record: R, value: str, marker: bytes) -> None:
        """The record written back where it is missing (module docstring); a failure only costs a later query."""
        if self.generation_key(key) is None:
            for name, field in self.placements(key, record):
                try:
                    pending = self.redis.submit(b"HSETNX", name, field, value)
                except REDIS_DOWN:
                    return
                pending.add_done_callback(_ignore_result)
            return
        bucket, field = self.location(key)
        task = asyncio.get_running_loop().create_task(self._guarded_write(bucket, field, value, marker))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _guarded_write(self, bucket: str, field: str, value: str, marker: bytes) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await _write_back_script().run(self.redis, [bucket], [field, value, marker])


class Lookups(CachedRecords[Key, records.Record]):
    """Ticket and score records, by (exam, id_number or ticket_no, value); one per gateway process."""

    def location(self, key: Key) -> tuple[str, str]:
        name = records.field_name(key[1], key[2])
        return records.bucket_key(key[0], name), name

    def decode(self, raw: bytes | str) -> records.Record:
        return records.decode(raw)

    async def query(self, key: Key) -> str | None:
        exam_id, mode, value = key
        sql = records.ONE_BY_ID_SQL if mode == "id_number" else records.ONE_BY_TICKET_SQL
        async with storage_errors():
            found: str | None = await self.pool.fetchval(sql, exam_id, value)
            return found

    def placements(self, key: Key, record: records.Record) -> list[tuple[str, str]]:
        return records.placements(key[0], record.id_number, record.ticket_no)

    def generation_key(self, key: Key) -> str | None:
        return records.generation_key(key[0])

    def submit(self, exam_id: int, mode: str, value: str) -> asyncio.Future[Any] | None:
        """Issue the record's Redis read now; None when Redis cannot even take the command."""
        return self.submit_key((exam_id, mode, value))

    async def finish(self, exam_id: int, mode: str, value: str,
                     pending: asyncio.Future[Any] | None) -> records.Record | None:
        """The record (None when there is none), from Redis or, on a miss or Redis down, from PostgreSQL."""
        return await self.finish_key((exam_id, mode, value), pending)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failed write-back only costs the next lookup a query
