"""Finding and removing earlier demo data: the demo exams and the candidates with seeded usernames.

With them go whatever references them (registrations' events, commitments, orders, refunds, …) and
the integrity records the seed wrote.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from seed.data import EXAM_A_CODE, EXAM_B_CODE, SEEDED_USERNAME_PATTERN
from seed.lifecycle import SEED_ACTOR

# Seeded usernames are "c" and seven or more digits (seed.data.SEEDED_USERNAME_PATTERN).

DEMO_EXAMS = (EXAM_A_CODE, EXAM_B_CODE)


class ExistingSeed(NamedTuple):
    """Demo data already in the database."""

    candidates: int
    educations: int
    registrations: int
    tickets: int
    scores: int
    sites: int
    exam_ids: dict[str, int]


async def existing_seed(conn: asyncpg.Connection) -> ExistingSeed | None:
    """Count the demo data present, or None when there is none."""
    rows = await conn.fetch("SELECT code, id FROM exams WHERE code = ANY($1)", DEMO_EXAMS)
    exam_ids = {r["code"]: r["id"] for r in rows}
    candidates = await conn.fetchval("SELECT count(*) FROM candidates WHERE username ~ $1", SEEDED_USERNAME_PATTERN)
    if not exam_ids and not candidates:
        return None
    ids = list(exam_ids.values())
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM educations e JOIN candidates c ON c.id = e.candidate_id
                   WHERE c.username ~ $2) AS educations,
                  (SELECT count(*) FROM registrations WHERE exam_id = ANY($1)) AS registrations,
                  (SELECT count(*) FROM admission_tickets WHERE exam_id = ANY($1)) AS tickets,
                  (SELECT count(*) FROM scores WHERE exam_id = ANY($1)) AS scores,
                  (SELECT count(*) FROM exam_sites WHERE exam_id = ANY($1)) AS sites""",
        ids,
        SEEDED_USERNAME_PATTERN,
    )
    assert row is not None  # scalar subqueries without FROM: always exactly one row
    return ExistingSeed(candidates, row["educations"], row["registrations"], row["tickets"], row["scores"],
                        row["sites"], exam_ids)  # fmt: skip


# Keep what is not demo data aside, TRUNCATE, put it back: far faster than deleting millions of
# rows whenever the keepers are few (a handful of accounts made by a load test, say).
_DEMO_CODES = ", ".join(f"'{code}'" for code in DEMO_EXAMS)
_DEMO_IDS = f"(SELECT id FROM exams WHERE code IN ({_DEMO_CODES}))"
_KEPT_REGISTRATION = "registration_id IN (SELECT id FROM seed_keep_registrations)"
# In the order rows are put back (referenced tables first); every table referencing a truncated one is here.
_KEEP = (
    ("candidates", f"SELECT * FROM candidates WHERE username !~ '{SEEDED_USERNAME_PATTERN}'"),
    ("educations", "SELECT * FROM educations WHERE candidate_id IN (SELECT id FROM seed_keep_candidates)"),
    ("photos", "SELECT * FROM photos WHERE candidate_id IN (SELECT id FROM seed_keep_candidates)"),
    ("photo_change_requests",
     "SELECT * FROM photo_change_requests WHERE candidate_id IN (SELECT id FROM seed_keep_candidates)"),
    ("photo_events", "SELECT * FROM photo_events WHERE candidate_id IN (SELECT id FROM seed_keep_candidates)"),
    ("registrations", ("SELECT * FROM registrations WHERE candidate_id IN (SELECT id FROM seed_keep_candidates)"
                       f" AND exam_id NOT IN {_DEMO_IDS}")),
    ("registration_events", f"SELECT * FROM registration_events WHERE {_KEPT_REGISTRATION}"),
    ("registration_commitments", f"SELECT * FROM registration_commitments WHERE {_KEPT_REGISTRATION}"),
    ("cancellation_requests", f"SELECT * FROM cancellation_requests WHERE {_KEPT_REGISTRATION}"),
    ("orders", f"SELECT * FROM orders WHERE {_KEPT_REGISTRATION}"),
    ("refunds", "SELECT * FROM refunds WHERE order_no IN (SELECT order_no FROM seed_keep_orders)"),
    ("refund_events", "SELECT * FROM refund_events WHERE refund_id IN (SELECT refund_id FROM seed_keep_refunds)"),
    ("admission_tickets", f"SELECT * FROM admission_tickets WHERE {_KEPT_REGISTRATION}"),
    ("scores", f"SELECT * FROM scores WHERE {_KEPT_REGISTRATION}"),
)  # fmt: skip
# The integrity records the seed wrote (operators' imports stay).
_SEEDED_RECORDS = ("DELETE FROM integrity_records WHERE created_by = $1", (SEED_ACTOR,))
_MAX_KEPT = 100_000


