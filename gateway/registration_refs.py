"""What the seat routes need to know of a registration, kept in process memory so a seat hold reads no PostgreSQL.

A registration's candidate, exam and province never change after it is created, so they are
cached (least recently used first out). Its status does change (approved, withdrawn, paid,
cancelled); an entry is therefore re-read after ``ttl_s``, and a seat refused because of the
cached status re-reads it at most once a second (``refresh``). The status only decides whether a
seat may be chosen at all: the hold script checks the seat right granted at approval itself,
and refuses a paid seat (``SeatLocked``), whatever the cache says.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple

import asyncpg

from core.errors import StorageUnavailable

PG = asyncpg.Pool | asyncpg.Connection
DEFAULT_TTL_S = 30.0
DEFAULT_MAX_ENTRIES = 200_000
_PG_DOWN = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.TooManyConnectionsError,
            asyncpg.CannotConnectNowError)
_SELECT = "SELECT candidate_id, exam_id, province, status FROM registrations WHERE id = $1"


class RegistrationRef(NamedTuple):
    """A registration's owner, exam, province and (possibly slightly stale) status."""

    registration_id: int
    candidate_id: int
    exam_id: int
    province: str
    status: str


class RegistrationRefs:
    """An LRU of ``RegistrationRef`` by id, filled from PostgreSQL on a miss (one ``fetchrow``)."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[int, tuple[RegistrationRef, float]] = OrderedDict()

    def cached(self, registration_id: int) -> RegistrationRef | None:
        """The cached entry if it is fresh, else None (no I/O)."""
        found = self._entries.get(registration_id)
        if found is None:
            return None
        ref, loaded_at = found
        if time.monotonic() - loaded_at > self._ttl_s:
            del self._entries[registration_id]
            return None
        self._entries.move_to_end(registration_id)
        return ref

    def put(self, ref: RegistrationRef) -> None:
        """Remember ``ref`` (after a create or a status change made by this process)."""
        self._entries[ref.registration_id] = (ref, time.monotonic())
        self._entries.move_to_end(ref.registration_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def refresh(self, pg: PG, registration_id: int, min_age_s: float) -> RegistrationRef | None:
        """The entry re-read from PostgreSQL unless it was loaded less than ``min_age_s`` ago."""
        found = self._entries.get(registration_id)
        if found is not None and time.monotonic() - found[1] < min_age_s:
            return found[0]
        self._entries.pop(registration_id, None)
        return await self.get(pg, registration_id)

    async def get(self, pg: PG, registration_id: int) -> RegistrationRef | None:
        """The registration's ref from memory, or from PostgreSQL; None when it does not exist."""
        ref = self.cached(registration_id)
        if ref is not None:
            return ref
        try:
            row = await pg.fetchrow(_SELECT, registration_id)
        except _PG_DOWN as exc:
            raise StorageUnavailable("postgresql", str(exc) or type(exc).__name__) from exc
        if row is None:
            return None
        ref = RegistrationRef(registration_id, row["candidate_id"], row["exam_id"], row["province"], row["status"])
        self.put(ref)
        return ref
