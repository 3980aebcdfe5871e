"""Enrolment in an exam: the ``POST /api/v1/registrations`` body checked against the catalogue, and the repository.

Validation collects every problem (``RegistrationInvalid.fields`` maps dotted paths such as
``subjects.1`` to snake_case codes, like ``core.accounts``); an exam outside its registration
window is ``RegistrationClosed`` whatever the rest of the body says. PostgreSQL enforces one
registration per candidate and exam (``registrations_candidate_exam_key``): however many creates
race, one row is written and the others get ``AlreadyRegistered``.

What happens to a registration after it is created (confirmation, review, withdrawal,
cancellation) is ``core.lifecycle``; ``STATUSES`` are its states.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from core import agreements
from core.catalogue import Exam
from core.errors import CoreError, storage_errors
from core.timeutil import iso_local, utcnow

__all__ = [
    "AlreadyRegistered", "RegistrationClosed", "RegistrationError", "RegistrationInvalid", "RegistrationRequest",
    "check_window", "create", "get", "parse_request",
    "CITY_MAX_CHARS", "STATUSES", "WORK_YEARS_MAX",
]  # fmt: skip

PG = asyncpg.Pool | asyncpg.Connection

STATUSES = ("draft", "under_review", "onsite_review", "approved", "rejected", "paid", "cancelled", "expired")
CITY_MAX_CHARS = 32
WORK_YEARS_MAX = 60
# ``commitment`` was part of creation before the commitment became its own signed document; still accepted, ignored.
_FIELDS = ("exam_id", "province", "city", "level", "specialty", "subjects", "work_years", "commitment", "review_point")


# -- errors ------------------------------------------------------------------------------------------


class RegistrationError(CoreError):
    """Base class of the enrolment errors; ``code`` is the API error code."""

    code: ClassVar[str] = "registration_error"


class RegistrationInvalid(RegistrationError):
    """The body has problems: ``fields`` maps each bad field path to a problem code (HTTP 422)."""

    code = "validation_failed"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid registration: " + ", ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class RegistrationClosed(RegistrationError):
    """The exam is outside its registration window (HTTP 403 ``registration_closed``)."""

    code = "registration_closed"

    def __init__(self, exam_id: int, opens_at: datetime, closes_at: datetime) -> None:
        super().__init__(f"registration for exam {exam_id} is open"
                         f" from {opens_at.isoformat()} to {closes_at.isoformat()}")
        self.exam_id = exam_id
        self.opens_at = opens_at
        self.closes_at = closes_at


class AlreadyRegistered(RegistrationError):
    """The candidate already has a registration for this exam (HTTP 409 ``already_registered``)."""

    code = "already_registered"

    def __init__(self, candidate_id: int, exam_id: int, registration_id: int | None = None) -> None:
        super().__init__(f"candidate {candidate_id} is already registered for exam {exam_id}")
        self.candidate_id = candidate_id
        self.exam_id = exam_id
        self.registration_id = registration_id  # the candidate's own, to continue with


# -- validation --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """A validated enrolment: subjects in the catalogue's order, city with whitespace normalised."""

    exam_id: int
    province: str
    city: str
    level: str
    specialty: str
    subjects: tuple[str, ...]
    work_years: int
    review_point: int | None = None


def check_window(exam: Exam, *, now: datetime | None = None) -> None:
    """``RegistrationClosed`` unless ``now`` is within the exam's registration window."""
    now = now or utcnow()
    if not exam.registration_opens_at <= now < exam.registration_closes_at:
        raise RegistrationClosed(exam.id, exam.registration_opens_at, exam.registration_closes_at)


