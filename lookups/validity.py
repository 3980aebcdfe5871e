"""The score lookup's pass marks, years and validity (``core.validity``), from the catalogue and the record.

1. **Level.** The record names the registration's subjects, not its level: the level is the one whose
   specialties take every one of them (a level's papers are its own in every exam seen so far). When
   no single level does, each subject is judged by its own pass mark.
2. **Passed.** Each subject against the level's published pass mark (``pass_marks``), else the
   subject's own; a passed subject shows the exam's year and ``valid_until`` (year + validity − 1).
3. **Qualified.** Decided from the record alone when this exam's passes cover a specialty of the
   level, or when a subject of this exam failed (enrolment refuses a subject still valid, so a failed
   one has no valid earlier pass to stand in for it). Otherwise — every subject taken passed, some of the
   specialty not taken — the candidate's earlier passes in the family decide: one indexed query (the
   candidate found by the record's ticket: an id number is unique only with its document type), kept
   in Redis for ``EARLIER_TTL_S`` under ``eg:vd:<exam>:<ticket number>``, so PostgreSQL sees at most one
   per such candidate and minute. The minute is also how long a correction of an earlier exam's score or
   pass marks takes to reach this answer (nothing else removes the key: the candidate's later exams are
   not known to a correction's hook). Should PostgreSQL not answer, ``qualified`` is null and the scores
   are answered all the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson

from core.catalogue import Exam
from core.errors import StorageUnavailable
from core.redis import REDIS_DOWN, AutoPipeline
from core.validity import Pass, earlier_passes_by_ticket, pass_json, qualification_json, qualifications, valid_until
from lookups.records import Record

__all__ = ["EARLIER_TTL_S", "earlier_key", "level_of", "needs_earlier", "own_passes", "with_validity",
           "cached_earlier_passes"]

EARLIER_TTL_S = 60


def earlier_key(exam_id: int, ticket_no: str) -> str:
    """Where the earlier passes counting for an exam of its ticket's holder are kept (a JSON list of ``Pass`` rows)."""
    return f"eg:vd:{exam_id}:{ticket_no}"


def level_of(exam: Exam, subjects: Iterable[str]) -> str | None:
    """The one level whose specialties take all of ``subjects``, or None (none, or more than one)."""
    wanted = frozenset(subjects)
    found = [level for level in exam.specialty_sets if wanted <= exam.level_subjects(level)]
    return found[0] if len(found) == 1 else None


def own_passes(exam: Exam, record: Record, level: str | None) -> tuple[list[Pass], bool]:
    """This exam's passes in the record, and whether every subject with a score passed."""
    passes, all_passed = [], True
    for code, raw in record.scores.items():
        mark = exam.level_pass_mark(level, code)
        score = float(raw)
        if mark is not None and score >= mark and level is not None:
            passes.append(Pass(code, level, exam.id, exam.year, score, mark,
                               valid_until(exam.year, exam.validity_years)))
        elif mark is None or score < mark:
            all_passed = False
    return passes, all_passed


def needs_earlier(exam: Exam, record: Record, level: str | None) -> bool:
    """Whether the earlier passes could change the answer's ``qualified`` (point 3 above)."""
    if level is None:
        return False
    passes, all_passed = own_passes(exam, record, level)
    return all_passed and not qualifications(exam, passes, level)


async def cached_earlier_passes(redis: AutoPipeline, pg: asyncpg.Pool, exam: Exam,
                                ticket_no: str) -> list[Pass] | None:
    """The earlier passes counting for ``exam`` of the holder of ``ticket_no`` (the record's), from Redis or else
    PostgreSQL (None: it did not answer)."""
    key = earlier_key(exam.id, ticket_no)
    cached: bytes | None = None
    with contextlib.suppress(*REDIS_DOWN):
        cached = await redis.execute(b"GET", key)
    if cached is not None:
        return [Pass(*row) for row in orjson.loads(cached)]
    try:
        found = await earlier_passes_by_ticket(pg, ticket_no, exam)
    except StorageUnavailable:
        return None
    with contextlib.suppress(*REDIS_DOWN):
        await redis.execute(b"SET", key, orjson.dumps([list(p) for p in found]), b"EX", EARLIER_TTL_S)
    return found


def with_validity(answer: dict[str, Any], exam: Exam, record: Record, level: str | None,
                  earlier: list[Pass] | None) -> dict[str, Any]:
    """The score lookup's ``answer`` judged by the level's pass marks, with years, validity and qualification.

    ``earlier`` None with ``needs_earlier`` true: unknown, ``qualified`` is null.
    """
    until = valid_until(exam.year, exam.validity_years)
    for subject in answer["subjects"]:
        mark = exam.level_pass_mark(level, subject["code"])
        subject["pass_mark"] = mark
        subject["passed"] = mark is not None and subject["score"] >= mark
        subject["year"] = exam.year
        subject["valid_until"] = until if subject["passed"] else None
    answer["passed_all"] = all(subject["passed"] for subject in answer["subjects"])
    answer.update(level=level, year=exam.year, validity_years=exam.validity_years)
    passes, all_passed = own_passes(exam, record, level)
    counted = passes + [p for p in earlier or () if p.level == level and p.subject not in record.scores]
    found = qualifications(exam, counted, level) if level is not None else []
    # Unknown: the earlier passes were needed (everything taken passed, no specialty complete) and not read.
    unknown = not found and earlier is None and level is not None and all_passed
    answer["qualified"] = None if unknown else bool(found)
    answer["qualification"] = qualification_json(exam, found[0]) if found else None
    answer["carried"] = [pass_json(exam, p) for p in counted if p.exam_id != exam.id]
    return answer
