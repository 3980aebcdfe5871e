"""Exams of one family over the years, candidates registered in them and their scores, written straight to
PostgreSQL for the validity tests (core and gateway)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncpg

from core.timeutil import utcnow

SUBJECTS = ("101", "102", "103", "104")
NAMES = {"101": "经济基础知识", "102": "金融专业知识和实务", "103": "财务会计", "104": "职业道德"}
# The exam open for registration now is of this year (Asia/Shanghai): next year's, so "now" never crosses it.
THIS_YEAR = utcnow().year + 1


def family_code() -> str:
    """A family of its own for one test."""
    return "F" + secrets.token_hex(4).upper()


async def make_family_exam(pg: asyncpg.Connection | asyncpg.Pool, family: str, year: int, *,
                           released: bool = True) -> int:
    """An exam of ``family`` held on 20 May of ``year``: one level (mid), one specialty (fin) taking the four
    SUBJECTS (pass mark 60), one site in province 11; open for registration now, its scores released or not."""
    now = utcnow()
    code = f"V-{secrets.token_hex(4)}"
    starts = datetime(year, 5, 20, 1, 0, tzinfo=UTC)
    exam_id = await pg.fetchval(
        """INSERT INTO exams (code, name, family, registration_opens_at, registration_closes_at,
               ticket_print_opens_at, ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 5600) RETURNING id""",
        code, f"{year}年度测试考试", family, now - timedelta(hours=1), now + timedelta(days=10),
        now - timedelta(hours=1), now + timedelta(days=1), starts,
        now - timedelta(minutes=1) if released else now + timedelta(days=30))
    await pg.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级')", exam_id)
    await pg.execute("INSERT INTO exam_specialties (exam_id, level_code, code, name) VALUES ($1, 'mid', 'fin', '金融')",
                     exam_id)
    for position, code in enumerate(SUBJECTS):
        await pg.execute("""INSERT INTO exam_subjects (exam_id, code, name, starts_at, ends_at, position)
                            VALUES ($1, $2, $3, $4, $5, $6)""",
                         exam_id, code, NAMES[code], starts + timedelta(hours=3 * position),
                         starts + timedelta(hours=3 * position + 2), position)
        await pg.execute("""INSERT INTO exam_specialty_subjects (exam_id, level_code, specialty_code, subject_code)
                            VALUES ($1, 'mid', 'fin', $2)""", exam_id, code)
    await pg.execute("""INSERT INTO exam_sites (exam_id, province, city, name, address, capacity, rooms)
                        VALUES ($1, '11', '测试市', '第1考点', '测试路 1 号', 60, 2)""", exam_id)
    return int(exam_id)


async def make_candidate(pg: asyncpg.Connection | asyncpg.Pool) -> int:
    """A candidate who accepted the agreement in force (if any)."""
    tag = secrets.token_hex(5)
    return int(await pg.fetchval(
        """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                   security_question, security_answer_hash, agreement_version)
           VALUES ('v' || $1, 'x', '王五', 'passport', 'P' || upper($1), '13' || lpad($2::int::text, 9, '0'),
                   'v' || $1 || '@example.com', 'q', 'x',
                   (SELECT max(version) FROM account_documents WHERE kind = 'agreement'))
           RETURNING id""", tag, secrets.randbelow(900_000_000)))


async def sit(pg: asyncpg.Connection | asyncpg.Pool, candidate_id: int, exam_id: int,
              scores: dict[str, float]) -> int:
    """A paid registration of the candidate in the exam for the subjects scored, with a ticket and the scores."""
    registration_id = await pg.fetchval(
        """INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code, subjects,
                                      work_years, status, site_id)
           SELECT $1, $2, '11', '测试市', 'mid', 'fin', $3, 5, 'paid', s.id FROM exam_sites s WHERE s.exam_id = $2
           RETURNING id""", candidate_id, exam_id, sorted(scores))
    site_id = await pg.fetchval("SELECT site_id FROM registrations WHERE id = $1", registration_id)
    await pg.execute("""INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no)
                        SELECT $1, $2, $3, $4, 1, count(*) + 1 FROM admission_tickets WHERE site_id = $4""",
                     f"{exam_id:05d}{registration_id:010d}", registration_id,
                     exam_id, site_id)
    for code, score in scores.items():
        await pg.execute("INSERT INTO scores (registration_id, exam_id, subject_code, score) VALUES ($1, $2, $3, $4)",
                         registration_id, exam_id, code, score)
    return int(registration_id)


async def set_validity(pg: asyncpg.Connection | asyncpg.Pool, family: str, years: int) -> None:
    """The family's validity period."""
    await pg.execute("""INSERT INTO exam_families (family, name, validity_years) VALUES ($1, $1, $2)
                        ON CONFLICT (family) DO UPDATE SET validity_years = excluded.validity_years""", family, years)
