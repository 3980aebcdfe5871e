"""Files and rows for the catalogue kinds' tests: exam lines, CSV bodies, candidates with registrations."""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from core import db
from core.imports import ImportResult, run_import
from core.timeutil import SHANGHAI, utcnow
from tests.factories import phone_block

CSV = "text/csv"
NDJSON = "application/x-ndjson"
ACTOR = "importer"


async def open_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool with the project's codecs (for a fixture)."""
    pool = await db.create_pool(db.PoolSettings(dsn, min_size=1, max_size=4))
    try:
        yield pool
    finally:
        await pool.close()


def new_code(prefix: str = "IMP") -> str:
    """An exam code no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def batch() -> str:
    """A fresh batch id."""
    return f"t-{secrets.token_hex(6)}"


def iso(moment: datetime) -> str:
    """ISO-8601 with the +08:00 offset, as operators' files carry times."""
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


def exam_line(code: str, *, start: datetime | None = None, **changes: Any) -> dict[str, Any]:
    """A valid exam: registration open now, two levels, three specialties, four subjects, two review rules.

    ``start`` is the exam's first paper (default 40 days from now); ``changes`` replace top-level fields.
    """
    day = start or (utcnow() + timedelta(days=40)).replace(hour=1, minute=0, second=0, microsecond=0)
    now = day - timedelta(days=40)
    line: dict[str, Any] = {
        "code": code,
        "name": f"导入测试考试 {code}",
        "family": None,
        "windows": {
            "registration_opens_at": iso(now - timedelta(hours=1)),
            "registration_closes_at": iso(now + timedelta(days=20)),
            "ticket_print_opens_at": iso(day - timedelta(days=7)),
            "ticket_print_closes_at": iso(day + timedelta(days=2)),
            "exam_starts_at": iso(day),
            "score_release_at": iso(day + timedelta(days=60)),
            "score_review_opens_at": iso(day + timedelta(days=60)),
            "score_review_closes_at": iso(day + timedelta(days=67)),
        },
        "fee_per_subject_fen": 5600,
        "levels": [
            {"code": "CJ", "name": "初级", "specialties": [
                {"code": "JR", "name": "金融", "subjects": ["CJ01", "CJ11"]},
            ]},
            {"code": "ZJ", "name": "中级", "specialties": [
                {"code": "JR", "name": "金融", "subjects": ["ZJ01", "ZJ11"]},
                {"code": "GS", "name": "工商管理", "subjects": ["ZJ01"]},
            ]},
        ],
        "subjects": [
            {"code": "CJ01", "name": "经济基础知识（初级）", "starts_at": iso(day + timedelta(days=1)),
             "ends_at": iso(day + timedelta(days=1, hours=1, minutes=30)), "full_mark": 140, "pass_mark": 84},
            {"code": "CJ11", "name": "金融专业知识和实务（初级）", "starts_at": iso(day + timedelta(days=1, hours=5)),
             "ends_at": iso(day + timedelta(days=1, hours=7, minutes=30)), "full_mark": 140, "pass_mark": 84},
            {"code": "ZJ01", "name": "经济基础知识（中级）", "starts_at": iso(day),
             "ends_at": iso(day + timedelta(hours=1, minutes=30)), "full_mark": 140, "pass_mark": 84},
            {"code": "ZJ11", "name": "金融专业知识和实务（中级）", "starts_at": iso(day + timedelta(hours=5)),
             "ends_at": iso(day + timedelta(hours=7, minutes=30))},
        ],
        "review_rules": [
            {"province": "11", "review_mode": "auto", "manual_mode": "online", "commitment": True,
             "withdraw_rule": "until_payment"},
            {"province": "37", "review_mode": "onsite", "manual_mode": "onsite", "commitment": False,
             "withdraw_rule": "until_review"},
        ],
    }
    line.update(changes)
    return line


def closed_exam_line(code: str, **changes: Any) -> dict[str, Any]:
    """``exam_line`` with its registration closed ten days ago (the exam in ten days)."""
    start = (utcnow() + timedelta(days=10)).replace(hour=1, minute=0, second=0, microsecond=0)
    return exam_line(code, start=start, **changes)


def ndjson(*lines: dict[str, Any] | str) -> bytes:
    """An NDJSON body; a str is written as it is (for broken lines)."""
    return b"".join((line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines)


def csv_body(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A CSV body with a header row; None is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode()


async def imported(pool: asyncpg.Pool, kind: str, data: bytes, *, content_type: str = CSV,
                   batch_id: str | None = None, hooks: dict[str, Any] | None = None) -> ImportResult:
    """Run an import of ``data`` as a fresh (or the given) batch."""
    return await run_import(pool, kind, data, content_type=content_type, batch_id=batch_id or batch(), actor=ACTOR,
                            hooks=hooks)


async def make_registrations(pg: asyncpg.Pool | asyncpg.Connection, exam_id: int, count: int, *,
                             level: str = "ZJ", specialty: str = "JR", subjects: Sequence[str] = ("ZJ01", "ZJ11"),
                             site_id: int | None = None, status: str = "approved") -> list[int]:
    """``count`` candidates, each with a registration of the exam in ``status``; the registration ids."""
    tag = secrets.token_hex(4)
    rows = await pg.fetch(
        """WITH c AS (
               INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               SELECT 'u' || $1 || '-' || g, 'x', '考生' || g, 'passport', 'P' || upper($1) || g,
                      '19' || lpad(($2 + g)::text, 9, '0'), 'c' || $1 || g || '@example.com', 'q', 'x'
                 FROM generate_series(1, $3::int) AS g
               RETURNING id)
           INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code, subjects,
                                      work_years, status, site_id)
           SELECT c.id, $4, '11', '北京市', $5, $6, $7, 5, $8, $9 FROM c RETURNING id""",
        tag, await phone_block(pg, count), count, exam_id, level, specialty, list(subjects), status, site_id)
    return sorted(row["id"] for row in rows)
