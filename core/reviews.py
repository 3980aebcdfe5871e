"""What operators read to review registrations: the queue, one registration with the candidate's education, the reasons.

Reads only; the decisions are ``core.lifecycle.decide``. A scope (a set of province codes, None
for national) filters every read, so a province's reviewer never sees another's registrations.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from core.db import Conn
from core.errors import storage_errors
from core.qualification import Reason
from core.timeutil import iso_local

__all__ = ["REVIEW_REASONS", "details", "masked_id", "queue", "reasons_of"]

PG = asyncpg.Pool | Conn

# The reasons an operator picks from; anything else they type is kept as ``other`` with their words.
REVIEW_REASONS = {
    "education_insufficient": "学历或相关工作年限不符合报考条件",
    "major_unrelated": "所学专业与报考专业不符",
    "materials_incomplete": "证明材料不全或不清晰",
    "information_inconsistent": "填报信息与证明材料不一致",
    "integrity_record": "在诚信档案库记录期内",
}
REASON_MAX_CHARS = 200


def reasons_of(items: Sequence[str]) -> list[Reason]:
    """Reason codes from the list, or an operator's own words (kept as ``other``)."""
    found = []
    for item in items:
        text = " ".join(item.split())
        found.append(Reason(text, REVIEW_REASONS[text]) if text in REVIEW_REASONS else Reason("other", text))
    return found


def masked_id(id_number: str) -> str:
    """An id number as operators' lists show it: the first and last four characters."""
    return id_number[:4] + "*" * max(0, len(id_number) - 8) + id_number[-4:] if len(id_number) > 8 else id_number


_QUEUE = """
SELECT r.id, r.exam_id, r.province, r.city, r.level_code, r.specialty_code, r.subjects, r.work_years, r.status,
       r.version, r.reasons, r.review_mode, r.review_point_id, r.submitted_at, c.name, c.id_number
  FROM registrations r JOIN candidates c ON c.id = r.candidate_id
 WHERE r.status = ANY($1::text[])
   AND ($2::bigint IS NULL OR r.exam_id = $2) AND ($3::text IS NULL OR r.province = $3)
   AND ($4::bigint IS NULL OR r.review_point_id = $4) AND ($5::text[] IS NULL OR r.province = ANY($5))
   AND r.id > $6
 ORDER BY r.id LIMIT $7
"""


def _row(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "registration_id": row["id"], "exam_id": row["exam_id"], "province": row["province"], "city": row["city"],
        "level": row["level_code"], "specialty": row["specialty_code"], "subjects": list(row["subjects"]),
        "work_years": row["work_years"], "status": row["status"], "version": row["version"],
        "reasons": row["reasons"], "review_mode": row["review_mode"],
        "review_point": row["review_point_id"],
        "submitted_at": None if row["submitted_at"] is None else iso_local(row["submitted_at"]),
        "candidate_name": row["name"], "id_number": masked_id(row["id_number"]),
    }


async def queue(pg: PG, *, statuses: Collection[str], exam_id: int | None, province: str | None,
                review_point: int | None, scope: Collection[str] | None, after: int = 0,
                limit: int = 50) -> list[dict[str, Any]]:
    """A page of registrations in ``statuses``, by id after ``after``, within ``scope``."""
    async with storage_errors():
        rows = await pg.fetch(_QUEUE, list(statuses), exam_id, province, review_point,
                              None if scope is None else sorted(scope), after, limit)
    return [_row(row) for row in rows]


async def details(pg: PG, registration_id: int, scope: Collection[str] | None) -> dict[str, Any] | None:
    """One registration with the candidate's education records; None when absent or out of scope."""
    async with storage_errors():
        row = await pg.fetchrow(_QUEUE.replace("AND r.id > $6", "AND r.id = $6"),
                                ["draft", "under_review", "onsite_review", "approved", "rejected", "paid",
                                 "cancelled", "expired"], None, None, None,
                                None if scope is None else sorted(scope), registration_id, 1)
        if row is None:
            return None
        educations = await pg.fetch("""SELECT e.level, e.major, e.school, e.graduated_on, e.cert_no, e.mode
                                         FROM educations e JOIN registrations r ON r.candidate_id = e.candidate_id
                                        WHERE r.id = $1 ORDER BY e.graduated_on""", registration_id)
        commitment = await pg.fetchrow("""SELECT version, signed_at, address FROM registration_commitments
                                          WHERE registration_id = $1 AND withdrawn_at IS NULL""", registration_id)
    found = _row(row)
    found["educations"] = [{**dict(e), "graduated_on": e["graduated_on"].isoformat()} for e in educations]
    found["commitment"] = None if commitment is None else {
        "version": commitment["version"], "signed_at": iso_local(commitment["signed_at"]),
        "address": commitment["address"]}
    return found
