"""The exam catalogue (exams, their structure and sites), read from PostgreSQL in a few queries."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import asyncpg

from core.timeutil import SHANGHAI


@dataclass(frozen=True)
class Site:
    """An exam site with its fixed capacity (availability lives in Redis)."""

    id: int
    exam_id: int
    province: str
    city: str
    name: str
    address: str
    capacity: int
    rooms: int
    seats_per_room: int


@dataclass(frozen=True)
class ReviewPoint:
    """A review point (审核点) where on-site qualification review happens."""

    id: int
    province: str
    city: str
    name: str
    address: str


@dataclass(frozen=True)
class Subject:
    """One paper of an exam."""

    code: str
    name: str
    starts_at: datetime
    ends_at: datetime
    pass_mark: float
    full_mark: float


@dataclass(frozen=True)
class PassMark:
    """A published pass mark (合格标准) of one level and subject."""

    level: str
    subject: str
    pass_mark: float
    published_at: datetime


@dataclass(frozen=True)
class Exam:
    """An exam with its windows, structure and sites."""

    id: int
    code: str
    name: str
    registration_opens_at: datetime
    registration_closes_at: datetime
    ticket_print_opens_at: datetime
    ticket_print_closes_at: datetime
    exam_starts_at: datetime
    score_release_at: datetime
    fee_per_subject_fen: int
    levels: list[dict[str, Any]] = field(default_factory=list)
    subjects: dict[str, Subject] = field(default_factory=dict)
    sites: dict[int, Site] = field(default_factory=dict)
    review_points: dict[int, ReviewPoint] = field(default_factory=dict)
    family: str = ""  # the exam family (exams.family); "" : the exam is a family of its own, named by its code
    validity_years: int = 1  # the family's (exam_families); 1 without a row
    pass_marks: dict[tuple[str, str], PassMark] = field(default_factory=dict)  # (level, subject) → published

    @property
    def family_code(self) -> str:
        """The family this exam belongs to: ``exams.family``, or the exam's own code."""
        return self.family or self.code

    @cached_property
    def year(self) -> int:
        """The exam's year: the year of its start in Asia/Shanghai."""
        return self.exam_starts_at.astimezone(SHANGHAI).year

    @cached_property
    def specialty_sets(self) -> dict[str, tuple[tuple[str, tuple[str, ...]], ...]]:
        """Level code → its specialties as (code, subject codes), worked out once per catalogue."""
        return {lvl["code"]: tuple((spec["code"], tuple(s["code"] for s in spec["subjects"]))
                                   for spec in lvl["specialties"]) for lvl in self.levels}

    def level_pass_mark(self, level: str | None, subject: str) -> float | None:
        """The pass mark of ``subject`` for ``level``: the published one, else the subject's own (None: no subject)."""
        published = self.pass_marks.get((level, subject)) if level is not None else None
        if published is not None:
            return published.pass_mark
        found = self.subjects.get(subject)
        return found.pass_mark if found is not None else None

    def level_subjects(self, level: str) -> frozenset[str]:
        """Every subject code some specialty of ``level`` takes."""
        return self._level_subjects.get(level, frozenset())

    @cached_property
    def _level_subjects(self) -> dict[str, frozenset[str]]:
        return {level: frozenset(code for _, codes in specs for code in codes)
                for level, specs in self.specialty_sets.items()}

    @property
    def provinces(self) -> list[str]:
        """Province codes with at least one site, sorted."""
        return sorted({site.province for site in self.sites.values()})

    def sites_in(self, province: str | None) -> list[Site]:
        """Sites of one province (all when None), in id order."""
        return [s for s in self.sites.values() if province is None or s.province == province]

    def specialty_subjects(self, level: str, specialty: str) -> list[str] | None:
        """Subject codes a level/specialty takes, or None when the pair does not exist."""
        for lvl in self.levels:
            if lvl["code"] == level:
                for spec in lvl["specialties"]:
                    if spec["code"] == specialty:
                        return [s["code"] for s in spec["subjects"]]
        return None


@dataclass(frozen=True)
class Catalogue:
    """Every exam by id; replaced whole on refresh so readers never see half an update."""

    exams: dict[int, Exam]

    def exam(self, exam_id: int) -> Exam | None:
        """The exam with this id, or None."""
        return self.exams.get(exam_id)


