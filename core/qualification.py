"""Whether a candidate may sit an exam: eligibility rules as data, the integrity archive, and the automatic review.

An exam's level declares its conditions as data (``EligibilityRules``, stored per exam and level
in ``eligibility_rules``, put by operators through the admin API): which education levels qualify
and with how many years of related work each, the majors that count as 本专业 (same) or 相近专业
(related) — anything else is 其他专业 (other) —, the subjects a candidate must take, and the
conditions under which some of them are exempt (免试).

``review`` is pure: given the rules, the candidate's education records, the registration, the
province's review rule and whether the candidate is in the integrity archive, it answers one of
``approved``, ``under_review`` (online review by the exam authority), ``onsite_review`` (at the
chosen review point) or ``rejected``, and lists every reason. A major outside the lists is not a
rejection: the candidate must acknowledge the warning (``MajorMismatch`` until they do) and is
then reviewed by a person.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, ClassVar, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.db import Conn
from core.errors import CoreError, storage_errors

__all__ = [
    "EDUCATION_LEVELS", "EDUCATION_NAMES", "Education", "EligibilityRules", "MajorMismatch", "Reason",
    "ReviewRule", "Verdict", "RulesInvalid", "DEFAULT_REVIEW_RULE",
    "archive_record", "educations", "load_rules", "parse_rules", "review", "review_rule", "save_rules",
]  # fmt: skip

PG = asyncpg.Pool | Conn

# Lowest first: an education qualifies for every rule that asks for its level or a lower one.
EDUCATION_LEVELS = ("secondary", "college", "bachelor", "master", "doctorate")
EDUCATION_NAMES = {"secondary": "中专", "college": "大专", "bachelor": "本科", "master": "硕士研究生",
                   "doctorate": "博士研究生"}
MAJOR_CLASSES = {"same": "本专业", "related": "相近专业", "other": "其他专业"}
EducationLevel = Literal["secondary", "college", "bachelor", "master", "doctorate"]

# Every reason the automatic review gives, and what the candidate reads.
REASONS: dict[str, str] = {
    "education_missing": "未填写学历信息，不符合报考条件",
    "education_insufficient": "学历或相关工作年限不符合该级别的报考条件",
    "exemption_not_met": "未报考的科目不符合免试条件",
    "major_mismatch": "所学专业不在该级别的专业目录内（其他专业），需人工审核",
    "integrity_record": "在诚信档案库记录期内，不能使用告知承诺制，需人工审核",
    "manual_review": "本地区实行人工资格审核",
}


class RulesInvalid(CoreError):
    """An eligibility rules document does not have the right shape (HTTP 422 with ``fields``)."""

    code = "validation_failed"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid eligibility rules: " + ", ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class MajorMismatch(CoreError):
    """The studied major is not in the level's lists; the candidate must acknowledge it (HTTP 422)."""

    code = "major_mismatch_unacknowledged"

    def __init__(self, major: str, same: Sequence[str], related: Sequence[str]) -> None:
        super().__init__(f"major {major!r} is not in the allowed lists")
        self.major = major
        self.same = list(same)
        self.related = list(related)


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", frozen=True, strict=True)


class EducationPath(_Strict):
    """One way to qualify: at least this education and this many years of related work."""

    education: EducationLevel
    min_work_years: Annotated[int, Field(ge=0, le=60)] = 0


class Exemption(_Strict):
    """Subjects a candidate may leave out (免试) with at least this education and these work years."""

    subjects: Annotated[list[str], Field(min_length=1)]
    min_education: EducationLevel = "secondary"
    min_work_years: Annotated[int, Field(ge=0, le=60)] = 0


class EligibilityRules(_Strict):
    """A level's conditions, declared as data."""

    paths: Annotated[list[EducationPath], Field(min_length=1)]
    majors_same: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    majors_related: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    required_subjects: list[str] = []
    exemptions: list[Exemption] = []



def parse_rules(document: Any, subjects: Collection[str]) -> EligibilityRules:
    """A rules document checked in shape and against the exam's subject codes; ``RulesInvalid`` lists every problem."""
    try:
        rules = EligibilityRules.model_validate(document)
    except ValidationError as exc:
        raise RulesInvalid({".".join(str(p) for p in e["loc"]) or "body": e["type"] for e in exc.errors()}) from None
    problems = {f"required_subjects.{i}": "unknown_subject" for i, code in enumerate(rules.required_subjects)
                if code not in subjects}
    for i, exemption in enumerate(rules.exemptions):
        problems.update({f"exemptions.{i}.subjects.{j}": "not_required" for j, code in enumerate(exemption.subjects)
                         if code not in rules.required_subjects})
    if problems:
        raise RulesInvalid(problems)
    return rules


@dataclass(frozen=True, slots=True)
class Education:
    """One of the candidate's education records, as the review reads it."""

    level: str
    major: str


@dataclass(frozen=True, slots=True)
class ReviewRule:
    """How one province reviews one exam."""

    review_mode: str  # auto | online | onsite: how a registration is reviewed when nothing needs a person
    manual_mode: str  # online | onsite: where it goes when a person must look
    commitment: bool  # the commitment route (告知承诺制) is offered
    withdraw_rule: str  # until_payment | until_review | locked


DEFAULT_REVIEW_RULE = ReviewRule("auto", "online", True, "until_payment")


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason of a review outcome: a code and what the candidate reads."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The reason as the API shows it."""
        return {"code": self.code, "message": self.message}


def reason(code: str) -> Reason:
    """The automatic review's reason for ``code``."""
    return Reason(code, REASONS[code])


