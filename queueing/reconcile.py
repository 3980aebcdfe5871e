"""Rebuild seat inventory and holds in Redis from PostgreSQL, reporting the drift repaired.

What PostgreSQL says (per exam): every registration in a seat-taking status (any but
cancelled and expired) with a ``site_id`` holds that seat. Paid ones, and unpaid ones without
``hold_expires_at``, hold it permanently; the others expire at ``hold_expires_at`` — even
when that is already past: the hold is restored with its past expiry and the sweeper
releases it on its next pass, emitting the ``expire`` event that clears it in
PostgreSQL. ``site_left`` = capacity − seats held (never below zero).

Redis is rewritten to exactly that, per exam under WATCH, with one exception: a
registration whose latest hold event (``hold_last_event``) the write-behind has not yet
acknowledged is ahead of PostgreSQL, so its hold in Redis is kept as it is (and counted in
``site_left``), and its event applies later. Each attempt WATCHes the exam's hold keys,
then reads the unacknowledged events, then PostgreSQL, then Redis, and writes in
MULTI/EXEC: a hold taken at any point after the WATCH aborts the write and the exam is done
again, so a hold a candidate was told about is never undone. ``hold_last_event`` loses the
entries of the registrations repaired, so events older than the repair are never applied
over it.

``reconcile`` first drains the exams' streams (``drain_first``, as consumer ``reconcile``),
so that the holds in flight are few. Dead letters are not in flight (they were
acknowledged): a registration whose latest event is one is rebuilt from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from queueing import keys
from queueing.errors import QueueingError
from queueing.holds import datetime_to_ms
from queueing.inventory import SEAT_TAKING_STATUSES
from queueing.writebehind import drain, unapplied_events

MAX_ATTEMPTS = 10
RETRY_DELAY_S = 0.02  # backoff between attempts grows by this much each time (jittered)


class ReconcileError(QueueingError):
    """Redis kept changing under the rebuild of an exam."""

    def __init__(self, exam_id: int) -> None:
        super().__init__(f"exam {exam_id}: holds kept changing during reconcile; stop the traffic and retry")
        self.exam_id = exam_id


@dataclass(frozen=True)
class SiteDrift:
    """One site's seats left: what PostgreSQL implies and what Redis had (None = key missing)."""

    site_id: int
    capacity: int
    held: int
    expected_left: int
    found_left: int | None

    @property
    def drifted(self) -> bool:
        """True when Redis had another count."""
        return self.found_left != self.expected_left


@dataclass
class ExamDrift:
    """What reconcile found and repaired in one exam."""

    exam_id: int
    sites: list[SiteDrift] = field(default_factory=list)
    holds_expected: int = 0
    holds_added: int = 0
    holds_removed: int = 0
    holds_changed: int = 0
    holds_in_flight: int = 0
    oversold_sites: list[int] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """True when anything in Redis had to change."""
        return bool(self.holds_added or self.holds_removed or self.holds_changed
                    or any(site.drifted for site in self.sites))


