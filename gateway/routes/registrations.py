"""Enrolment: create and read a registration, confirm it (the automatic review), choose or give back its seat.

The seat hold is the peak path. It costs two Redis round trips and no PostgreSQL read once
the registration is known to this process: (1) the session and the registration's current
hold (a hint for the hold script) in one auto-pipelined batch, (2) the hold script. The
admission token is an HMAC checked in Python; the exam and its sites come from the
in-memory catalogue; the registration's owner, exam and province from ``RegistrationRefs``
(one ``fetchrow`` the first time this process sees the registration). Rate-limit rules
keyed by candidate, when the live config has any for the route, are decided by one limiter call
sent beside the session lookup once this process has seen the session (``gateway.auth``), one
round trip after it the first time.

Whether the registration may take the seat is one domain call, ``queueing.eligibility.check_seat``
(site, province, approved, window, waiting room); the hold script checks the seat right granted at
approval again, atomically, so a withdrawal racing the hold cannot leave a seat to a registration
that is not approved; a paid seat neither moves nor is released (409 ``seat_locked``).
The rest of the lifecycle (edit, commitment, withdraw, cancel) is ``gateway.routes.lifecycle``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import orjson
from aiohttp import web
from pydantic import AfterValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from core import lifecycle, registrations
from core.redis import abandon
from core.timeutil import iso_local_ms, utcnow
from gateway import auth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.errors import NotFoundError, ValidationFailed
from gateway.models import Body, CaptchaValue, Id, Int, Reply, Text
from gateway.pathids import path_id
from gateway.registration_refs import RegistrationRef
from gateway.routes.validity import refuse_still_valid
from gateway.routing import BATCHED, CANDIDATE, Answer, Param, Routes
from queueing import eligibility, holds
from queueing import keys as qkeys

routes = Routes("Registrations")
ADMISSION_HEADER = "X-Admission-Token"
STATUSES = Literal["draft", "under_review", "onsite_review", "approved", "rejected", "paid", "cancelled", "expired"]
# How long a registration's cached status is believed when it refuses a seat (another process may have approved it).
REFUSAL_RECHECK_S = 1.0


def _some(codes: list[str]) -> list[str]:
    if not codes:
        raise PydanticCustomError("required", "at least one subject")
    return codes


def _work_years(years: int) -> int:
    if not 0 <= years <= registrations.WORK_YEARS_MAX:
        raise PydanticCustomError("out_of_range", "0-60")
    return years


class Enrolment(Body):
    """Enrol in an exam: province, level, specialty and subjects must be the exam's (422 invalid_choice)."""

    exam_id: Id = Field(description="unknown_exam for an exam that does not exist")
    province: str
    city: Text(1, registrations.CITY_MAX_CHARS)  # type: ignore[valid-type]
    level: str
    specialty: str
    subjects: Annotated[list[str], AfterValidator(_some), Field(json_schema_extra={"minItems": 1,
                                                                                   "uniqueItems": True})]
    work_years: Annotated[Int, AfterValidator(_work_years),
                          Field(json_schema_extra={"minimum": 0, "maximum": registrations.WORK_YEARS_MAX})]
    review_point: Id | None = Field(None, description="a review point of the exam in the province "
                                                      "(GET /api/v1/exams/{exam_id}/review-points)")
    commitment: bool | None = Field(None, description="accepted and ignored: the commitment is signed on its own "
                                                      "(POST /api/v1/registrations/{id}/commitment)")
    captcha: CaptchaValue = Field(None, description="accepted and ignored")

    model_config: ClassVar[ConfigDict] = {**Body.model_config, "json_schema_extra": {"examples": [
        {"exam_id": 1, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin", "subjects": ["101"],
         "work_years": 5}]}}


class SeatChoice(Body):
    """The site to hold a seat at."""

    site_id: Id


class Enrolled(Reply):
    """A new draft registration."""

    registration_id: int
    status: Literal["draft"]


