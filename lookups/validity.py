"""The score lookup's pass marks, years and validity (``core.validity``), from the catalogue and the record.

1. **Level.** The record names the registration's subjects, not its level: the level is the one whose
   specialties take every one of them (a level's papers are its own in every exam seen so far). When
   no single level does, each subject is judged by its own pass mark.
2. **Passed.** Each subject against the level's published pass mark (``pass_marks``), else the
   subject's own; a passed subject shows the exam's year and ``valid_until`` (year + validity − 1).
3. **Qualified.** Decided from the record alone: true when this exam's passes cover a specialty of the
   level, false when a subject of this exam failed (enrolment refuses a subject still valid, so a failed
   one has no valid earlier pass to stand in for it), null otherwise — every subject taken passed, some
   of the specialty not taken — when the candidate's earlier passes in the family would decide. Those are
   not read here: at a score release this answer is the peak path, one Redis read and nothing else, and
   candidates who sit part of a specialty each year are most of a rolling exam's candidates. The signed-in
   candidate sees them, and the qualification they make, at ``GET /api/v1/exams/{id}/my-valid-subjects``
   and on the enrol page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.catalogue import Exam
from core.validity import Pass, qualification_json, qualifications, valid_until
from lookups.records import Record

__all__ = ["level_of", "own_passes", "with_validity"]


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


def with_validity(answer: dict[str, Any], exam: Exam, record: Record, level: str | None) -> dict[str, Any]:
    """The score lookup's ``answer`` judged by the level's pass marks, with years, validity and qualification
    (null: the earlier passes would decide, point 3 above)."""
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
    found = qualifications(exam, passes, level) if level is not None else []
    unknown = not found and level is not None and all_passed
    answer["qualified"] = None if unknown else bool(found)
    answer["qualification"] = qualification_json(exam, found[0]) if found else None
    return answer
