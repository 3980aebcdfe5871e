"""Deterministic demo data: a million candidates, a finished exam (A) and an open one (B), in seconds.

Exam B also carries its registration lifecycle (eligibility rules, review rules and points, the
notice, commitment and instructions texts) and a few seeded candidates an integrity record
(``seed.lifecycle``).

Every seeded candidate is a pure function of its index (``candidate_credentials``, ``lookup_keys``),
so load tests can log in as, or look up, any of them without reading the database. Seeded
candidates are the ones whose username is ``c`` and seven or more digits; their phones run upwards
from 13000000000 (700 numbers per candidate), so accounts made by load tests should take phones
from the top of the 1[3-9] range.

How it is fast (one transaction, one lock): the keys, indexes and foreign keys of the loaded
tables are dropped and re-created afterwards (PostgreSQL's "Populating a Database"); every row
is computed from the index in SQL (``seed.queries``), most of them by a second session that
streams them as binary COPY into the loading one (``seed.stream``), so both cores work; then ANALYZE.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import ClassVar, NamedTuple

import asyncpg

from core.errors import CoreError
from seed import data as seed_data
from seed import keys as seed_keys
from seed import lifecycle as seed_lifecycle
from seed import photos as seed_photos
from seed import queries as sq
from seed.data import EXAM_A_CODE, EXAM_B_CODE, MAX_CANDIDATES
from seed.exams import demo_sites, exam_specs, insert_exam, insert_sites
from seed.reset import SEEDED_USERNAME_PATTERN, delete_seeded, existing_seed, truncate_seeded
from seed.stream import QueryStream, SeedStreamError

__all__ = [
    "EXAM_A_CODE", "EXAM_B_CODE", "SEED_PASSWORD", "SEED_PASSWORD_HASH", "SEED_SECURITY_ANSWER",
    "SEED_SECURITY_ANSWER_HASH", "Credentials", "LookupKeys", "SeedReport", "SeedError", "SeedMismatch",
    "candidate_credentials", "lookup_keys", "seed",
]  # fmt: skip

# Every seeded candidate logs in with this password (argon2id for a million accounts would take hours).
SEED_PASSWORD = "Demo#2026pass"
# argon2id hashes (default core.passwords.PasswordSettings) of SEED_PASSWORD and of the normalised
# SEED_SECURITY_ANSWER, made once and written here: one hash for every seeded candidate keeps the
# seed fast and its rows identical from run to run. tests/core/test_passwords.py checks that they
# verify and still match the default settings (if the settings change, login rehashes them).
SEED_PASSWORD_HASH = ("$argon2id$v=19$m=19456,t=2,p=1$t9LAdwtIomfs7xJi/avjjw"
                      "$0noi+n7pxuf2+FVBoDXN+pTP2sJ2HcsESpqGFEzCbxU")
SEED_SECURITY_ANSWER = "演示"
SEED_SECURITY_ANSWER_HASH = ("$argon2id$v=19$m=19456,t=2,p=1$RrsWapEAHmeclZ7XgUbp7Q"
                             "$ZQsdzbEWYxDPy62bQ/UvaYU7waG7H+8CONti0ZbP6iQ")

_LOCK_KEY = 0x6567_7365_6564  # "egseed": one seeder at a time
# Everything the seed (or a reset) writes, or whose keys it drops, locked up front in one order.
_LOCK_TABLES = (
    "LOCK TABLE exams, exam_levels, exam_specialties, exam_subjects, exam_specialty_subjects, exam_sites,"
    " review_points, exam_review_rules, eligibility_rules, exam_documents, integrity_records,"
    " candidates, educations, photo_blobs, photos, photo_change_requests, photo_events, registrations,"
    " registration_events, registration_commitments,"
    " cancellation_requests, orders, refunds, refund_events, payment_notifications, admission_tickets, scores"
    " IN ACCESS EXCLUSIVE MODE"
)


class Credentials(NamedTuple):
    """What a seeded candidate logs in with, and their contact details."""

    username: str
    password: str
    name: str
    id_number: str
    phone: str
    email: str


class LookupKeys(NamedTuple):
    """What a seeded candidate types to look up their exam-A ticket and score."""

    exam_code: str
    name: str
    id_number: str
    ticket_no: str


class SeedReport(NamedTuple):
    """Rows the seed wrote (or found, when ``already_seeded``) and how long it took."""

    candidates: int
    educations: int
    registrations: int
    tickets: int
    scores: int
    sites: int
    exam_ids: dict[str, int]
    already_seeded: bool
    elapsed_s: float

    def __str__(self) -> str:
        exams = ", ".join(f"{code} (id {exam_id})" for code, exam_id in sorted(self.exam_ids.items()))
        if self.already_seeded:
            return f"already seeded: {self.candidates:,} candidates; exams {exams}"
        return (
            f"seeded {self.candidates:,} candidates, {self.registrations:,} registrations, {self.tickets:,} tickets,"
            f" {self.scores:,} scores, {self.sites:,} sites in {self.elapsed_s:.1f} s; exams {exams}"
        )


class SeedError(CoreError):
    """The seed could not go ahead or failed; nothing was changed."""


class SeedMismatch(SeedError):
    """The database holds demo data for another candidate count; pass ``reset=True`` to replace it."""

    def __init__(self, existing: int | None, requested: int) -> None:
        found = "a partial demo seed" if existing is None else f"demo data for {existing} candidates"
        super().__init__(f"database holds {found}, not {requested}; seed with reset=True to replace it")
        self.existing = existing
        self.requested = requested


def candidate_credentials(index: int) -> Credentials:
    """Credentials of seeded candidate ``index`` (0-based; username ``c{index + 1:07d}``), without the database."""
    return Credentials(
        seed_data.username(index),
        SEED_PASSWORD,
        seed_data.person_name(index),
        seed_data.resident_id(index),
        seed_data.phone(index),
        seed_data.email(index),
    )


def lookup_keys(index: int) -> LookupKeys:
    """Exam-A ticket/score lookup keys of seeded candidate ``index``, without the database."""
    name, id_number = seed_data.person_name(index), seed_data.resident_id(index)
    return LookupKeys(EXAM_A_CODE, name, id_number, seed_data.ticket_no(index))


class _Progress:
    # Units are rough row-equivalents of work, so the bar moves at a steady pace.
    WEIGHTS: ClassVar[dict[str, int]] = {
        "admission_tickets": 2, "candidates": 3, "registrations": 2, "scores": 1, "educations": 2, "keys": 10,
    }

    def __init__(self, candidates: int, report: Callable[[int, int], None] | None) -> None:
        self.n = candidates
        self.total = sum(self.WEIGHTS.values()) * candidates
        self.done = 0
        self.report = report

    def advance(self, phase: str, fraction: float = 1.0) -> None:
        """Count ``fraction`` of ``phase`` as done and report."""
        self.done = min(self.total, self.done + round(self.WEIGHTS[phase] * self.n * fraction))
        if self.report is not None:
            self.report(self.done, self.total)

    def finish(self) -> None:
        """Report the work complete."""
        self.done = self.total
        if self.report is not None:
            self.report(self.done, self.total)


async def seed(
    dsn: str,
    candidates: int,
    *,
    reset: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """Create the demo exams and ``candidates`` seeded candidates; a no-op when exactly that is there already.

    Demo data for another count raises ``SeedMismatch`` unless ``reset``, which deletes the demo
    exams and seeded candidates (with everything referencing them) first, whatever their count.

    ``progress(done, total)`` is called as the work advances.
    """
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise ValueError(f"candidates must be 1..{MAX_CANDIDATES}, got {candidates}")
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn, command_timeout=None)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            found = await existing_seed(conn)
            complete = found is not None and found.exam_ids.keys() == {EXAM_A_CODE, EXAM_B_CODE}
            if found is not None and complete and found.candidates == candidates and not reset:
                # A demo seeded before the lifecycle data existed gets it; otherwise nothing changes.
                await seed_lifecycle.apply(conn, list(found.exam_ids.values()), found.exam_ids[EXAM_B_CODE],
                                           candidates)
                await seed_photos.give_photos(conn, SEEDED_USERNAME_PATTERN)
                _Progress(candidates, progress).finish()
                return SeedReport(*found, already_seeded=True, elapsed_s=time.perf_counter() - started)
            if found is not None and not reset:
                raise SeedMismatch(found.candidates if complete else None, candidates)
            await conn.execute(_LOCK_TABLES)
            truncated = found is not None and await truncate_seeded(conn)
            saved = await seed_keys.drop_constraints(conn)
            if found is not None and not truncated:
                await delete_seeded(conn)
            report = await _load(conn, dsn, candidates, saved, _Progress(candidates, progress))
    except (asyncpg.PostgresError, SeedStreamError) as exc:
        raise SeedError(f"seeding failed, nothing changed: {exc}") from exc
    finally:
        await conn.close()
    return report._replace(elapsed_s=time.perf_counter() - started)


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT coalesce(max(id), 0) + 1 FROM {table}"))


async def _load(conn: asyncpg.Connection, dsn: str, n: int, saved: seed_keys.Saved, bar: _Progress) -> SeedReport:
    # A crash before the commit is flushed loses only a seed that can be run again.
    for setting in ("synchronous_commit = off", "maintenance_work_mem = '512MB'", "jit = off"):
        await conn.execute(f"SET LOCAL {setting}")
    ids = {t: await _next_id(conn, t) for t in ("candidates", "educations", "registrations", "exam_sites")}
    now = datetime.now(UTC)
    spec_a, spec_b = exam_specs(now)
    exam_a, exam_b = await insert_exam(conn, spec_a), await insert_exam(conn, spec_b)
    sites = demo_sites(n)
    await insert_sites(conn, exam_a, sites, ids["exam_sites"])
    await insert_sites(conn, exam_b, sites, ids["exam_sites"] + len(sites))
    await seed_lifecycle.apply(conn, [exam_a, exam_b], exam_b, n)

    # Where each table's rows are computed: "copy" by a second session, streamed into a COPY here
    # while this session inserts; "insert" by this session itself (INSERT … SELECT). The split keeps
    # both cores busy: this session starts on tickets while the other computes candidates.
    plan = [
        ("insert", sq.TICKETS, (ids["registrations"], exam_a, spec_a.ticket_print_opens_at)),
        ("copy", sq.CANDIDATES, (ids["candidates"], SEED_PASSWORD_HASH, SEED_SECURITY_ANSWER_HASH,
                                 seed_data.CREATED_EPOCH, [int(d) for d in seed_data.BIRTH_DATE_DIGITS],
                                 list(seed_data.BIRTH_DATE_WEIGHTED))),
        ("copy", sq.REGISTRATIONS, (ids["candidates"], ids["registrations"], exam_a,
                                    spec_a.registration_opens_at, spec_a.exam_day.year)),
        ("copy", sq.SCORES, (ids["registrations"], exam_a)),
        ("insert", sq.EDUCATIONS, (ids["candidates"], ids["educations"], now.year - 1)),
    ]  # fmt: skip
    await _fill(conn, dsn, n, plan, lambda session: sq.create_room_map(session, sites, ids["exam_sites"]), bar)
    await _finish(conn, saved, bar)
    await seed_photos.give_photos(conn, SEEDED_USERNAME_PATTERN)
    return SeedReport(n, n, n, n, 2 * n, 2 * len(sites), {EXAM_A_CODE: exam_a, EXAM_B_CODE: exam_b}, False, 0.0)


async def _fill(
    conn: asyncpg.Connection,
    dsn: str,
    n: int,
    plan: Sequence[tuple[str, sq.DerivedTable, tuple[object, ...]]],
    setup: Callable[[asyncpg.Connection], Awaitable[None]],
    bar: _Progress,
) -> None:
    streamed = [(table.query, (0, n, *args)) for how, table, args in plan if how == "copy"]
    producer = await asyncpg.connect(dsn, command_timeout=None)
    rows = QueryStream(producer, streamed, setup=setup)
    try:
        rows.start()
        await setup(conn)
        pos = 0
        for how, table, args in plan:
            if how == "copy":
                await conn.copy_to_table(
                    table.table, source=rows.rows(pos), columns=list(table.columns), format="binary"
                )
                pos += 1
            else:
                await conn.execute(table.insert, 0, n, *args)
            bar.advance(table.table)
    finally:
        await rows.close()
        if not producer.is_closed():
            await producer.close()


async def _finish(conn: asyncpg.Connection, saved: seed_keys.Saved, bar: _Progress) -> None:
    await seed_keys.restore(conn, saved, lambda fraction: bar.advance("keys", fraction))
    for table in ("candidates", "educations", "registrations", "exam_sites"):
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    await conn.execute("ANALYZE exams, exam_sites, candidates, educations, registrations, admission_tickets, scores")
    bar.finish()
