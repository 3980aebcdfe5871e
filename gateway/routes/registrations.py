"""Enrolment: create and read a registration, choose or give back its seat, confirm it.

The seat hold is the peak path. It costs two Redis round trips and no PostgreSQL read once
the registration is known to this process: (1) the session and the registration's current
hold (a hint for the hold script) in one auto-pipelined batch, (2) the hold script. The
admission token is an HMAC checked in Python; the exam and its sites come from the
in-memory catalogue; the registration's owner, exam and province from ``RegistrationRefs``
(one ``fetchrow`` the first time this process sees the registration). Rate-limit rules
keyed by candidate, when the live config has any for the route, add one limiter call.

Seats can be chosen while the registration is a draft or confirmed (a confirmed one whose
hold lapsed before payment must be able to take a seat again) and registration is open; a
paid seat neither moves nor is released (409 ``seat_locked``); cancelled and expired
registrations get 409 ``registration_inactive``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

from aiohttp import web

from core import registrations
from core.catalogue import Exam, Site
from core.redis import abandon
from core.timeutil import iso_local_ms, utcnow
from gateway import auth, keys
from gateway.admission_gate import require_admission
from gateway.bodies import json_response, read_json
from gateway.errors import Conflict, NotFoundError, ValidationFailed
from gateway.pathids import path_id
from gateway.registration_refs import RegistrationRef
from queueing import holds
from queueing import keys as qkeys

T = TypeVar("T")
NO_STORE = {"Cache-Control": "no-store"}
SEAT_STATUSES = ("draft", "confirmed", "paid")  # paid: the hold script answers (same seat, or seat_locked)


def _not_found() -> NotFoundError:
    return NotFoundError("报名记录不存在", code="registration_not_found")


def _registration_id(request: web.Request) -> int:
    registration_id = path_id(request.match_info["registration_id"])
    if registration_id is None:
        raise _not_found()
    return registration_id


async def _signed_in_with(request: web.Request, other: Awaitable[T]) -> tuple[int, T]:
    """The signed-in candidate and ``other``'s result, awaited together (their Redis commands share a batch)."""
    candidate, result = await asyncio.gather(auth.candidate_id(request), other, return_exceptions=True)
    if isinstance(candidate, BaseException):
        raise candidate  # not signed in wins over whatever the other lookup found
    if isinstance(result, BaseException):
        raise result
    return candidate, result  # type: ignore[return-value]


async def _own_registration(request: web.Request, registration_id: int) -> tuple[int, RegistrationRef, int | None]:
    """(candidate, registration, held site hint) in one Redis round trip when the registration is cached."""
    app = request.app
    refs = app[keys.REGISTRATION_REFS]
    ref = refs.cached(registration_id)
    hint: int | None = None
    if ref is not None:
        # The session lookup and the hold read go out in one write and are awaited in turn (no Task each).
        signed_in = auth.submit_candidate(request)
        held = app[keys.REDIS].submit(b"HGET", qkeys.holds(ref.exam_id), str(registration_id))
        try:
            candidate = await auth.finish_candidate(request, signed_in)
        except BaseException:
            abandon(held)  # not signed in wins over whatever the other lookup found
            raise
        raw = await held
        hint = None if raw is None else int(raw)
    else:
        candidate, ref = await _signed_in_with(request, refs.get(app[keys.PG], registration_id))
    if ref is None or ref.candidate_id != candidate:
        raise _not_found()
    return candidate, ref, hint


def _exam(request: web.Request, exam_id: int) -> Exam:
    exam = request.app[keys.CATALOGUE].catalogue.exam(exam_id)
    if exam is None:  # created after the last catalogue refresh
        raise NotFoundError("考试不存在", code="exam_not_found", details={"exam_id": exam_id})
    return exam


def _site_id(body: dict[str, Any]) -> int:
    problems = {key: "unknown_field" for key in body if key != "site_id"}
    site_id = body.get("site_id")
    if site_id is None:
        problems["site_id"] = "required"
    elif isinstance(site_id, bool) or not isinstance(site_id, int):
        problems["site_id"] = "must_be_integer"
    if problems:
        raise ValidationFailed(problems)
    return int(site_id)  # type: ignore[arg-type]


def _site(exam: Exam, ref: RegistrationRef, site_id: int) -> Site:
    site = exam.sites.get(site_id)
    if site is None:
        raise NotFoundError("该考试没有这个考点", code="site_not_found", details={"site_id": site_id})
    if site.province != ref.province:
        raise ValidationFailed({"site_id": "other_province"}, "只能选择报考省份的考点")
    return site