async def truncate_seeded(conn: asyncpg.Connection) -> bool:
    """Remove the demo data by TRUNCATE, keeping every other row; False when that is not possible.

    Call it while the foreign keys are in place: TRUNCATE then refuses (and this reports False)
    when a table outside the list references the truncated ones.
    """
    kept = await conn.fetchval("SELECT count(*) FROM candidates WHERE username !~ $1", SEEDED_USERNAME_PATTERN)
    if kept > _MAX_KEPT:
        return False
    try:
        async with conn.transaction():
            for table, query in _KEEP:
                await conn.execute(f"CREATE TEMP TABLE seed_keep_{table} ON COMMIT DROP AS {query}")
            await conn.execute(
                "DELETE FROM payment_notifications WHERE order_no IN (SELECT order_no FROM orders"
                " EXCEPT SELECT order_no FROM seed_keep_orders)"
            )
            await conn.execute("TRUNCATE " + ", ".join(table for table, _ in reversed(_KEEP)))
            # levels, subjects, sites, review points and rules, eligibility rules and texts cascade
            await conn.execute("DELETE FROM exams WHERE code = ANY($1)", list(DEMO_EXAMS))
            await conn.execute(_SEEDED_RECORDS[0], *_SEEDED_RECORDS[1])
            for table, _ in _KEEP:
                await conn.execute(f"INSERT INTO {table} SELECT * FROM seed_keep_{table}")
    except asyncpg.FeatureNotSupportedError:
        return False
    return True


_DOOMED = "(SELECT id FROM seed_doomed)"
_DOOMED_ORDER = f"order_no IN (SELECT order_no FROM orders WHERE registration_id IN {_DOOMED})"
# Run with the foreign keys dropped (no cascades, no per-row checks), so every dependent row is
# deleted explicitly; re-adding the keys afterwards proves nothing was left dangling.
_DELETES: tuple[tuple[str, tuple[object, ...]], ...] = (
    (
        """CREATE TEMP TABLE seed_doomed ON COMMIT DROP AS
           SELECT id FROM registrations
           WHERE exam_id IN (SELECT id FROM exams WHERE code = ANY($1))
              OR candidate_id IN (SELECT id FROM candidates WHERE username ~ $2)""",
        (list(DEMO_EXAMS), SEEDED_USERNAME_PATTERN),
    ),
    (f"DELETE FROM scores WHERE registration_id IN {_DOOMED}", ()),
    (f"DELETE FROM admission_tickets WHERE registration_id IN {_DOOMED}", ()),
    (
        (
            "DELETE FROM payment_notifications"
            f" WHERE order_no IN (SELECT order_no FROM orders WHERE registration_id IN {_DOOMED})"
        ),
        (),
    ),
    (f"DELETE FROM refund_events WHERE refund_id IN (SELECT refund_id FROM refunds WHERE {_DOOMED_ORDER})", ()),
    (f"DELETE FROM refunds WHERE {_DOOMED_ORDER}", ()),
    (f"DELETE FROM orders WHERE registration_id IN {_DOOMED}", ()),
    (f"DELETE FROM registration_events WHERE registration_id IN {_DOOMED}", ()),
    (f"DELETE FROM registration_commitments WHERE registration_id IN {_DOOMED}", ()),
    (f"DELETE FROM cancellation_requests WHERE registration_id IN {_DOOMED}", ()),
    (f"DELETE FROM registrations WHERE id IN {_DOOMED}", ()),
    # levels, subjects, sites, review points and rules, eligibility rules and texts cascade
    ("DELETE FROM exams WHERE code = ANY($1)", (list(DEMO_EXAMS),)),
    _SEEDED_RECORDS,
    ("DELETE FROM educations WHERE candidate_id IN (SELECT id FROM candidates WHERE username ~ $1)",
     (SEEDED_USERNAME_PATTERN,)),  # fmt: skip
    *((f"DELETE FROM {table} WHERE candidate_id IN (SELECT id FROM candidates WHERE username ~ $1)",
       (SEEDED_USERNAME_PATTERN,)) for table in ("photo_events", "photo_change_requests", "photos")),
    ("DELETE FROM candidates WHERE username ~ $1", (SEEDED_USERNAME_PATTERN,)),
)


async def delete_seeded(conn: asyncpg.Connection) -> None:
    """Delete the demo exams and seeded candidates row by row, with everything that references them."""
    for statement, args in _DELETES:
        await conn.execute(statement, *args)
