"""The lifecycle for candidates: the exam's documents and review points, edit, commitment, withdraw, cancel.

Each route is one ``core.lifecycle`` transition (atomic in PostgreSQL, audited, 409 naming the
state when not allowed), then ``after_transition`` brings Redis in line: the seat right revoked
and the seat released when a registration stops being approved. None of these is a peak path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import AfterValidator, Field

from core import documents, lifecycle, registrations
from core.timeutil import iso_local, utcnow
from gateway import auth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.errors import NotFoundError, ValidationFailed
from gateway.models import Body, Id, Int, Reply, Text
from gateway.routes.registrations import (
    _not_found,
    _registration_id,
    _some,
    _work_years,
    after_transition,
)
from gateway.routes.validity import refuse_still_valid
from gateway.routing import CANDIDATE, Answer, Param, Routes

routes = Routes("Registrations")
KINDS = Literal["notice", "commitment", "instructions"]


class DocumentText(Reply):
    """One of the exam's texts at the version in force."""

    version: int
    title: str
    text: str
    sha256: str = Field(description="SHA-256 of the title and text: what a signature names")


class ReviewPointItem(Reply):
    """A review point (审核点)."""

    review_point_id: int
    province: str
    city: str
    name: str
    address: str


class Changes(Body):
    """The choices a draft or rejected registration may change (exam and province stay); absent ones stay."""

    # Absent means unchanged; null is refused (but for review_point, where null clears it).
    city: Text(1, registrations.CITY_MAX_CHARS) = None  # type: ignore[valid-type]
    level: str = None  # type: ignore[assignment]
    specialty: str = None  # type: ignore[assignment]
    subjects: Annotated[list[str], AfterValidator(_some),
                        Field(json_schema_extra={"minItems": 1, "uniqueItems": True})] = None  # type: ignore[assignment]
    work_years: Annotated[Int, AfterValidator(_work_years), Field(json_schema_extra={
        "minimum": 0, "maximum": registrations.WORK_YEARS_MAX})] = None  # type: ignore[assignment]
    review_point: Id | None = Field(None, description="null clears it")


class Signature(Body):
    """The version of the commitment text the candidate read and agrees to (我已阅知并同意)."""

    version: Id


class Signed(Reply):
    """The signed commitment."""

    registration_id: int
    version: int
    signed_at: datetime


class StatusReply(Reply):
    """A registration's state after a transition."""

    registration_id: int
    status: str
    version: int


class HistoryItem(Reply):
    """One transition of the registration."""

    action: str
    to: str
    at: datetime
    reasons: list[dict[str, str]]


def _address(request: web.Request) -> str:
    return request.app[keys.CLIENT_IP].of(request)


Transition = Callable[..., Awaitable[lifecycle.Moved]]


async def _candidate_moves(request: web.Request, transition: Transition) -> web.Response:
    """One candidate transition on the path's registration, Redis brought in line, the state answered.

    202 when the registration stays paid (a cancellation request was recorded instead).
    """
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    moved = await transition(request.app[keys.PG], registration_id, candidate, address=_address(request))
    await after_transition(request.app, moved)
    return json_response({"registration_id": registration_id, "status": moved.status, "version": moved.version},
                         status=202 if moved.status == "paid" else 200, headers=NO_STORE)


@routes.get("/api/v1/exams/{exam_id}/documents/{kind}", "exams.documents.get",
            summary="The exam's notice, commitment or instructions text, at the version in force",
            answers={200: Answer(DocumentText, "the text")},
            errors={404: "exam_not_found; document_not_found (unknown kind, or none published)"})
async def get_document(request: web.Request) -> web.Response:
    """The text a candidate reads before signing: ``{"version", "title", "text", "sha256"}``."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    kind = request.match_info["kind"]
    found = await documents.latest(request.app[keys.PG], exam.id, kind) if kind in documents.KINDS else None
    if found is None:
        raise NotFoundError("该考试尚未发布此文件", code="document_not_found", details={"kind": kind})
    return json_response({"version": found.version, "title": found.title, "text": found.text,
                          "sha256": found.sha256}, headers={"Cache-Control": "no-cache"})


@routes.get("/api/v1/exams/{exam_id}/review-points", "exams.review_points.list",
            params=(Param("province", "query", {"type": "string", "pattern": "^[1-8][0-9]$"},
                          "only this province's review points"),),
            answers={200: Answer(list[ReviewPointItem], "review points")},
            errors={404: "exam_not_found", 422: "validation_failed: bad province code"})
async def list_review_points(request: web.Request) -> web.Response:
    """The exam's review points (审核点), where on-site review happens."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    province = request.query.get("province")
    if province is not None and not (len(province) == 2 and province.isascii() and province.isdigit()
                                     and province[0] in "12345678"):
        raise ValidationFailed({"province": "must be a two-digit province code, e.g. 11"})
    return json_response([{"review_point_id": p.id, "province": p.province, "city": p.city, "name": p.name,
                           "address": p.address}
                          for p in exam.review_points.values() if province is None or p.province == province])


@routes.patch("/api/v1/registrations/{registration_id}", "registrations.patch", caller=CANDIDATE, body=Changes,
              summary="Change a draft or rejected registration (it is a draft again and must be confirmed)",
              answers={200: Answer(StatusReply, "changed")},
              errors={404: "registration_not_found", 409: "registration_locked: details.status",
                      422: "validation_failed: details.fields (invalid_choice, …); subjects_still_valid"})
