"""Rolling score validity and the archive of old candidates (网报档案库).

1. **Family.** Exams of one qualification over the years form a family (``exams.family``; an exam
   without one is a family of its own, named by its code). ``exam_families.validity_years`` says for
   how many consecutive exam years a passed subject stays valid; a family without a row: 1 year.
2. **Passed.** A subject is passed when its score reaches the pass mark of the registration's
   level (``pass_marks``), else the subject's own ``exam_subjects.pass_mark``.
3. **Valid.** A subject passed in the exam of year ``Y`` is valid until ``Y + validity_years - 1``:
   for an exam of year ``T`` of the family, the earlier passes with ``Y >= T - validity_years + 1`` count.
4. **Carried.** A candidate enrolling does not take a subject again while a pass of it is valid
   (``SubjectsStillValid``); an expired one is offered again.
5. **Qualified.** Every subject of a level's specialty passed within one validity window: the
   passes that count for one exam all lie in the window ending with its year, so the candidate
   qualifies once each subject of the specialty has one.
6. **Archive number.** The first registration of a candidate in a family gets the family's archive
   number in the same statement that writes the registration (``core.registrations``):
   ``<family><year><8-digit sequence>``, e.g. ``JJS202600000042``, the year of that first exam and
   the number from ``archive_no_seq``; one per candidate and family (the primary key), however many
   first registrations race.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from core.catalogue import Exam
from core.errors import CoreError, storage_errors

__all__ = [
    "Pass", "Qualification", "SubjectsStillValid",
    "archive_no", "check_not_carried", "earlier_passes", "pass_json", "passes_in_exam",
    "qualification_json", "qualifications", "valid_until",
]  # fmt: skip

PG = asyncpg.Pool | asyncpg.Connection


class Pass(NamedTuple):
    """A subject passed in an exam of the family, with the year it was passed and until when it counts."""

    subject: str
    level: str
    exam_id: int
    year: int
    score: float
    pass_mark: float
    valid_until: int


@dataclass(frozen=True, slots=True)
class Qualification:
    """A specialty of a level whose every subject is passed within one validity window."""

    level: str
    specialty: str
    passes: tuple[Pass, ...]  # one per subject of the specialty, in the catalogue's order


class SubjectsStillValid(CoreError):
    """The enrolment asks for subjects the candidate passed and that are still valid (HTTP 422)."""

    code = "subjects_still_valid"

    def __init__(self, exam: Exam, passes: list[Pass]) -> None:
        self.exam_id = exam.id
        self.passes = passes
        names = "、".join(
            f"{exam.subjects[p.subject].name if p.subject in exam.subjects else p.subject}"
            f"（{p.year}年通过，有效至{p.valid_until}年）" for p in passes)
        self.message = f"以下科目成绩仍在有效期内，无需重复报考：{names}"
        super().__init__(self.message)


def valid_until(year: int, validity_years: int) -> int:
    """The last exam year a subject passed in ``year`` counts for."""
    return year + validity_years - 1


# Every subject a candidate passed in the family's exams of the window before this exam (same level),
# judged by the level's pass mark of that exam; the latest pass per level and subject.
_PASSES = """
SELECT DISTINCT ON (r.level_code, sc.subject_code) sc.subject_code, r.level_code, e.id AS exam_id,
       extract(year FROM e.exam_starts_at AT TIME ZONE 'Asia/Shanghai')::int AS year,
       sc.score, coalesce(pm.pass_mark, es.pass_mark) AS pass_mark
  FROM registrations r
  JOIN exams e ON e.id = r.exam_id
  JOIN scores sc ON sc.registration_id = r.id
  JOIN exam_subjects es ON es.exam_id = sc.exam_id AND es.code = sc.subject_code
  LEFT JOIN pass_marks pm ON pm.exam_id = sc.exam_id AND pm.level_code = r.level_code
                         AND pm.subject_code = sc.subject_code
 WHERE {who} AND r.exam_id <> $2 AND coalesce(e.family, e.code) = $3
   AND extract(year FROM e.exam_starts_at AT TIME ZONE 'Asia/Shanghai')::int BETWEEN $4 AND $5
   AND sc.score >= coalesce(pm.pass_mark, es.pass_mark)
 ORDER BY r.level_code, sc.subject_code, year DESC, e.exam_starts_at DESC
