"""Score corrections reach the lookups at once: the changed records rewritten in Redis before the import commits.

``ScoreCorrections`` is the ``scores`` import's ``ChangedHook``: the import awaits it inside its
transaction, before COMMIT, with the registration ids whose scores changed. Nothing else is
prewarmed; the guarantee is that **no lookup that starts after the COMMIT answers the old value**
(while Redis answers; see the last point).

1. **The records, rewritten before the commit.** The hook sets each exam's generation
   (``records.generation_key``) to ``pending:<transaction id>``, reads the records of those
   registrations on the import's own connection (``records.BY_REGISTRATIONS_SQL``: the prewarm's value
   expression, so it sees the new scores) and writes both fields of each (by id number, by ticket
   number) with ``HSET``, all awaited before it returns, so before the COMMIT. A lookup after the
   COMMIT reads its record's field after those writes: a hit is the new value (the peak path is
   unchanged: one ``HGET`` in the request's one batch). Between the writes and the COMMIT a lookup
   may already see the new value; both answers are right then. Redis not answering fails the hook,
   so the import rolls back and says so (503): a correction Redis did not take is not applied.
2. **Nothing older lands on top.** Three writers could put an old value back after the hook:
   - a *prewarm* reading its snapshot before the COMMIT and writing after the hook. The hook holds a
     shared advisory lock per exam (``records.EXAM_LOCK_SHARED_SQL``) until its transaction ends; the
     prewarm takes it exclusively (``records.EXAM_LOCK_SQL``) before its snapshot and holds it until
     its last write: either the prewarm wrote everything before the hook, or its snapshot is taken
     after the COMMIT;
   - a *write-back* of a PostgreSQL fallback (``lookups.service``) that read the old value before the
     COMMIT: it is ``HSETNX`` (never over a value present) and only while the field's marker
     (``~<field>`` in the same hash, which the hook sets to its transaction id with the value) is the
     one the fallback read before its query — one script on one hash (``write_back.lua``), so even a
     field deleted after the hook wrote it is not written back old; and none at all under a pending
     generation (point 3);
   - the *repair* of a correction that rolled back (point 4): it holds the exam lock exclusively.
3. **The gateways' memory.** Each process keeps PostgreSQL's answers in memory (``_recent``,
   ``memory_ttl_s``; found records and "no such record" alike) and shares queries in flight; both are
   consulted only when Redis misses. A miss reads the exam's generation (``SET NX`` + ``GET``, after the
   field's marker: one more round trip, on the miss path only), and an answer is kept with the generation read before
   its query and served only under that same generation. While it is pending nothing is served from
   memory, shared or kept. After the COMMIT the settle step (point 4) sets a new token, so every
   answer kept is one whose query began after the token was set, i.e. after the COMMIT. A lookup
   that starts after the COMMIT and misses therefore queries PostgreSQL (pending), or is served an
   answer read after the COMMIT (new token). A Redis that lost the generation gets a new token from
   the next miss (``SET NX``), never one an old answer was kept under.
4. **The end of the transaction.** The hook takes an advisory lock keyed by its transaction id
   (``SETTLE_LOCK_SQL``) and starts a settle task that waits for that lock on a connection of its
   own (granted when the import's transaction ends, no polling), then asks PostgreSQL how it ended
   (``txid_status``): committed → a new generation token, unless another correction's pending value
   is there already (``settle_generation``, WATCH/MULTI on the one key); rolled back → the records
   are read again (the committed values) and written under the exclusive exam lock, then a new
   token. A lookup may have seen the uncommitted value for those milliseconds; none sees it after
   the repair. A process that dies between the hook and its settle step leaves the exam's generation
   pending (memory off for that exam, lookups still answered) and the rolled-back values in Redis
   until the import is run again or the exam prewarmed (the prewarm sets a new token under its
   lock); ``settled()`` lets a caller about to exit wait for its settle steps.
5. **HTTP caches.** The score answer says ``Cache-Control: no-store`` (and is a POST): no browser or
   proxy keeps it.

What is not covered: with Redis unreachable after a correction, a process answers from PostgreSQL and
its memory without a generation to check, so an answer it read before the COMMIT may be served for up
to ``memory_ttl_s``; and a Redis that loses its data in the milliseconds between the hook and the
COMMIT may serve such an answer until the settle step's new token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from core.db import Conn
from core.errors import StorageUnavailable
from core.redis import REDIS_DOWN
from lookups import records
from lookups.prewarm import write_hashes
from lookups.service import PENDING, marker_field

__all__ = ["ScoreCorrections", "set_generations", "settle_generation", "write_records"]

log = logging.getLogger("examgate.lookups")

# A settle step waits for its import's transaction on an advisory lock keyed by the transaction id
# (a class of its own beside ``records.RECORDS_LOCK_CLASS``).
SETTLE_LOCK_CLASS = 0x4C53  # "LS"
SETTLE_LOCK_SQL = f"SELECT pg_advisory_xact_lock({SETTLE_LOCK_CLASS}, ($1::bigint % 2147483647)::int)"
SETTLE_WAIT_SQL = f"SELECT pg_advisory_lock({SETTLE_LOCK_CLASS}, ($1::bigint % 2147483647)::int)"
SETTLE_DONE_SQL = f"SELECT pg_advisory_unlock({SETTLE_LOCK_CLASS}, ($1::bigint % 2147483647)::int)"

FETCH_ROWS = 10_000  # records read and written at a time (a whole exam's first scores go through the hook too)
REPAIR_ATTEMPTS = 30  # a repair waits for Redis this many times …
REPAIR_PAUSE_S = 1.0  # … this long apart


async def write_records(redis: aioredis.Redis, rows: Iterable[Sequence[Any]], marker: str) -> set[int]:
    """Write (exam_id, id_number, ticket_no, value) rows under both their fields, each field's marker set to
    ``marker``; the exams written."""
    by_key: dict[str, list[str]] = defaultdict(list)
    exams: set[int] = set()
    for exam_id, id_number, ticket_no, value in rows:
        exams.add(exam_id)
        for key, name in records.placements(exam_id, id_number, ticket_no):
            by_key[key] += (name, value, marker_field(name), marker)
    if by_key:
        await write_hashes(redis, list(by_key.items()))
    return exams


async def set_generations(redis: aioredis.Redis, exams: Iterable[int], value: bytes | None = None) -> None:
    """Set each exam's generation to ``value``, or to a new token of its own."""
    async with redis.pipeline(transaction=False) as pipe:
        for exam_id in sorted(exams):
            pipe.set(records.generation_key(exam_id), value or secrets.token_hex(8).encode())
        await pipe.execute()