def _seat_allowed(ref: RegistrationRef) -> None:
    if ref.status not in SEAT_STATUSES:
        raise Conflict("该报名已取消或过期，不能选择考点", code="registration_inactive",
                       details={"status": ref.status})


def _expires(expires_at_ms: int | None) -> str | None:
    return None if expires_at_ms is None else iso_local_ms(expires_at_ms)


async def create_registration(request: web.Request) -> web.Response:
    """Enrol in an exam: 201 ``{"registration_id", "status": "draft"}``."""
    candidate = await auth.candidate_id(request)
    body = await read_json(request)
    app = request.app
    parsed = registrations.parse_request(body, app[keys.CATALOGUE].catalogue.exams, now=utcnow())
    registration_id = await registrations.create(app[keys.PG], candidate, parsed)
    app[keys.REGISTRATION_REFS].put(
        RegistrationRef(registration_id, candidate, parsed.exam_id, parsed.province, "draft"))
    return json_response({"registration_id": registration_id, "status": "draft"}, status=201, headers=NO_STORE)


async def get_registration(request: web.Request) -> web.Response:
    """The candidate's own registration; its seat and hold expiry are the live hold in Redis."""
    registration_id = _registration_id(request)
    candidate = await auth.candidate_id(request)
    app = request.app
    found = await registrations.get(app[keys.PG], registration_id, candidate)
    if found is None:
        raise _not_found()
    if found["status"] in ("draft", "confirmed"):
        # PostgreSQL follows the holds through the write-behind; Redis has them now.
        site, expires_at_ms = await holds.current_hold(app[keys.REDIS], found["exam_id"], registration_id)
        found["site_id"], found["hold_expires_at"] = site, _expires(expires_at_ms)
    return json_response(found, headers=NO_STORE)


async def put_seat(request: web.Request) -> web.Response:
    """Hold a seat at ``site_id`` (take, move or refresh): 200 ``{"site_id", "hold_expires_at"}``."""
    registration_id = _registration_id(request)
    body = await read_json(request)
    candidate, ref, hint = await _own_registration(request, registration_id)
    site_id = _site_id(body)
    exam = _exam(request, ref.exam_id)
    _site(exam, ref, site_id)
    _seat_allowed(ref)
    registrations.check_window(exam)
    require_admission(request, candidate_id=candidate, exam_id=exam.id)
    hold = await holds.hold_seat(request.app[keys.REDIS], exam.id, registration_id, site_id,
                                 ttl_s=request.app[keys.LIVE].current.hold_ttl_s, admitted=True, current_site=hint)
    return json_response({"site_id": hold.site_id, "hold_expires_at": _expires(hold.expires_at_ms)},
                         headers=NO_STORE)


async def delete_seat(request: web.Request) -> web.Response:
    """Give the seat back: 204 (also when there was none). No admission token needed to free a seat."""
    registration_id = _registration_id(request)
    _, ref, hint = await _own_registration(request, registration_id)
    await holds.release_seat(request.app[keys.REDIS], ref.exam_id, registration_id, current_site=hint)
    return web.Response(status=204)


async def confirm_registration(request: web.Request) -> web.Response:
    """Make the details final; needs a live hold. 200 ``{"registration_id", "status", "site_id", "hold_expires_at"}``."""
    registration_id = _registration_id(request)
    candidate, ref, _ = await _own_registration(request, registration_id)
    app = request.app
    site, expires_at_ms = await holds.current_hold(app[keys.REDIS], ref.exam_id, registration_id)
    live = site is not None and (expires_at_ms is None or expires_at_ms > holds.clock_ms())
    await registrations.confirm(app[keys.PG], registration_id, candidate, has_live_hold=live)
    if ref.status == "draft":
        app[keys.REGISTRATION_REFS].put(ref._replace(status="confirmed"))
    return json_response({"registration_id": registration_id, "status": "confirmed", "site_id": site,
                          "hold_expires_at": _expires(expires_at_ms)}, headers=NO_STORE)


def setup(app: web.Application) -> None:
    """Add the enrolment and seat routes."""
    app.router.add_post("/api/v1/registrations", create_registration, name="registrations.create")
    app.router.add_get("/api/v1/registrations/{registration_id}", get_registration, name="registrations.get")
    app.router.add_put("/api/v1/registrations/{registration_id}/seat", put_seat, name="registrations.seat.put")
    app.router.add_delete("/api/v1/registrations/{registration_id}/seat", delete_seat,
                          name="registrations.seat.delete")
    app.router.add_post("/api/v1/registrations/{registration_id}/confirm", confirm_registration,
                        name="registrations.confirm")