@dataclass
class Report:
    """The drift reconcile repaired, per exam; ``events_drained`` = stream entries applied first."""

    exams: list[ExamDrift] = field(default_factory=list)
    events_drained: int = 0

    @property
    def drifted(self) -> bool:
        """True when any exam had drift."""
        return any(exam.drifted for exam in self.exams)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: only drifted sites are listed."""
        return {
            "drifted": self.drifted,
            "events_drained": self.events_drained,
            "exams": [{
                "exam_id": exam.exam_id, "drifted": exam.drifted, "holds_expected": exam.holds_expected,
                "holds_added": exam.holds_added, "holds_removed": exam.holds_removed,
                "holds_changed": exam.holds_changed, "holds_in_flight": exam.holds_in_flight,
                "oversold_sites": exam.oversold_sites,
                "sites": [{"site_id": s.site_id, "capacity": s.capacity, "held": s.held,
                           "expected_left": s.expected_left, "found_left": s.found_left}
                          for s in exam.sites if s.drifted],
            } for exam in self.exams],
        }


@dataclass(frozen=True)
class _Truth:
    holds: dict[bytes, bytes]  # registration → site, as Redis stores them
    expiry: dict[bytes, int]  # registration → ms, the expiring holds only


async def _capacities(pg: asyncpg.Connection | asyncpg.Pool, exam_id: int) -> dict[int, int]:
    rows = await pg.fetch("SELECT id, capacity FROM exam_sites WHERE exam_id = $1 ORDER BY id", exam_id)
    return {row["id"]: row["capacity"] for row in rows}


async def _truth(pg: asyncpg.Connection | asyncpg.Pool, exam_id: int) -> _Truth:
    rows = await pg.fetch(
        """SELECT id, site_id, status, hold_expires_at FROM registrations
            WHERE exam_id = $1 AND site_id IS NOT NULL AND status = ANY($2::text[])""",
        exam_id, list(SEAT_TAKING_STATUSES),
    )
    holds: dict[bytes, bytes] = {}
    expiry: dict[bytes, int] = {}
    for row in rows:
        member = str(row["id"]).encode()
        holds[member] = str(row["site_id"]).encode()
        if row["status"] != "paid" and row["hold_expires_at"] is not None:
            expiry[member] = datetime_to_ms(row["hold_expires_at"])
    return _Truth(holds, expiry)


def _in_flight(unapplied: dict[int, set[int]], last_events: dict[bytes, bytes]) -> set[bytes]:
    """Registrations whose latest event (``hold_last_event``) is one the write-behind has not acknowledged."""
    return {member for member, number in last_events.items()
            if int(number) in unapplied.get(int(member), ())}


async def reconcile_exam(pg: asyncpg.Connection | asyncpg.Pool, redis: aioredis.Redis, exam_id: int) -> ExamDrift:
    """Make the exam's holds and seat counts in Redis what PostgreSQL says; the drift found.

    Registrations whose latest hold event is still on its way to PostgreSQL keep their hold in
    Redis as it is (they are newer than PostgreSQL; their event applies later).
    """
    capacity = await _capacities(pg, exam_id)
    holds_key, expiry_key, last_key = keys.holds(exam_id), keys.hold_expiry(exam_id), keys.hold_last_event(exam_id)
    stream = keys.holds_stream(exam_id)
    left_keys = {site: keys.site_left(exam_id, site) for site in capacity}
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0, RETRY_DELAY_S * attempt))  # let a burst of holds pass
        async with redis.pipeline(transaction=True) as pipe:
            try:
                # Every hold script writes hold_last_event, so any hold taken from here on aborts
                # the write. The events not yet acknowledged are read before PostgreSQL: one
                # acknowledged later was committed before it, and one applied later counts as not.
                await pipe.watch(holds_key, expiry_key, last_key, *left_keys.values())
                unapplied = await unapplied_events(redis, stream)
                # The client does not decode responses: hashes come back as bytes to bytes.
                last_events = cast("dict[bytes, bytes]", await pipe.hgetall(last_key)) if unapplied else {}
                truth = await _truth(pg, exam_id)
                found_holds = cast("dict[bytes, bytes]", await pipe.hgetall(holds_key))
                expiry_scores = cast("list[tuple[bytes, float]]", await pipe.zrange(expiry_key, 0, -1, withscores=True))
                found_expiry = {member: int(score) for member, score in expiry_scores}
                # One GET per site (not MGET, which redis-py refuses in a pipeline on a cluster).
                found_left = [await pipe.get(key) for key in left_keys.values()]
                in_flight = _in_flight(unapplied, last_events)
                for member in in_flight:  # Redis is ahead of PostgreSQL here: keep what it has
                    truth.holds.pop(member, None)
                    truth.expiry.pop(member, None)
                    if member in found_holds:
                        truth.holds[member] = found_holds[member]
                        if member in found_expiry:
                            truth.expiry[member] = found_expiry[member]
                held = Counter(int(site) for site in truth.holds.values())
                drift = ExamDrift(exam_id, holds_expected=len(truth.holds), holds_in_flight=len(in_flight))
                repaired: set[bytes] = set()
                for member, site in truth.holds.items():
                    if member not in found_holds:
                        drift.holds_added += 1
                        repaired.add(member)
                    elif found_holds[member] != site or found_expiry.get(member) != truth.expiry.get(member):
                        drift.holds_changed += 1
                        repaired.add(member)
                for member in found_holds.keys() - truth.holds.keys():
                    drift.holds_removed += 1
                    repaired.add(member)
                # expiry entries without a hold (the sweeper would drop them) are repaired too
                repaired.update(found_expiry.keys() - truth.expiry.keys() - found_holds.keys())
                for site_id, value in zip(left_keys, found_left, strict=True):
                    expected_left = max(0, capacity[site_id] - held[site_id])
                    drift.sites.append(SiteDrift(site_id, capacity[site_id], held[site_id], expected_left,
                                                 None if value is None else int(value)))
                    if held[site_id] > capacity[site_id]:
                        drift.oversold_sites.append(site_id)
                pipe.multi()
                if repaired:
                    pipe.hdel(last_key, *repaired)
                    to_delete = [m for m in repaired if m not in truth.holds]
                    if to_delete:
                        pipe.hdel(holds_key, *to_delete)
                        pipe.zrem(expiry_key, *to_delete)
                    to_set = {m: truth.holds[m] for m in repaired if m in truth.holds}
                    if to_set:
                        pipe.hset(holds_key, mapping=cast("dict[FieldT, EncodableT]", to_set))
                        permanent = [m for m in to_set if m not in truth.expiry]
                        if permanent:
                            pipe.zrem(expiry_key, *permanent)
                        expiring = {m: truth.expiry[m] for m in to_set if m in truth.expiry}
                        if expiring:
                            pipe.zadd(expiry_key, expiring)
                for site_drift in drift.sites:
                    if site_drift.drifted:
                        pipe.set(left_keys[site_drift.site_id], site_drift.expected_left)
                await pipe.execute()
                return drift
            except WatchError:
                continue
    raise ReconcileError(exam_id)


async def reconcile(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: aioredis.Redis,
    exam_id: int | None = None,
    *,
    drain_first: bool = True,
    min_idle_ms: int = 60_000,
) -> Report:
    """Rebuild seat inventory and holds of one exam (all exams when None) from PostgreSQL.

    With ``drain_first`` the exams' hold streams are first applied to PostgreSQL (see the
    module docstring); streams that do not exist are skipped.
    """
    if exam_id is None:
        exam_ids = [row["id"] for row in await pg.fetch("SELECT id FROM exams ORDER BY id")]
    else:
        exam_ids = [exam_id]
    report = Report()
    if drain_first and exam_ids:
        streams = [keys.holds_stream(e) for e in exam_ids]
        existing = [s for s, found in zip(streams, await _exist(redis, streams), strict=True) if found]
        if existing:
            drained = await drain(redis, pg, existing, consumer_name="reconcile", min_idle_ms=min_idle_ms)
            report.events_drained = drained.applied
    for exam in exam_ids:
        report.exams.append(await reconcile_exam(pg, redis, exam))
    return report


async def _exist(redis: aioredis.Redis, names: list[str]) -> list[bool]:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(name)
        return [bool(found) for found in await pipe.execute()]
