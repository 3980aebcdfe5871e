"""The waiting room over HTTP: take a place, poll it, and get the admission token once admitted.

The room of an exam exists only while live config enables it (``queue.exams{id}.enabled``);
otherwise both routes answer 404 ``queue_not_enabled``. It opens at the exam's
``registration_opens_at``: who joins before is drawn into a random order at the opening,
who joins after is served first come, first served. ``examgate worker`` moves the serving
counter at the live ``admit_per_s``.

The status poll is the hot path: the session and the room's status script go out in one
auto-pipelined batch (one Redis round trip, no PostgreSQL; ``session=BATCHED``); the admission
token is an HMAC.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from core.catalogue import Exam
from core.redis import abandon
from core.registrations import check_window
from core.timeutil import utcnow
from gateway import auth, keys
from gateway.bodies import NO_STORE, json_response
from gateway.errors import ApiError, NotFoundError
from gateway.liveconfig import QueueExam
from gateway.models import Reply
from gateway.routing import BATCHED, CANDIDATE, Answer, Param, Routes
from queueing import admission, waiting_room
from queueing.errors import AdmissionExpired, PlaceExpired, PlaceNotFound

routes = Routes("Waiting room")

TICKET = Param("ticket", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
               "the join's ticket; any other (or another candidate's) is 404 queue_ticket_not_found")


class QueuePlace(Reply):
    """A place in the waiting room, as joining answers it."""

    ticket: str
    position: int = Field(description="0 while the pre-opening draw has not happened")
    serving: int
    ahead: int
    eta_s: int
    poll_after_s: int
    admitted: bool


class QueueWaiting(Reply):
    """A place still waiting."""

    position: int = Field(description="0 while the pre-opening draw has not happened")
    serving: int
    ahead: int
    eta_s: int
    poll_after_s: int
    admitted: Literal[False]


class QueueAdmitted(Reply):
    """An admitted place: the token for the seat routes and the seconds it stays valid (not renewed by polling)."""

    admitted: Literal[True]
    admission_token: str
    expires_in: int


def _room(request: web.Request) -> tuple[Exam, QueueExam]:
    """The exam of the path and its live waiting-room settings; 404 unless the room is enabled."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    config = request.app[keys.LIVE].current.queue_exams.get(exam.id)
    if config is None or not config.enabled:
        raise NotFoundError("该考试当前无需排队", code="queue_not_enabled", details={"exam_id": exam.id})
    return exam, config


@routes.post("/api/v1/exams/{exam_id}/queue", "queue.join", caller=CANDIDATE,
             summary="Take (or find again) a place in the exam's waiting room (when enabled by live config)",
             answers={202: Answer(QueuePlace, "the place; position 0 until the pre-opening draw")},
             errors={403: "registration_closed: the exam's registration has closed",
                     404: "exam_not_found, queue_not_enabled"})
async def join_queue(request: web.Request) -> web.Response:
    """Take (or find again) the candidate's place: 202 with its ticket, position and numbers."""
    exam, config = _room(request)
    candidate = await auth.candidate_id(request)
    now = utcnow()
    if now >= exam.registration_closes_at:
        check_window(exam, now=now)  # raises registration_closed; before the opening joining is the point
    place = await waiting_room.join(
        request.app[keys.REDIS], exam.id, candidate, opens_at_s=exam.registration_opens_at.timestamp(),
        place_ttl_s=config.place_ttl_s, admit_per_s=config.admit_per_s,
    )  # fmt: skip
    return json_response({
        "ticket": place.ticket, "position": place.position, "serving": place.serving, "ahead": place.ahead,
        "eta_s": place.eta_s, "poll_after_s": place.poll_after_s, "admitted": place.admitted,
    }, status=202, headers=NO_STORE)


@routes.get("/api/v1/exams/{exam_id}/queue/{ticket}", "queue.status", caller=CANDIDATE, session=BATCHED,
            summary="Poll a place; once admitted, an admission token for the seat routes",
            params=(TICKET,),
            answers={200: Answer(QueueWaiting | QueueAdmitted, "waiting, or admitted with a token")},
            errors={404: "exam_not_found, queue_not_enabled, queue_ticket_not_found (unknown, not yours, or "
                         "forgotten long after it was passed)",
                    410: "queue_place_expired: not polled within the place TTL, or the admission expired "
                         "(details.reason admission_expired); join again"})
async def queue_status(request: web.Request) -> web.Response:
    """Poll a place: its numbers, or ``{"admitted": true, "admission_token", "expires_in"}``.

    The token expires ``admission_ttl_s`` after the first poll that found the place admitted, the
    same for every later poll (polling never renews it); after that the poll answers 410
    ``queue_place_expired`` (details ``reason: admission_expired``) and the candidate joins again.
    """
    try:
        exam, config = _room(request)
    except ApiError:
        await auth.signed_in(request)  # not signed in wins over an unknown or closed room
        raise
    app = request.app
    redis = app[keys.REDIS]
    # The status script goes out in the write that carries the session lookup the candidate wrapper
    # started (no await between them, no Task per lookup); not signed in wins over whatever it found.
    try:
        polled: waiting_room.PendingStatus | BaseException = waiting_room.submit_status(
            redis, exam.id, request.match_info["ticket"], admit_per_s=config.admit_per_s,
            admission_ttl_s=config.admission_ttl_s)
    except PlaceNotFound as exc:
        polled = exc
    try:
        candidate = await auth.signed_in(request)
    except BaseException:
        if isinstance(polled, waiting_room.PendingStatus):
            abandon(polled.reply)
        raise
    status: waiting_room.Status | BaseException
    if isinstance(polled, BaseException):
        status = polled
    else:
        try:
            status = await waiting_room.finish_status(redis, polled)
        except Exception as exc:
            status = exc
    if isinstance(status, PlaceExpired) and status.candidate_id != candidate:
        raise PlaceNotFound(exam.id)  # someone else's ticket is as good as none
    if isinstance(status, AdmissionExpired):
        raise ApiError("入场资格已过期，请重新排队", code="queue_place_expired", status=410,
                       details={"exam_id": exam.id, "reason": "admission_expired"})
    if isinstance(status, BaseException):
        raise status
    if status.candidate_id != candidate:
        raise PlaceNotFound(exam.id)
    if status.admitted:
        assert status.admitted_at_s is not None and status.admission_left_s is not None
        token = admission.issue(app[keys.ADMISSION_KEY], candidate, exam.id, ttl_s=config.admission_ttl_s,
                                now_s=status.admitted_at_s)
        return json_response({"admitted": True, "admission_token": token, "expires_in": status.admission_left_s},
                             headers=NO_STORE)
    return json_response({
        "position": status.position, "serving": status.serving, "ahead": status.ahead, "eta_s": status.eta_s,
        "poll_after_s": status.poll_after_s, "admitted": False,
    }, headers=NO_STORE)
