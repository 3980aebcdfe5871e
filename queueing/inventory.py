"""Seat inventory in Redis, rebuilt from PostgreSQL (the source of truth) when missing."""

from __future__ import annotations

from typing import Any

import asyncpg

from core.catalogue import Exam
from queueing import keys

# Registrations in these states occupy their site's seat when PostgreSQL records one (every state
# but the two final ones: a withdrawn registration's release reaches PostgreSQL through the write-behind).
SEAT_TAKING_STATUSES = ("draft", "under_review", "onsite_review", "approved", "rejected", "paid")


async def taken_seats(conn: asyncpg.Connection | asyncpg.Pool, exam_id: int) -> dict[int, int]:
    """Seats occupied per site of an exam, according to PostgreSQL."""
    rows = await conn.fetch(
        """SELECT site_id, count(*) AS taken FROM registrations
           WHERE exam_id = $1 AND site_id IS NOT NULL AND status = ANY($2::text[])
           GROUP BY site_id""",
        exam_id,
        list(SEAT_TAKING_STATUSES),
    )
    return {row["site_id"]: row["taken"] for row in rows}


async def ensure_inventory(conn: asyncpg.Connection | asyncpg.Pool, redis: Any, exam: Exam) -> int:
    """Create missing ``site_left`` keys of an exam from PostgreSQL; existing keys are left alone.

    ``redis`` is a redis-py asyncio client. Returns how many keys were created.
    """
    if not exam.sites:
        return 0
    taken = await taken_seats(conn, exam.id)
    created = 0
    async with redis.pipeline(transaction=False) as pipe:
        for site in exam.sites.values():
            pipe.set(keys.site_left(exam.id, site.id), max(0, site.capacity - taken.get(site.id, 0)), nx=True)
        for was_set in await pipe.execute():
            created += bool(was_set)
    return created
