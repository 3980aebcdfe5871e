"""The shape of one line of an ``exams`` file, and what can be wrong with an exam on its own.

``ExamLine`` is the whole exam as a JSON object; ``shape_reasons`` turns pydantic's errors into
Chinese reasons naming the field; ``exam_problems`` checks the rules that need the whole exam
(windows in order, subjects inside them, codes once, every specialty's subjects listed). What
depends on the stored exam (registrations, certificates, scores) is checked in exams.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from core.operators import PROVINCES
from core.timeutil import iso_local

__all__ = ["EXAM_CODE", "ExamLine", "Level", "ReviewRule", "Specialty", "Subject", "Windows", "exam_problems",
           "shape_reasons"]

EXAM_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
PART_CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$"  # levels, specialties, subjects
MAX_FEE_PER_SUBJECT_FEN = 1_000_000
MAX_MARK = Decimal("9999.9")  # numeric(5,1)

ExamCode = Annotated[str, StringConstraints(pattern=EXAM_CODE)]
PartCode = Annotated[str, StringConstraints(pattern=PART_CODE)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Family = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Mark = Annotated[Decimal, Field(ge=0, le=MAX_MARK, decimal_places=1)]
FullMark = Annotated[Decimal, Field(gt=0, le=MAX_MARK, decimal_places=1)]


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", frozen=True)


class Windows(_Strict):
    """When each phase of the exam opens and closes (ISO-8601 with an offset)."""

    registration_opens_at: AwareDatetime
    registration_closes_at: AwareDatetime
    ticket_print_opens_at: AwareDatetime
    ticket_print_closes_at: AwareDatetime
    exam_starts_at: AwareDatetime
    score_release_at: AwareDatetime
    score_review_opens_at: AwareDatetime | None = None
    score_review_closes_at: AwareDatetime | None = None


class Specialty(_Strict):
    """A specialty of a level and the subjects it takes (codes from the exam's ``subjects``)."""

    code: PartCode
    name: Name
    subjects: Annotated[list[PartCode], Field(min_length=1)]


class Level(_Strict):
    """A level of the exam with its specialties."""

    code: PartCode
    name: Name
    specialties: Annotated[list[Specialty], Field(min_length=1)]


class Subject(_Strict):
    """One paper: its time and marks."""

    code: PartCode
    name: Name
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    full_mark: FullMark = Decimal(100)
    pass_mark: Mark = Decimal(60)


class ReviewRule(_Strict):
    """How one province reviews the exam's registrations (absent: automatic, online when a person must look)."""

    province: str
    review_mode: Literal["auto", "online", "onsite"]
    manual_mode: Literal["online", "onsite"]
    commitment: bool
    withdraw_rule: Literal["until_payment", "until_review", "locked"]


class ExamLine(_Strict):
    """One line of an ``exams`` file: a whole exam."""

    code: ExamCode
    name: Name
    family: Family | None = None
    windows: Windows
    fee_per_subject_fen: Annotated[int, Field(gt=0, le=MAX_FEE_PER_SUBJECT_FEN)]
    levels: Annotated[list[Level], Field(min_length=1)]
    subjects: Annotated[list[Subject], Field(min_length=1)]
    review_rules: list[ReviewRule] = []


# What a pydantic error type means, in the words of a reason.
_ERRORS = {
    "missing": "缺少",
    "extra_forbidden": "不认识的字段",
    "string_pattern_mismatch": "格式不对",
    "string_too_short": "不能为空",
    "string_too_long": "太长",
    "string_type": "应为字符串",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数",
    "bool_type": "应为 true 或 false",
    "bool_parsing": "应为 true 或 false",
    "list_type": "应为数组",
    "too_short": "不能为空",
    "model_type": "应为对象",
    "model_attributes_type": "应为对象",
    "dict_type": "应为对象",
    "greater_than": "应大于 0",
    "greater_than_equal": "不能为负数",
    "less_than_equal": "太大",
    "decimal_type": "应为数字",
    "decimal_parsing": "应为数字",
    "decimal_max_places": "最多一位小数",
    "decimal_max_digits": "太大",
    "datetime_type": "应为带时区的 ISO-8601 时间",
    "datetime_parsing": "应为带时区的 ISO-8601 时间",
    "datetime_from_date_parsing": "应为带时区的 ISO-8601 时间",
    "timezone_aware": "应带时区（如 +08:00）",
    "literal_error": "取值不在允许的范围内",
    "json_invalid": "不是有效的 JSON",
}


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(".[", "[")


def shape_reasons(exc: ValidationError) -> list[str]:
    """Chinese reasons for a line that does not have an exam's shape (one per problem, in order)."""
    reasons = []
    for error in exc.errors(include_url=False):
        where = _where(error["loc"]) or "整行"
        reasons.append(f"{where}：{_ERRORS.get(error['type'], '取值无效')}")
    return reasons


def _duplicates(codes: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({code for code in codes if code in seen or seen.add(code)})  # type: ignore[func-returns-value]


def exam_problems(exam: ExamLine) -> list[str]:
    """What is wrong with one exam on its own (step 2 of the module docstring), in Chinese."""
    problems: list[str] = []
    w = exam.windows
    order = [
        (w.registration_opens_at, w.registration_closes_at, "报名开始时间应早于报名截止时间", False),
        (w.registration_closes_at, w.exam_starts_at, "报名截止时间不能晚于考试开始时间", True),
        (w.ticket_print_opens_at, w.ticket_print_closes_at, "准考证打印开始时间应早于截止时间", False),
        (w.ticket_print_opens_at, w.exam_starts_at, "准考证打印开始时间不能晚于考试开始时间", True),
        (w.exam_starts_at, w.score_release_at, "考试开始时间应早于成绩发布时间", False),
    ]
    if (w.score_review_opens_at is None) != (w.score_review_closes_at is None):
        problems.append("成绩复核的开始和截止时间应同时给出或同时省略")
    elif w.score_review_opens_at is not None and w.score_review_closes_at is not None:
        order += [
            (w.score_release_at, w.score_review_opens_at, "成绩复核不能早于成绩发布时间开始", True),
            (w.score_review_opens_at, w.score_review_closes_at, "成绩复核开始时间应早于截止时间", False),
        ]
    for earlier, later, reason, may_equal in order:
        if earlier > later or (earlier == later and not may_equal):
            problems.append(reason)
    for code in _duplicates([s.code for s in exam.subjects]):
        problems.append(f"科目代码 {code} 重复")
    for subject in exam.subjects:
        if subject.starts_at >= subject.ends_at:
            problems.append(f"科目 {subject.code} 的开始时间应早于结束时间")
        if subject.starts_at < w.exam_starts_at:
            problems.append(f"科目 {subject.code} 的开始时间早于考试开始时间 {iso_local(w.exam_starts_at)}")
        if subject.ends_at > w.score_release_at:
            problems.append(f"科目 {subject.code} 的结束时间晚于成绩发布时间 {iso_local(w.score_release_at)}")
        if subject.pass_mark > subject.full_mark:
            problems.append(f"科目 {subject.code} 的合格分 {subject.pass_mark} 高于满分 {subject.full_mark}")
    known = {s.code for s in exam.subjects}
    used: set[str] = set()
    for code in _duplicates([level.code for level in exam.levels]):
        problems.append(f"级别代码 {code} 重复")
    for level in exam.levels:
        for code in _duplicates([s.code for s in level.specialties]):
            problems.append(f"级别 {level.code} 的专业代码 {code} 重复")
        for specialty in level.specialties:
            where = f"级别 {level.code} 专业 {specialty.code}"
            for code in _duplicates(specialty.subjects):
                problems.append(f"{where} 的科目 {code} 列了两次")
            for code in specialty.subjects:
                if code not in known:
                    problems.append(f"{where} 的科目 {code} 不在 subjects 中")
            used.update(specialty.subjects)
    for subject in exam.subjects:
        if subject.code not in used:
            problems.append(f"科目 {subject.code} 没有任何专业报考")
    for code in _duplicates([r.province for r in exam.review_rules]):
        problems.append(f"省份 {code} 的审核规则重复")
    for rule in exam.review_rules:
        if rule.province not in PROVINCES:
            problems.append(f"省份代码 {rule.province} 无效")
    return problems