class EnrolmentRecord(Reply):
    """The candidate's own registration; site_id and hold_expires_at are the live hold."""

    registration_id: int
    exam_id: int
    status: STATUSES
    province: str | None = None
    city: str | None = None
    level: str | None = None
    specialty: str | None = None
    subjects: list[str] | None = None
    work_years: int | None = None
    site_id: int | None
    hold_expires_at: datetime | None
    order_no: str | None
    ticket_no: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int | None = Field(None, description="bumped by every transition; operators decide with If-Match on it")
    reasons: list[dict[str, str]] = Field([], description="the review's reasons: [{code, message}]")
    review_mode: Literal["auto", "online", "onsite"] | None = None
    review_point: int | None = None
    commitment: dict[str, object] | None = Field(None, description='{"version", "signed_at"} or null')
    commitment_route: bool | None = Field(None, description="the exam and province offer the commitment route "
                                                            "(the integrity archive may still refuse it)")
    cancellation: Literal["pending", "approved", "refused"] | None = Field(
        None, description="a paid registration's cancellation request")
    archive_no: str | None = None
    photo_status: Literal["approved", "needs_review", "rejected"] | None = Field(
        None, description="the candidate's current photo's status; null: no photo yet")
    missing: list[Literal["photo"]] = Field(
        [], description="what a draft lacks before it can be confirmed (photo: no approved photo)")


class SeatHold(Reply):
    """The seat held."""

    site_id: int
    hold_expires_at: datetime | None = Field(description="null when the seat is paid (permanent)")


class Acknowledgement(Body):
    """报名信息确认; ``acknowledge_major_mismatch`` accepts the warning about a major outside the lists."""

    acknowledge_major_mismatch: bool = False


class Confirmed(Reply):
    """The automatic review's answer."""

    registration_id: int
    status: Literal["approved", "under_review", "onsite_review", "rejected"]
    reasons: list[dict[str, str]]
    version: int


def _not_found() -> NotFoundError:
    return NotFoundError("报名记录不存在", code="registration_not_found")


def _registration_id(request: web.Request) -> int:
    registration_id = path_id(request.match_info["registration_id"])
    if registration_id is None:
        raise _not_found()
    return registration_id


async def _own_registration(request: web.Request, registration_id: int) -> tuple[int, RegistrationRef, int | None]:
    """(candidate, registration, held site hint) in one Redis round trip when the registration is cached.

    The session lookup the candidate wrapper started and the hold read go out in one write.
    """
    app = request.app
    refs = app[keys.REGISTRATION_REFS]
    ref = refs.cached(registration_id)
    hint: int | None = None
    if ref is not None:
        held = app[keys.REDIS].submit(b"HGET", qkeys.holds(ref.exam_id), str(registration_id))
        try:
            candidate = await auth.signed_in(request)
        except BaseException:
            abandon(held)  # not signed in wins over whatever the other lookup found
            raise
        raw = await held
        hint = None if raw is None else int(raw)
    else:
        found = asyncio.ensure_future(refs.get(app[keys.PG], registration_id))
        try:
            candidate = await auth.signed_in(request)
        except BaseException:
            found.cancel()  # not signed in wins over whatever the other lookup found
            raise
        ref = await found
    if ref is None or ref.candidate_id != candidate:
        raise _not_found()
    return candidate, ref, hint


def _admission(request: web.Request, exam_id: int) -> eligibility.Admission:
    config = request.app[keys.LIVE].current.queue_exams.get(exam_id)
    return eligibility.Admission(config is not None and config.enabled, request.app[keys.ADMISSION_KEY],
                                 request.headers.get(ADMISSION_HEADER))


def _expires(expires_at_ms: int | None) -> str | None:
    return None if expires_at_ms is None else iso_local_ms(expires_at_ms)


@routes.post("/api/v1/registrations", "registrations.create", caller=CANDIDATE, body=Enrolment,
             summary="Enrol in an exam: a draft registration",
             answers={201: Answer(Enrolled, "created")},
             errors={403: "registration_closed: outside the registration window",
                     409: "already_registered: one registration per candidate and exam; agreement_required: a newer "
                          "service agreement is in force (details.version; POST /api/v1/me/agreement)",
                     422: "validation_failed: details.fields (unknown_exam, invalid_choice, duplicate, "
                          "out_of_range, must_be_true, …); subjects_still_valid: details.subjects passed in an "
                          "earlier exam of the family and still valid ({code, year, valid_until})"})