"""
_BY_CANDIDATE = _PASSES.format(who="r.candidate_id = $1")
# The candidate's passes in this exam itself (scores released or not: the caller decides what to show).
_IN_EXAM = """
SELECT sc.subject_code, r.level_code, e.id AS exam_id,
       extract(year FROM e.exam_starts_at AT TIME ZONE 'Asia/Shanghai')::int AS year,
       sc.score, coalesce(pm.pass_mark, es.pass_mark) AS pass_mark
  FROM registrations r
  JOIN exams e ON e.id = r.exam_id
  JOIN scores sc ON sc.registration_id = r.id
  JOIN exam_subjects es ON es.exam_id = sc.exam_id AND es.code = sc.subject_code
  LEFT JOIN pass_marks pm ON pm.exam_id = sc.exam_id AND pm.level_code = r.level_code
                         AND pm.subject_code = sc.subject_code
 WHERE r.candidate_id = $1 AND r.exam_id = $2 AND sc.score >= coalesce(pm.pass_mark, es.pass_mark)
 ORDER BY r.level_code, sc.subject_code
"""


def _passes(rows: Iterable[asyncpg.Record], exam: Exam) -> list[Pass]:
    return [Pass(row["subject_code"], row["level_code"], row["exam_id"], row["year"], float(row["score"]),
                 float(row["pass_mark"]), valid_until(row["year"], exam.validity_years)) for row in rows]


def _window(exam: Exam) -> tuple[int, int]:
    return exam.year - exam.validity_years + 1, exam.year


async def earlier_passes(pg: PG, candidate_id: int, exam: Exam) -> list[Pass]:
    """The candidate's passes in other exams of ``exam``'s family still valid for it, by subject code."""
    async with storage_errors():
        rows = await pg.fetch(_BY_CANDIDATE, candidate_id, exam.id, exam.family_code, *_window(exam))
    return _passes(rows, exam)


async def passes_in_exam(pg: PG, candidate_id: int, exam: Exam) -> list[Pass]:
    """The candidate's passes in ``exam`` itself (judged by the level's pass mark)."""
    async with storage_errors():
        rows = await pg.fetch(_IN_EXAM, candidate_id, exam.id)
    return _passes(rows, exam)


def check_not_carried(exam: Exam, level: str, subjects: Iterable[str], passes: Iterable[Pass]) -> None:
    """``SubjectsStillValid`` naming each chosen subject of ``level`` with a pass still valid for ``exam``."""
    valid = {p.subject: p for p in passes if p.level == level}
    refused = [valid[code] for code in subjects if code in valid]
    if refused:
        raise SubjectsStillValid(exam, refused)


def qualifications(exam: Exam, passes: Iterable[Pass], level: str | None = None) -> list[Qualification]:
    """The specialties (of ``level``, or every level) whose every subject has a pass among ``passes``.

    ``passes`` are the ones that count for ``exam`` (earlier valid ones and this exam's own): all within
    the window ending with the exam's year.
    """
    by_level: dict[str, dict[str, Pass]] = {}
    for found in passes:
        best = by_level.setdefault(found.level, {}).get(found.subject)
        if best is None or found.year > best.year:
            by_level[found.level][found.subject] = found
    result = []
    for code_of_level, specialties in exam.specialty_sets.items():
        if (level is not None and code_of_level != level) or code_of_level not in by_level:
            continue
        have = by_level[code_of_level]
        for specialty, codes in specialties:
            if codes and len(codes) <= len(have) and all(code in have for code in codes):
                result.append(Qualification(code_of_level, specialty, tuple(have[code] for code in codes)))
    return result


async def archive_no(pg: PG, candidate_id: int, exam: Exam) -> str | None:
    """The candidate's archive number in ``exam``'s family, or None (never registered in the family)."""
    async with storage_errors():
        found: str | None = await pg.fetchval(
            "SELECT archive_no FROM archive_numbers WHERE candidate_id = $1 AND family = $2",
            candidate_id, exam.family_code)
    return found


# -- answers ---------------------------------------------------------------------------------------


def pass_json(exam: Exam, found: Pass) -> dict[str, Any]:
    """A pass as the API shows it, the subject named from ``exam``'s catalogue."""
    subject = exam.subjects.get(found.subject)
    return {"code": found.subject, "name": subject.name if subject else found.subject, "level": found.level,
            "exam_id": found.exam_id, "year": found.year, "score": found.score, "pass_mark": found.pass_mark,
            "valid_until": found.valid_until}


def qualification_json(exam: Exam, found: Qualification) -> dict[str, Any]:
    """A qualification as the API shows it: the level, the specialty and each subject's pass."""
    return {"level": found.level, "specialty": found.specialty,
            "subjects": [pass_json(exam, p) for p in found.passes]}
