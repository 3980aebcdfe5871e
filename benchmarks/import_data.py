"""An exam with N paid registrations and their admission tickets, written in a few set-based statements.

Used by the imports benchmark (a million tickets in well under a minute) and by the import tests
(a handful). Every candidate, ticket and phone carries a random tag, so several exams live side by
side in one database. Ticket i (1-based) is ``ticket_no(tag, i)``, held by ``id_number(tag, i)``;
every registration takes subjects 101 and 102 of level ``mid``; subject 103 (full mark 150) and
level ``adv`` exist in the exam but nobody takes them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from core.timeutil import utcnow

__all__ = ["ScoredExam", "id_number", "make_exam_with_tickets", "score_csv", "ticket_no"]


@dataclass(frozen=True)
class ScoredExam:
    """The exam made: its id and code, the tag its tickets carry, how many tickets."""

    exam_id: int
    code: str
    tag: str
    tickets: int


def ticket_no(tag: str, i: int) -> str:
    """The admission ticket number of registration ``i`` (1-based)."""
    return f"T{tag}{i:09d}"


def id_number(tag: str, i: int) -> str:
    """The id number of registration ``i``'s candidate."""
    return f"P{tag}{i:09d}"


async def make_exam_with_tickets(conn: asyncpg.Connection, tickets: int) -> ScoredExam:
    """Create an exam, ``tickets`` candidates, their paid registrations and admission tickets."""
    tag = secrets.token_hex(3).upper()
    code = f"IMP{tag}"
    now = utcnow()
    exam_id = await conn.fetchval(
        """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at,
               ticket_print_opens_at, ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 5600) RETURNING id""",
        code, f"导入测试考试 {code}", now - timedelta(days=90), now - timedelta(days=60),
        now - timedelta(days=40), now - timedelta(days=30), now - timedelta(days=30), now + timedelta(days=1))
    await conn.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级'), ($1, 'adv', '高级')",
                       exam_id)
    await conn.execute(
        "INSERT INTO exam_specialties (exam_id, level_code, code, name) VALUES ($1, 'mid', 'fin', '金融')", exam_id)
    for position, (subject, name, full_mark) in enumerate(
            [("101", "经济基础知识", 100), ("102", "金融专业知识和实务", 100), ("103", "高级实务", 150)]):
        starts = now - timedelta(days=30, hours=-position * 3)
        await conn.execute(
            """INSERT INTO exam_subjects (exam_id, code, name, starts_at, ends_at, position, full_mark, pass_mark)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            exam_id, subject, name, starts, starts + timedelta(hours=2), position, full_mark, full_mark * 0.6)
    await conn.execute(
        "INSERT INTO exam_specialty_subjects (exam_id, level_code, specialty_code, subject_code)"
        " VALUES ($1, 'mid', 'fin', '101'), ($1, 'mid', 'fin', '102')", exam_id)
    rooms = max(1, -(-tickets // 30))
    site_id = await conn.fetchval(
        """INSERT INTO exam_sites (exam_id, province, city, name, address, capacity, rooms)
           VALUES ($1, '11', '北京市', '导入测试考点', '测试路 1 号', $2, $3) RETURNING id""",
        exam_id, max(tickets, 1), rooms)
    phone_base = secrets.randbelow(10**9 - tickets)
    async with conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE import_gen ON COMMIT DROP AS
               SELECT i, nextval('candidates_id_seq') AS cid, nextval('registrations_id_seq') AS rid
               FROM generate_series(1, $1) AS i""", tickets)
        await conn.execute(
            """INSERT INTO candidates (id, username, password_hash, name, id_type, id_number, phone, email,
                   security_question, security_answer_hash)
               SELECT cid, 'imp' || $1 || i, 'x', '考生' || i, 'passport', 'P' || $1 || lpad(i::text, 9, '0'),
                      '19' || lpad(($2 + i)::text, 9, '0'), 'imp' || i || '@example.com', '问题', 'x'
               FROM import_gen""", tag, phone_base)
        await conn.execute(
            """INSERT INTO registrations (id, candidate_id, exam_id, province, city, level_code, specialty_code,
                   subjects, work_years, status, site_id)
               SELECT rid, cid, $1, '11', '北京市', 'mid', 'fin', ARRAY['101', '102'], 5, 'paid', $2
               FROM import_gen""", exam_id, site_id)
        await conn.execute(
            """INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no)
               SELECT 'T' || $1 || lpad(i::text, 9, '0'), rid, $2, $3, (i - 1) / 30 + 1, (i - 1) % 30 + 1
               FROM import_gen""", tag, exam_id, site_id)
    await conn.execute("ANALYZE candidates, registrations, admission_tickets")
    return ScoredExam(int(exam_id), code, tag, tickets)


def score_csv(exam: ScoredExam, rows: range, *, subject: str = "101", offset: float = 0.0) -> bytes:
    """A scores CSV: one row per ticket in ``rows`` (1-based), score (i * 7 + offset) mod 100, one decimal."""
    out = ["exam_code,ticket_no,id_number,subject_code,score"]
    code, tag = exam.code, exam.tag
    for i in rows:
        out.append(f"{code},T{tag}{i:09d},P{tag}{i:09d},{subject},{(i * 7 + offset) % 100:.1f}")
    return ("\n".join(out) + "\n").encode()