async def patch_registration(request: web.Request) -> web.Response:
    """Edit the choices of a draft or rejected registration."""
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    changes = parse_body(await json_bytes(request, ("application/json", "application/merge-patch+json")), Changes)
    app = request.app
    current = await registrations.get(app[keys.PG], registration_id, candidate)
    if current is None:
        raise _not_found()
    merged = {key: current[key] for key in ("exam_id", "province", "city", "level", "specialty", "subjects",
                                            "work_years", "review_point")}
    merged.update(changes.model_dump(exclude_unset=True))
    try:
        parsed = registrations.parse_request(merged, app[keys.CATALOGUE].catalogue.exams,
                                             now=utcnow())
    except registrations.RegistrationInvalid as exc:
        raise ValidationFailed(exc.fields) from None
    await refuse_still_valid(app, candidate, app[keys.CATALOGUE].exam(parsed.exam_id), parsed.level, parsed.subjects)
    moved = await lifecycle.edit(app[keys.PG], registration_id, candidate, parsed, parsed.review_point,
                                 address=_address(request))
    await after_transition(app, moved)
    return json_response({"registration_id": registration_id, "status": moved.status, "version": moved.version},
                         headers=NO_STORE)


@routes.post("/api/v1/registrations/{registration_id}/commitment", "registrations.commitment.sign",
             caller=CANDIDATE, body=Signature,
             summary="Sign the electronic commitment (告知承诺) at the version read",
             answers={200: Answer(Signed, "signed: the version's hash, the time and the address are kept")},
             errors={403: "commitment_not_allowed: details.reason integrity_record (in the integrity archive) or "
                          "not_offered (the province reviews every registration); registration_closed",
                     404: "registration_not_found; document_not_found (no commitment text published)",
                     409: "document_version_changed (a newer text is in force: details.version); invalid_state"})
async def sign_commitment(request: web.Request) -> web.Response:
    """我已阅知并同意: sign the commitment text of ``version``."""
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    signature = parse_body(await json_bytes(request), Signature)
    app = request.app
    current = await registrations.get(app[keys.PG], registration_id, candidate)
    if current is None:
        raise _not_found()
    exam = app[keys.CATALOGUE].catalogue.exam(current["exam_id"])
    if exam is not None:
        registrations.check_window(exam, now=utcnow())
    text = await documents.latest(app[keys.PG], current["exam_id"], "commitment")
    if text is None:
        raise NotFoundError("该考试尚未发布告知承诺书", code="document_not_found", details={"kind": "commitment"})
    if text.version != signature.version:
        raise documents.VersionMismatch("commitment", signature.version, text.version)
    signed_at = await lifecycle.sign_commitment(app[keys.PG], registration_id, candidate, version=text.version,
                                                text_sha256=text.sha256, address=_address(request))
    return json_response({"registration_id": registration_id, "version": text.version,
                          "signed_at": iso_local(signed_at)}, headers=NO_STORE)


@routes.delete("/api/v1/registrations/{registration_id}/commitment", "registrations.commitment.withdraw",
               caller=CANDIDATE, summary="Withdraw the commitment before payment: the registration is cancelled",
               answers={200: Answer(StatusReply, "cancelled, its seat released and its order closed")},
               errors={404: "registration_not_found; commitment_not_found",
                       409: "invalid_state (paid, cancelled, expired)"})
async def withdraw_commitment(request: web.Request) -> web.Response:
    """Withdraw the signed commitment: the registration is cancelled."""
    return await _candidate_moves(request, lifecycle.withdraw_commitment)


@routes.post("/api/v1/registrations/{registration_id}/withdraw", "registrations.withdraw", caller=CANDIDATE,
             summary="Withdraw the confirmation to edit (where the province's rule allows): a draft again",
             answers={200: Answer(StatusReply, "a draft again, its seat released and its order closed")},
             errors={404: "registration_not_found",
                     409: "withdraw_not_allowed: details.status (and the province's rule in the message)"})
async def withdraw(request: web.Request) -> web.Response:
    """Take the confirmation back: the registration is a draft again."""
    return await _candidate_moves(request, lifecycle.withdraw)


@routes.post("/api/v1/registrations/{registration_id}/cancel", "registrations.cancel", caller=CANDIDATE,
             summary="放弃报名: cancelled before payment; after payment a request an operator approves into a refund",
             answers={200: Answer(StatusReply, "cancelled"),
                      202: Answer(StatusReply, "paid: the cancellation request is recorded")},
             errors={404: "registration_not_found", 409: "invalid_state (cancelled, expired)"})
async def cancel(request: web.Request) -> web.Response:
    """Give up the registration."""
    return await _candidate_moves(request, lifecycle.cancel)


@routes.get("/api/v1/registrations/{registration_id}/history", "registrations.history", caller=CANDIDATE,
            summary="The registration's transitions, oldest first (the status page's flow)",
            answers={200: Answer(list[HistoryItem], "transitions")}, errors={404: "registration_not_found"})
async def history(request: web.Request) -> web.Response:
    """What happened to the registration, and why."""
    candidate = await auth.candidate_id(request)
    registration_id = _registration_id(request)
    app = request.app
    if await registrations.get(app[keys.PG], registration_id, candidate) is None:
        raise _not_found()
    return json_response([{"action": e["action"], "to": e["to"], "at": iso_local(e["at"]),
                           "reasons": e["reasons"]} for e in await lifecycle.events(app[keys.PG], registration_id)],
                         headers=NO_STORE)