def _whole(value: Any) -> int | None:
    """``value`` as an integer when JSON says it is one (2 and 2.0 alike, within 64 bits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    return None


def _string(body: Mapping[str, Any], key: str, fields: dict[str, str]) -> str | None:
    value = body.get(key)
    if value is None:
        fields.setdefault(key, "required")
        return None
    if not isinstance(value, str):
        fields.setdefault(key, "must_be_string")
        return None
    return value


def _city(raw: str) -> tuple[str | None, str | None]:
    city = " ".join(unicodedata.normalize("NFC", raw).split())
    if not city:
        return None, "required"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in city):
        return None, "invalid_characters"
    if len(city) > CITY_MAX_CHARS:
        return None, "too_long"
    return city, None


def _subjects(value: Any, allowed: Collection[str] | None, fields: dict[str, str]) -> list[str]:
    """The chosen codes in order; ``allowed`` None checks shape and duplicates only (unknown exam)."""
    if value is None:
        fields["subjects"] = "required"
        return []
    if not isinstance(value, list):
        fields["subjects"] = "must_be_list"
        return []
    if not value:
        fields["subjects"] = "required"
        return []
    chosen: list[str] = []
    for i, code in enumerate(value):
        if not isinstance(code, str):
            fields[f"subjects.{i}"] = "must_be_string"
        elif allowed is not None and code not in allowed:
            fields[f"subjects.{i}"] = "invalid_choice"
        elif code in chosen:
            fields[f"subjects.{i}"] = "duplicate"
        else:
            chosen.append(code)
    return chosen


def parse_request(
    body: Any,
    exams: Mapping[int, Exam],
    *,
    now: datetime | None = None,
    ignore: Collection[str] = ("captcha",),
) -> RegistrationRequest:
    """Validate an enrolment body against the catalogue (``Catalogue.exams``) and the registration window.

    Raises ``RegistrationInvalid`` listing every bad field, or ``RegistrationClosed`` when the exam
    exists but is outside its window (checked first: a closed exam's form problems do not matter).
    """
    if not isinstance(body, dict):
        raise RegistrationInvalid({"body": "must_be_object"})
    fields: dict[str, str] = {}
    for key in body:
        if key not in _FIELDS and key not in ignore:
            fields[str(key)] = "unknown_field"

    exam: Exam | None = None
    exam_id = _whole(body.get("exam_id"))
    if body.get("exam_id") is None:
        fields["exam_id"] = "required"
    elif exam_id is None:
        fields["exam_id"] = "must_be_integer"
    else:
        exam = exams.get(exam_id)
        if exam is None:
            fields["exam_id"] = "unknown_exam"
        else:
            check_window(exam, now=now)

    province = _string(body, "province", fields)
    if province is not None and exam is not None and province not in exam.provinces:
        fields["province"] = "invalid_choice"

    city: str | None = None
    raw = _string(body, "city", fields)
    if raw is not None:
        city, problem = _city(raw)
        if problem:
            fields["city"] = problem

    level = _string(body, "level", fields)
    specialty = _string(body, "specialty", fields)
    allowed: list[str] = []
    if exam is not None:
        allowed = list(exam.subjects)
        if level is not None and not any(lvl["code"] == level for lvl in exam.levels):
            fields["level"] = "invalid_choice"
        elif level is not None and specialty is not None:
            taken = exam.specialty_subjects(level, specialty)
            if taken is None:
                fields["specialty"] = "invalid_choice"
            else:
                allowed = taken
    subjects = _subjects(body.get("subjects"), allowed if exam is not None else None, fields)

    work_years = _whole(body.get("work_years"))
    if body.get("work_years") is None:
        fields["work_years"] = "required"
    elif work_years is None:
        fields["work_years"] = "must_be_integer"
    elif not 0 <= work_years <= WORK_YEARS_MAX:
        fields["work_years"] = "out_of_range"

    review_point: int | None = None
    if body.get("review_point") is not None:
        review_point = _whole(body.get("review_point"))
        if review_point is None:
            fields["review_point"] = "must_be_integer"
        elif exam is not None and (review_point not in exam.review_points
                                   or exam.review_points[review_point].province != province):
            fields["review_point"] = "invalid_choice"

    if fields:
        raise RegistrationInvalid(fields)
    assert exam is not None and province is not None and city is not None
    assert level is not None and specialty is not None and work_years is not None
    order = {code: i for i, code in enumerate(exam.subjects)}
    return RegistrationRequest(
        exam.id, province, city, level, specialty, tuple(sorted(subjects, key=order.__getitem__)), work_years,
        review_point,
    )


# -- repository --------------------------------------------------------------------------------------



# Only for an account that accepted the service agreement in force (none published: no condition).
# The candidate's first registration in the exam's family also gets the family's archive number, in the
# same statement (``core.validity``): a first registration racing another in the family's other exam
# waits for it on the primary key and keeps the number it assigned.
_CREATE = """
WITH reg AS (
INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code, subjects, work_years,
                           review_point_id)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM candidates c
 WHERE c.id = $1 AND c.agreement_version IS NOT DISTINCT FROM coalesce(
       (SELECT max(version) FROM account_documents WHERE kind = 'agreement'), c.agreement_version)
RETURNING id
), archived AS (
INSERT INTO archive_numbers (candidate_id, family, archive_no, registration_id)
SELECT $1, f.family, f.family || f.year || lpad(f.n::text, greatest(8, length(f.n::text)), '0'), reg.id
  FROM reg, LATERAL (SELECT coalesce(e.family, e.code) AS family, nextval('archive_no_seq') AS n,
                            extract(year FROM e.exam_starts_at AT TIME ZONE 'Asia/Shanghai')::int::text AS year
                       FROM exams e WHERE e.id = $2) f
    ON CONFLICT (candidate_id, family) DO NOTHING
)
SELECT id FROM reg
"""


async def create(pg: PG, candidate_id: int, request: RegistrationRequest) -> int:
    """Insert a draft registration; its id, or ``AlreadyRegistered`` if the candidate has one for the exam,
    ``AgreementRequired`` if the account has not accepted the service agreement in force."""
    try:
        async with storage_errors():
            registration_id = await pg.fetchval(
                _CREATE, candidate_id, request.exam_id, request.province, request.city, request.level,
                request.specialty, list(request.subjects), request.work_years, request.review_point,
            )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "registrations_candidate_exam_key":
            raise
        async with storage_errors():
            existing = await pg.fetchval("SELECT id FROM registrations WHERE candidate_id = $1 AND exam_id = $2",
                                         candidate_id, request.exam_id)
        raise AlreadyRegistered(candidate_id, request.exam_id, existing) from exc
    if registration_id is None:  # a newer agreement is in force than the one the account accepted
        accepted, current = await agreements.acceptance(pg, candidate_id)
        raise agreements.AgreementRequired(accepted, current or 0)
    return int(registration_id)


# The order shown is the paid one, else the pending one, else the latest (closed) one.
_GET = """
SELECT r.id, r.exam_id, r.status, r.province, r.city, r.level_code, r.specialty_code, r.subjects,
       r.work_years, r.site_id, r.hold_expires_at, r.created_at, r.updated_at, r.version, r.reasons,
       r.review_mode, r.review_point_id,
       (SELECT jsonb_build_object('version', c.version, 'signed_at', c.signed_at) FROM registration_commitments c
         WHERE c.registration_id = r.id AND c.withdrawn_at IS NULL) AS commitment,
       EXISTS (SELECT 1 FROM exam_documents d WHERE d.exam_id = r.exam_id AND d.kind = 'commitment')
         AND COALESCE((SELECT rr.commitment FROM exam_review_rules rr
                        WHERE rr.exam_id = r.exam_id AND rr.province = r.province), true) AS commitment_route,
       (SELECT q.status FROM cancellation_requests q WHERE q.registration_id = r.id) AS cancellation,
       (SELECT o.order_no FROM orders o WHERE o.registration_id = r.id
        ORDER BY o.status = 'paid' DESC, o.status = 'pending' DESC, o.created_at DESC LIMIT 1) AS order_no,
       (SELECT t.ticket_no FROM admission_tickets t WHERE t.registration_id = r.id) AS ticket_no,
       (SELECT p.status FROM photos p WHERE p.candidate_id = r.candidate_id AND p.current) AS photo_status,
       (SELECT a.archive_no FROM archive_numbers a JOIN exams e ON e.id = r.exam_id
         WHERE a.candidate_id = r.candidate_id AND a.family = coalesce(e.family, e.code)) AS archive_no