async def create_registration(request: web.Request) -> web.Response:
    """Enrol in an exam: 201 ``{"registration_id", "status": "draft"}``."""
    candidate = await auth.candidate_id(request)
    raw = await json_bytes(request)
    app = request.app
    exams = app[keys.CATALOGUE].catalogue.exams
    try:
        form = parse_body(raw, Enrolment)
    except ValidationFailed as shape:
        # One answer lists every bad field, the catalogue's too; a closed exam answers 403 whatever the form says.
        try:
            registrations.parse_request(orjson.loads(raw), exams, now=utcnow())
        except registrations.RegistrationInvalid as choices:
            shape.details["fields"] = {**choices.fields, **shape.details["fields"]}
        raise shape from None
    parsed = registrations.parse_request(form.model_dump(exclude={"captcha"}), exams, now=utcnow())
    await refuse_still_valid(app, candidate, exams[parsed.exam_id], parsed.level, parsed.subjects)
    registration_id = await registrations.create(app[keys.PG], candidate, parsed)
    app[keys.REGISTRATION_REFS].put(
        RegistrationRef(registration_id, candidate, parsed.exam_id, parsed.province, "draft"))
    return json_response({"registration_id": registration_id, "status": "draft"}, status=201, headers=NO_STORE)


@routes.get("/api/v1/registrations/{registration_id}", "registrations.get", caller=CANDIDATE,
            answers={200: Answer(EnrolmentRecord, "the registration")},
            errors={404: "registration_not_found (or not yours)"})
async def get_registration(request: web.Request) -> web.Response:
    """The candidate's own registration; site_id and hold_expires_at are the live hold."""
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    app = request.app
    found = await registrations.get(app[keys.PG], registration_id, candidate)
    if found is None:
        raise _not_found()
    if found["status"] in lifecycle.BEFORE_PAYMENT:
        # PostgreSQL follows the holds through the write-behind; Redis has them now.
        site, expires_at_ms = await holds.current_hold(app[keys.REDIS], found["exam_id"], registration_id)
        found["site_id"], found["hold_expires_at"] = site, _expires(expires_at_ms)
    return json_response(found, headers=NO_STORE)


@routes.put("/api/v1/registrations/{registration_id}/seat", "registrations.seat.put", caller=CANDIDATE,
            session=BATCHED, body=SeatChoice,
            summary="Hold a seat at a site: take, move (the old seat is returned atomically) or refresh",
            params=(Param(ADMISSION_HEADER, "header", {"type": "string"},
                          "required while the exam's waiting room is enabled"),),
            answers={200: Answer(SeatHold, "held")},
            errors={403: "admission_required; registration_closed",
                    404: "registration_not_found, site_not_found (not a site of the exam), exam_not_found",
                    409: "site_full, seat_locked (paid), registration_inactive, hold_contention",
                    422: "validation_failed: site_id missing or not an integer; other_province",
                    503: "service_unavailable: seat inventory loading (Retry-After); or shed"})
async def put_seat(request: web.Request) -> web.Response:
    """Hold a seat at ``site_id`` (take, move or refresh): 200 ``{"site_id", "hold_expires_at"}``."""
    registration_id = _registration_id(request)
    raw = await json_bytes(request)
    _, ref, hint = await _own_registration(request, registration_id)
    choice = parse_body(raw, SeatChoice)  # judged once the registration is known to be the caller's
    app = request.app
    exam = app[keys.CATALOGUE].exam(ref.exam_id)
    admission = _admission(request, exam.id)
    try:
        eligibility.check_seat(exam, ref, choice.site_id, admission, now=utcnow(), now_s=time.time())
    except eligibility.NotApproved:
        # Another process may have approved it since this one cached the status: ask PostgreSQL.
        ref = await app[keys.REGISTRATION_REFS].refresh(app[keys.PG], registration_id, REFUSAL_RECHECK_S) or ref
        eligibility.check_seat(exam, ref, choice.site_id, admission, now=utcnow(), now_s=time.time())
    ttl_s = app[keys.LIVE].current.hold_ttl_s
    replication = app[keys.HOLD_REPLICATION]
    try:
        hold = await holds.hold_seat(app[keys.REDIS], exam.id, registration_id, choice.site_id, ttl_s=ttl_s,
                                     current_site=hint, approved_only=True, replication=replication)
    except holds.NoSeatRight:
        # The right is granted after the approval commits; a lost grant (Redis restarted, the
        # approving process failed in between) is granted again from PostgreSQL, which decides.
        version = await _approved_version(app, registration_id)
        if version is None or not await holds.grant_seat_right(app[keys.REDIS], exam.id, registration_id, version):
            raise
        hold = await holds.hold_seat(app[keys.REDIS], exam.id, registration_id, choice.site_id, ttl_s=ttl_s,
                                     current_site=hint, approved_only=True, replication=replication)
    return json_response({"site_id": hold.site_id, "hold_expires_at": _expires(hold.expires_at_ms)},
                         headers=NO_STORE)


