"""Small, explicit test data written straight to PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import asyncpg

from core.timeutil import utcnow
from seed.photos import demo_photo


async def make_exam(conn: asyncpg.Connection, *, sites: list[tuple[str, int]] | None = None) -> int:
    """An exam open for registration with one level, one specialty, two subjects and the given sites.

    ``sites`` is a list of (province, capacity); returns the exam id.
    """
    now = utcnow()
    code = f"T-{secrets.token_hex(4)}"
    exam_id = await conn.fetchval(
        """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at,
               ticket_print_opens_at, ticket_print_closes_at, exam_starts_at, score_release_at,
               fee_per_subject_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 5600) RETURNING id""",
        code, f"测试考试 {code}", now - timedelta(hours=1), now + timedelta(days=10),
        now + timedelta(days=20), now + timedelta(days=30), now + timedelta(days=30),
        now + timedelta(days=60),
    )
    await conn.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级')", exam_id)
    await conn.execute(
        "INSERT INTO exam_specialties (exam_id, level_code, code, name) VALUES ($1, 'mid', 'fin', '金融')", exam_id
    )
    for position, (subject, name) in enumerate([("101", "经济基础知识"), ("102", "金融专业知识和实务")]):
        starts = now + timedelta(days=30, hours=position * 3)
        await conn.execute(
            """INSERT INTO exam_subjects (exam_id, code, name, starts_at, ends_at, position)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            exam_id, subject, name, starts, starts + timedelta(hours=2, minutes=30), position,
        )
        await conn.execute(
            """INSERT INTO exam_specialty_subjects (exam_id, level_code, specialty_code, subject_code)
               VALUES ($1, 'mid', 'fin', $2)""",
            exam_id, subject,
        )
    for index, (province, capacity) in enumerate(sites or [("11", 60), ("37", 30)]):
        rooms = max(1, -(-capacity // 30))
        await conn.execute(
            """INSERT INTO exam_sites (exam_id, province, city, name, address, capacity, rooms)
               VALUES ($1, $2, '测试市', $3, '测试路 1 号', $4, $5)""",
            exam_id, province, f"第{index + 1}考点", capacity, rooms,
        )
    return int(exam_id)


async def give_approved_photos(conn: asyncpg.Connection, candidate_ids: list[int]) -> None:
    """Each candidate gets a current, approved (locked) photo, as after an upload the checks approved."""
    photo = demo_photo()
    await conn.execute("INSERT INTO photo_blobs (sha256, jpeg) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       photo.sha256, photo.jpeg)
    await conn.execute(
        """INSERT INTO photos (candidate_id, sha256, bytes, width, height, status, locked)
           SELECT c, $2, $3, $4, $5, 'approved', true FROM unnest($1::bigint[]) AS c""",
        candidate_ids, photo.sha256, len(photo.jpeg), photo.width, photo.height)


async def phone_block(conn: asyncpg.Connection | asyncpg.Pool, count: int) -> int:
    """The first of ``count`` consecutive numbers for bulk-made candidates' phones, ``19`` and nine digits:
    each block follows the last one made in this database, so two bulks never share a phone (random bases
    collided now and then over a session's thousands of candidates), and no test's random ``13…`` phone is in it."""
    try:
        await conn.execute("CREATE SEQUENCE IF NOT EXISTS test_phone_numbers")
    except asyncpg.UniqueViolationError:  # another connection made it at the same moment
        pass
    last = await conn.fetchval("SELECT setval('test_phone_numbers', nextval('test_phone_numbers') + $1::bigint - 1)",
                               count)
    return int(last) - count  # the SQL adds g = 1 … count


async def table_reads(pg: asyncpg.Connection, table: str) -> int:
    """How many times ``table`` was read (sequential and index scans), as the statistics say now."""
    await pg.execute("SELECT pg_stat_clear_snapshot()")
    return int(await pg.fetchval("SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
                                 "WHERE relname = $1", table))


async def settled_reads(pg: asyncpg.Connection, table: str) -> int:
    """``table_reads`` once the backends have flushed their statistics (at most once a second)."""
    before = -1
    reads = await table_reads(pg, table)
    while reads != before:
        await asyncio.sleep(1.2)
        before, reads = reads, await table_reads(pg, table)
    return reads