FROM registrations r
WHERE r.id = $1 AND r.candidate_id = $2
"""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_local(moment)


async def get(pg: PG, registration_id: int, candidate_id: int) -> dict[str, Any] | None:
    """The candidate's own registration for ``GET /api/v1/registrations/{id}``; None if absent or someone else's."""
    async with storage_errors():
        row = await pg.fetchrow(_GET, registration_id, candidate_id)
    if row is None:
        return None
    return {
        "registration_id": row["id"],
        "exam_id": row["exam_id"],
        "status": row["status"],
        "province": row["province"],
        "city": row["city"],
        "level": row["level_code"],
        "specialty": row["specialty_code"],
        "subjects": list(row["subjects"]),
        "work_years": row["work_years"],
        "site_id": row["site_id"],
        "hold_expires_at": _iso(row["hold_expires_at"]),
        "order_no": row["order_no"],
        "ticket_no": row["ticket_no"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "version": row["version"],
        "reasons": row["reasons"],
        "review_mode": row["review_mode"],
        "review_point": row["review_point_id"],
        "commitment": _commitment(row["commitment"]),
        "commitment_route": row["commitment_route"],
        "cancellation": row["cancellation"],
        "archive_no": row["archive_no"],
        "photo_status": row["photo_status"],
        "missing": _missing(row),
    }


def _missing(row: Any) -> list[str]:
    """What a draft lacks before it can be confirmed, whatever else the review asks: an approved photo."""
    return ["photo"] if row["status"] == "draft" and row["photo_status"] != "approved" else []


def _commitment(signed: dict[str, Any] | None) -> dict[str, Any] | None:
    if signed is None:
        return None
    return {"version": signed["version"], "signed_at": iso_local(datetime.fromisoformat(signed["signed_at"]))}