async def settle_generation(redis: aioredis.Redis, exam_id: int, pending: bytes) -> None:
    """A new token for the exam's generation after a correction's COMMIT, unless another correction's
    ``pending:`` value is there now (that one settles it)."""
    key = records.generation_key(exam_id)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            current = await pipe.get(key)
            if isinstance(current, bytes) and current != pending and current.startswith(PENDING):
                return
            pipe.multi()
            pipe.set(key, secrets.token_hex(8))
            await pipe.execute()
        except WatchError:
            return  # replaced meanwhile: by a correction's pending value, or by a new token


async def _write_all(redis: aioredis.Redis, cursor: Any, marker: str) -> None:
    """Every record the cursor reads, written to Redis a chunk at a time while the next chunk is read."""
    writing: asyncio.Task[set[int]] | None = None
    try:
        while rows := await cursor.fetch(FETCH_ROWS):
            if writing is not None:
                await writing
            writing = asyncio.create_task(write_records(redis, rows, marker))
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:
            writing.cancel()


class ScoreCorrections:
    """The ``scores`` import's hook (module docstring); made per import by the gateway, so cheap."""

    # Settle steps outlive the import that started them (and its hook object): held here until done.
    _settling: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.pool = pool
        self.redis = redis
        self.repaired = 0  # corrections of this hook rolled back after their records were written, written back

    async def __call__(self, conn: Conn, registration_ids: Sequence[Any]) -> None:
        """Write the changed records to Redis inside the import's transaction (before its COMMIT)."""
        ids = sorted({int(i) for i in registration_ids})
        if not ids:
            return
        exams = [r[0] for r in await conn.fetch(
            "SELECT DISTINCT exam_id FROM admission_tickets WHERE registration_id = ANY($1::bigint[])", ids)]
        if not exams:
            return
        await conn.execute(records.EXAM_LOCK_SHARED_SQL, exams)  # a prewarm of these exams writing now finishes first
        xid = int(await conn.fetchval("SELECT txid_current()"))
        await conn.execute(SETTLE_LOCK_SQL, xid)
        # Watched from now on: should the writes below fail half-way, the rollback is repaired.
        pending = PENDING + str(xid).encode()
        task = asyncio.get_running_loop().create_task(self._settle(xid, pending, ids, exams))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        try:
            # Pending first: from here no process keeps, shares or writes back an answer of these exams.
            await set_generations(self.redis, exams, pending)
            await _write_all(self.redis, await conn.cursor(records.BY_REGISTRATIONS_SQL, ids), str(xid))
        except REDIS_DOWN as exc:
            raise StorageUnavailable("redis", f"score records not written: {exc or type(exc).__name__}") from exc

    @classmethod
    async def settled(cls) -> None:
        """Wait until every correction hooked so far in this process has settled (committed or repaired)."""
        while cls._settling:
            await asyncio.gather(*cls._settling, return_exceptions=True)

    async def _settle(self, xid: int, pending: bytes, ids: list[int], exams: list[int]) -> None:
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(SETTLE_WAIT_SQL, xid)  # granted when the import's transaction has ended
                await conn.execute(SETTLE_DONE_SQL, xid)
                status = await conn.fetchval("SELECT txid_status($1)", xid)
            if status == "committed":
                for exam_id in exams:
                    await self._retrying(lambda exam_id=exam_id: settle_generation(self.redis, exam_id, pending))
                return
            log.warning("score correction %s ended %s after its records were written: writing back %d", xid, status,
                        len(ids))
            await self._retrying(lambda: self._repair(xid, ids, exams))
            self.repaired += 1
        except Exception:
            log.exception("score correction %s: settling failed; prewarm exams %s", xid, exams)

    async def _repair(self, xid: int, ids: list[int], exams: list[int]) -> None:
        """The records as committed, written back under the exclusive exam lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(records.EXAM_LOCK_SQL, exams)
            await _write_all(self.redis, await conn.cursor(records.BY_REGISTRATIONS_SQL, ids), f"repair:{xid}")
            await set_generations(self.redis, exams)  # no other correction writes while the lock is held

    @staticmethod
    async def _retrying(step: Any) -> None:
        for attempt in range(REPAIR_ATTEMPTS):
            try:
                await step()
                return
            except REDIS_DOWN:
                if attempt == REPAIR_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(REPAIR_PAUSE_S)
