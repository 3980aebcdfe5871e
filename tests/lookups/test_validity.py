"""The score lookup's validity from the catalogue and the record alone: the level its subjects tell, the level's pass
marks, when the earlier passes are needed, and qualified null when they could not be read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.catalogue import Exam, PassMark, Subject
from lookups import rules, validity
from lookups.records import Record

pytestmark = pytest.mark.unit

STARTS = datetime(2027, 5, 19, 17, 0, tzinfo=UTC)  # 20 May 2027 01:00 in Asia/Shanghai


def _exam(*, shared: bool = False) -> Exam:
    """Levels CJ (CJ01 + CJ11 | CJ12) and ZJ (ZJ01 + ZJ11); ``shared``: ZJ's specialty also takes CJ01."""
    def spec(code: str, *subjects: str) -> dict[str, Any]:
        return {"code": code, "name": code, "subjects": [{"code": s, "name": s} for s in subjects]}
    zj = spec("fin", "ZJ01", "ZJ11", *(["CJ01"] if shared else []))
    levels = [{"code": "CJ", "name": "初级", "specialties": [spec("fin", "CJ01", "CJ11"), spec("acc", "CJ01", "CJ12")]},
              {"code": "ZJ", "name": "中级", "specialties": [zj]}]
    subjects = {code: Subject(code, f"科目{code}", STARTS, STARTS, 60.0, 100.0)
                for code in ("CJ01", "CJ11", "CJ12", "ZJ01", "ZJ11")}
    marks = {("CJ", "CJ11"): PassMark("CJ", "CJ11", 55.0, STARTS), ("ZJ", "CJ01"): PassMark("ZJ", "CJ01", 70.0, STARTS)}
    return Exam(9, "E9", "2027年度考试", STARTS, STARTS, STARTS, STARTS, STARTS, STARTS, 5600, levels=levels,
                subjects=subjects, family="JJS", validity_years=2, pass_marks=marks)


def _record(scores: dict[str, str], subjects: tuple[str, ...] | None = None) -> Record:
    return Record("张三", "110101199001011234", "T1", 1, 1, 1, subjects or tuple(sorted(scores)), scores)


def _answer(exam: Exam, record: Record) -> dict[str, Any]:
    level = validity.level_of(exam, record.subjects)
    return validity.with_validity(rules.scores_of(exam, record, "张三"), exam, record, level)


def test_the_level_is_the_one_whose_specialties_take_the_subjects() -> None:
    exam = _exam()
    assert exam.year == 2027
    assert validity.level_of(exam, ("CJ01", "CJ12")) == "CJ"
    assert validity.level_of(exam, ("ZJ11",)) == "ZJ"
    assert validity.level_of(exam, ("CJ11", "ZJ11")) is None
    assert validity.level_of(_exam(shared=True), ("CJ01",)) is None  # two levels take it: not decided


def test_subjects_are_judged_by_the_levels_published_pass_mark() -> None:
    answer = _answer(_exam(), _record({"CJ01": "60", "CJ11": "56"}))
    assert [(s["code"], s["pass_mark"], s["passed"], s["year"], s["valid_until"]) for s in answer["subjects"]] == [
        ("CJ01", 60.0, True, 2027, 2028), ("CJ11", 55.0, True, 2027, 2028)]
    assert answer["qualified"] is True and answer["qualification"]["specialty"] == "fin"
    assert (answer["level"], answer["validity_years"]) == ("CJ", 2)


def test_an_undecided_level_keeps_the_subjects_own_pass_mark() -> None:
    answer = _answer(_exam(shared=True), _record({"CJ01": "65"}))
    assert answer["level"] is None and answer["subjects"][0]["pass_mark"] == 60.0
    assert answer["qualified"] is False


def test_the_record_alone_decides_the_qualification_or_leaves_it_to_the_earlier_passes() -> None:
    exam = _exam()
    assert _answer(exam, _record({"CJ01": "70", "CJ11": "70"}))["qualified"] is True  # complete on its own
    # A failed subject had no valid earlier pass standing in for it (enrolment refuses one still valid).
    assert _answer(exam, _record({"CJ01": "70", "CJ11": "10"}))["qualified"] is False
    partial = _answer(exam, _record({"CJ11": "70"}))  # the earlier passes would decide: not read at peak
    assert partial["qualified"] is None and partial["qualification"] is None
