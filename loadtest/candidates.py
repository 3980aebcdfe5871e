"""Seeded candidates for load users: who each user signs in as, from where, and what it enrols in.

Every seeded candidate is regenerated from its index (``seed``), so a load generator needs
no CSV and no database: it is told a window of indexes and takes its share of them.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from seed import candidate_credentials, qualifies
from seed.names import PROVINCES

_CITIES = {province.code: province.cities[0] for province in PROVINCES}


class CandidatePool:
    """This load-generator process's share of the seeded indexes ``first .. first + count - 1``.

    Process ``worker_index`` of ``workers`` takes every ``workers``-th index from ``offset`` on, so
    processes never hand out the same candidate at once; after ``count`` draws in all it wraps round.
    """

    def __init__(self, first: int, count: int, offset: int = 0, worker_index: int = 0, workers: int = 1) -> None:
        if count < 1 or workers < 1 or not 0 <= worker_index < workers:
            raise ValueError(f"bad candidate pool: count={count}, worker {worker_index} of {workers}")
        self.first = first
        self.count = count
        self.offset = offset
        self.worker_index = worker_index
        self.workers = workers
        self._drawn = itertools.count()

    def next(self) -> int:
        """The next candidate index for a user of this process."""
        step = next(self._drawn)
        return self.first + (self.offset + self.worker_index + self.workers * step) % self.count


def client_address(index: int) -> str:
    """A private IPv4 address of the candidate's own, sent as X-Forwarded-For.

    A gateway that trusts the load generator as a proxy (``EXAMGATE_TRUSTED_PROXIES``) then throttles
    each candidate by their own address, as at a real peak; one that does not ignores the header.
    """
    n = index + 1
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def province_of(index: int) -> str:
    """The candidate's province code (the first two digits of the resident id)."""
    return candidate_credentials(index).id_number[:2]


def enrolment_province(index: int, exam: dict[str, Any], province: str | None = None) -> str:
    """Where the candidate enrols: ``province``, else their own; one of the exam's if that is not."""
    provinces = exam.get("provinces") or []
    province = province or province_of(index)
    if provinces and province not in provinces:
        province = provinces[index % len(provinces)]
    return province


def work_years(index: int) -> int:
    """The years of related work the candidate declares."""
    return 3 + index % 20


def enrolment(index: int, exam: dict[str, Any], rng: random.Random | None = None, *, province: str | None = None,
              review_points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``POST /api/v1/registrations`` body for the candidate.

    Their own province (or ``province``) and its first city; a level they qualify for, as a candidate
    reading the notice would choose (by their seeded education and declared work years), and a
    specialty of it, with all its subjects; the review point of their city among ``review_points``.
    """
    rng = rng or random.Random(index)
    province = enrolment_province(index, exam, province)
    years = work_years(index)
    levels = list(exam["levels"])
    level = rng.choice(levels)
    if not _qualified(index, level["code"], years):
        level = next((lvl for lvl in levels if _qualified(index, lvl["code"], years)), level)
    specialty = rng.choice(level["specialties"])
    city = _CITIES.get(province, "市辖区")
    body: dict[str, Any] = {
        "exam_id": exam["id"],
        "province": province,
        "city": city,
        "level": level["code"],
        "specialty": specialty["code"],
        "subjects": [subject["code"] for subject in specialty["subjects"]],
        "work_years": years,
    }
    points = [p for p in review_points or () if p.get("province") == province]
    if points:
        body["review_point"] = next((p for p in points if p.get("city") == city), points[0])["review_point_id"]
    return body


def _qualified(index: int, level: str, years: int) -> bool:
    try:
        return qualifies(index, level, years)
    except KeyError:  # a level the demo data declares no rules for: nothing to go by
        return True