@dataclass(frozen=True, slots=True)
class Verdict:
    """The automatic review's answer; ``major_class`` is same / related / other (None without rules or education)."""

    status: str  # approved | under_review | onsite_review | rejected
    reasons: tuple[Reason, ...]
    major_class: str | None


def _rank(level: str) -> int:
    return EDUCATION_LEVELS.index(level) if level in EDUCATION_LEVELS else -1


def major_class(rules: EligibilityRules, major: str) -> str:
    """same / related / other; without any list every major counts as the same."""
    if not rules.majors_same and not rules.majors_related:
        return "same"
    name = major.strip()
    if name in rules.majors_same:
        return "same"
    return "related" if name in rules.majors_related else "other"


def review(
    rules: EligibilityRules | None,
    records: Sequence[Education],
    *,
    work_years: int,
    subjects: Collection[str],
    rule: ReviewRule,
    archived: bool,
    acknowledged_major: bool,
) -> Verdict:
    """The automatic review of one registration (see the module docstring); ``MajorMismatch`` unacknowledged."""
    rejections: list[Reason] = []
    manual: list[Reason] = []
    best_class: str | None = None
    if rules is not None:
        qualifying = [r for r in records
                      if any(_rank(r.level) >= _rank(p.education) and work_years >= p.min_work_years
                             for p in rules.paths)]
        if not records:
            rejections.append(reason("education_missing"))
        elif not qualifying:
            rejections.append(reason("education_insufficient"))
        else:
            classes = sorted(qualifying, key=lambda r: ("same", "related", "other").index(major_class(rules, r.major)))
            best = classes[0]
            best_class = major_class(rules, best.major)
            if best_class == "other":
                if not acknowledged_major:
                    raise MajorMismatch(best.major, rules.majors_same, rules.majors_related)
                manual.append(reason("major_mismatch"))
        missing = set(rules.required_subjects) - set(subjects)
        if missing:
            covered: set[str] = set()
            for exemption in rules.exemptions:
                if any(_rank(r.level) >= _rank(exemption.min_education) for r in records) \
                        and work_years >= exemption.min_work_years:
                    covered.update(exemption.subjects)
            if not missing <= covered:
                rejections.append(reason("exemption_not_met"))
    if archived:
        manual.append(reason("integrity_record"))
    if rejections:
        return Verdict("rejected", tuple(rejections + manual), best_class)
    if manual or rule.review_mode != "auto":
        mode = rule.manual_mode if rule.review_mode == "auto" else rule.review_mode
        if not manual:
            manual.append(reason("manual_review"))
        return Verdict("under_review" if mode == "online" else "onsite_review", tuple(manual), best_class)
    return Verdict("approved", (), best_class)


# -- storage ------------------------------------------------------------------------------------------


async def load_rules(pg: PG, exam_id: int, level: str) -> EligibilityRules | None:
    """The level's stored rules, or None when the exam declares none (anyone may enrol)."""
    async with storage_errors():
        raw = await pg.fetchval("SELECT rules FROM eligibility_rules WHERE exam_id = $1 AND level_code = $2",
                                exam_id, level)
    return None if raw is None else EligibilityRules.model_validate(raw)


async def save_rules(pg: PG, exam_id: int, level: str, rules: EligibilityRules, *, actor: str) -> None:
    """Store (or replace) a level's rules."""
    async with storage_errors():
        await pg.execute(
            """INSERT INTO eligibility_rules (exam_id, level_code, rules, updated_by) VALUES ($1, $2, $3, $4)
               ON CONFLICT (exam_id, level_code)
               DO UPDATE SET rules = EXCLUDED.rules, updated_by = EXCLUDED.updated_by, updated_at = now()""",
            exam_id, level, rules.model_dump(), actor)


async def review_rule(pg: PG, exam_id: int, province: str) -> ReviewRule:
    """The province's review rule for the exam, or the default one."""
    async with storage_errors():
        row = await pg.fetchrow("""SELECT review_mode, manual_mode, commitment, withdraw_rule FROM exam_review_rules
                                   WHERE exam_id = $1 AND province = $2""", exam_id, province)
    return DEFAULT_REVIEW_RULE if row is None else ReviewRule(*row.values())


async def educations(pg: PG, candidate_id: int) -> list[Education]:
    """The candidate's education records, highest level first."""
    async with storage_errors():
        rows = await pg.fetch("SELECT level, major FROM educations WHERE candidate_id = $1", candidate_id)
    return sorted((Education(r["level"], r["major"]) for r in rows), key=lambda e: -_rank(e.level))


_ARCHIVED = """
SELECT ir.id, ir.violation, ir.ends_on
  FROM integrity_records ir
  JOIN candidates c ON c.id_number = ir.id_number
  JOIN exams e ON e.id = $2
 WHERE c.id = $1 AND ir.removed_at IS NULL
   AND ir.exam_family IN ('*', COALESCE(e.family, e.code))
   AND $3::date BETWEEN ir.starts_on AND ir.ends_on
 ORDER BY ir.ends_on DESC LIMIT 1
"""


async def archive_record(pg: PG, candidate_id: int, exam_id: int, today: date) -> dict[str, Any] | None:
    """The candidate's integrity record for the exam's family in force on ``today``, or None."""
    async with storage_errors():
        row = await pg.fetchrow(_ARCHIVED, candidate_id, exam_id, today)
    return None if row is None else {"record_id": row["id"], "violation": row["violation"],
                                     "until": row["ends_on"].isoformat()}