async def load_catalogue(conn: asyncpg.Connection | asyncpg.Pool) -> Catalogue:
    """Read the whole catalogue; it is small (exams × structure × a few thousand sites)."""
    exams = await conn.fetch("SELECT * FROM exams ORDER BY id")
    levels = await conn.fetch("SELECT exam_id, code, name FROM exam_levels ORDER BY exam_id, position, code")
    specialties = await conn.fetch(
        "SELECT exam_id, level_code, code, name FROM exam_specialties ORDER BY exam_id, position, code"
    )
    subjects = await conn.fetch("SELECT * FROM exam_subjects ORDER BY exam_id, position, code")
    mapping = await conn.fetch(
        "SELECT exam_id, level_code, specialty_code, subject_code FROM exam_specialty_subjects"
    )
    sites = await conn.fetch("SELECT * FROM exam_sites ORDER BY exam_id, id")
    points = await conn.fetch("SELECT * FROM review_points ORDER BY exam_id, province, id")
    marks = await conn.fetch("SELECT exam_id, level_code, subject_code, pass_mark, published_at FROM pass_marks")
    families = {row["family"]: row["validity_years"]
                for row in await conn.fetch("SELECT family, validity_years FROM exam_families")}

    subjects_by_exam: dict[int, dict[str, Subject]] = defaultdict(dict)
    for row in subjects:
        subjects_by_exam[row["exam_id"]][row["code"]] = Subject(
            row["code"], row["name"], row["starts_at"], row["ends_at"], float(row["pass_mark"]),
            float(row["full_mark"]),
        )
    taken: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    for row in mapping:
        taken[(row["exam_id"], row["level_code"], row["specialty_code"])].add(row["subject_code"])
    specs_by_level: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in specialties:
        key = (row["exam_id"], row["level_code"], row["code"])
        exam_subjects = subjects_by_exam[row["exam_id"]]
        specs_by_level[(row["exam_id"], row["level_code"])].append({
            "code": row["code"],
            "name": row["name"],
            "subjects": [{"code": code, "name": s.name} for code, s in exam_subjects.items() if code in taken[key]],
        })
    levels_by_exam: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in levels:
        levels_by_exam[row["exam_id"]].append({
            "code": row["code"], "name": row["name"],
            "specialties": specs_by_level[(row["exam_id"], row["code"])],
        })
    sites_by_exam: dict[int, dict[int, Site]] = defaultdict(dict)
    for row in sites:
        sites_by_exam[row["exam_id"]][row["id"]] = Site(
            row["id"], row["exam_id"], row["province"], row["city"], row["name"], row["address"],
            row["capacity"], row["rooms"], row["seats_per_room"],
        )
    points_by_exam: dict[int, dict[int, ReviewPoint]] = defaultdict(dict)
    for row in points:
        points_by_exam[row["exam_id"]][row["id"]] = ReviewPoint(row["id"], row["province"], row["city"], row["name"],
                                                                row["address"])
    marks_by_exam: dict[int, dict[tuple[str, str], PassMark]] = defaultdict(dict)
    for row in marks:
        marks_by_exam[row["exam_id"]][(row["level_code"], row["subject_code"])] = PassMark(
            row["level_code"], row["subject_code"], float(row["pass_mark"]), row["published_at"])
    result = {}
    for row in exams:
        result[row["id"]] = Exam(
            id=row["id"], code=row["code"], name=row["name"],
            registration_opens_at=row["registration_opens_at"],
            registration_closes_at=row["registration_closes_at"],
            ticket_print_opens_at=row["ticket_print_opens_at"],
            ticket_print_closes_at=row["ticket_print_closes_at"],
            exam_starts_at=row["exam_starts_at"], score_release_at=row["score_release_at"],
            fee_per_subject_fen=row["fee_per_subject_fen"],
            levels=levels_by_exam[row["id"]], subjects=subjects_by_exam[row["id"]],
            sites=sites_by_exam[row["id"]], review_points=points_by_exam[row["id"]],
            family=row["family"] or "", validity_years=families.get(row["family"] or row["code"], 1),
            pass_marks=marks_by_exam[row["id"]],
        )
    return Catalogue(result)