async def _approved_version(app: web.Application, registration_id: int) -> int | None:
    """The registration's version when PostgreSQL has it approved, else None (and the cache told)."""
    row = await app[keys.PG].fetchrow("SELECT status, version FROM registrations WHERE id = $1", registration_id)
    if row is None:
        return None
    refs = app[keys.REGISTRATION_REFS]
    ref = refs.cached(registration_id)
    if ref is not None and ref.status != row["status"]:
        refs.put(ref._replace(status=row["status"]))
    return int(row["version"]) if row["status"] == "approved" else None


@routes.delete("/api/v1/registrations/{registration_id}/seat", "registrations.seat.delete", caller=CANDIDATE,
               session=BATCHED, summary="Give the seat back (no admission token needed)",
               answers={204: Answer(None, "released (or there was none)")},
               errors={404: "registration_not_found", 409: "seat_locked: a paid seat is not released"})
async def delete_seat(request: web.Request) -> web.Response:
    """Give the seat back: 204 (also when there was none). No admission token needed to free a seat."""
    registration_id = _registration_id(request)
    _, ref, hint = await _own_registration(request, registration_id)
    await holds.release_seat(request.app[keys.REDIS], ref.exam_id, registration_id, current_site=hint)
    return web.Response(status=204)


@routes.post("/api/v1/registrations/{registration_id}/confirm", "registrations.confirm", caller=CANDIDATE,
             body=Acknowledgement, body_required=False,
             summary="报名信息确认: the details are final and the automatic review answers",
             answers={200: Answer(Confirmed, "approved, under_review, onsite_review or rejected, with reasons")},
             errors={403: "registration_closed: outside the registration window",
                     404: "registration_not_found",
                     409: "photo_required (no approved photo; details.photo_status: null, needs_review, "
                          "rejected), commitment_required (the commitment route applies and is not signed), "
                          "cannot_confirm (details.status: paid, cancelled, expired)",
                     422: "major_mismatch_unacknowledged: details.majors_same / majors_related"})
async def confirm_registration(request: web.Request) -> web.Response:
    """Make the details final and run the automatic review: 200 ``{"status", "reasons"}``."""
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    form = parse_body(await json_bytes(request), Acknowledgement) if request.can_read_body else Acknowledgement()
    app = request.app
    await _check_open(app, registration_id, candidate)
    moved = await lifecycle.confirm(app[keys.PG], registration_id, candidate,
                                    acknowledge_major_mismatch=form.acknowledge_major_mismatch,
                                    address=app[keys.CLIENT_IP].of(request))
    await after_transition(app, moved)
    return json_response({"registration_id": registration_id, "status": moved.status, "reasons": list(moved.reasons),
                          "version": moved.version}, headers=NO_STORE)


async def _check_open(app: web.Application, registration_id: int, candidate: int) -> None:
    """``RegistrationClosed`` (403) outside the exam's registration window: details become final only within it.

    Someone else's registration is 404 first, so the answer tells nothing of it.
    """
    ref = await app[keys.REGISTRATION_REFS].get(app[keys.PG], registration_id)
    if ref is None or ref.candidate_id != candidate:
        raise _not_found()
    exam = app[keys.CATALOGUE].catalogue.exam(ref.exam_id)
    if exam is not None:
        registrations.check_window(exam, now=utcnow())


async def after_transition(app: web.Application, moved: lifecycle.Moved, *, force_release: bool = False) -> None:
    """Redis follows PostgreSQL: the seat right granted on approval; revoked with the seat released otherwise.

    Both carry the transition's version, so a grant and a revocation reaching Redis out of order
    still leave the later one in force. The process's cached status is updated too.
    """
    refs = app[keys.REGISTRATION_REFS]
    refs.put(RegistrationRef(moved.registration_id, moved.candidate_id, moved.exam_id, moved.province, moved.status))
    if not moved.changed:
        return
    redis = app[keys.REDIS]
    if moved.status == "approved":
        await holds.grant_seat_right(redis, moved.exam_id, moved.registration_id, moved.version)
    elif moved.status != "paid":
        await holds.release_seat(redis, moved.exam_id, moved.registration_id, force=force_release,
                                 revoke_version=moved.version)
