"""Admission-ticket and score lookups, the release-time peak: PostgreSQL never sees the spike.

Outside the window (before ``score_release_at`` for scores; outside the print window for
tickets) the answer is 425 with the time, decided from the in-memory catalogue before any
captcha, Redis or PostgreSQL work. Inside it, the throttle (all the route's rules: the
middleware leaves them to the handler), the captcha check and the record's Redis read are
sent in the same tick, so they leave together (the limiter's script on its own connection);
the name is compared in constant time and a wrong id, ticket or name all get the same 404. A miss goes to PostgreSQL through ``lookups.service.Lookups``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import unicodedata
from datetime import datetime
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from core.catalogue import Exam
from core.identity import normalise_id_number, normalise_name
from core.timeutil import iso_local, utcnow
from gateway import captcha_gate, keys
from gateway.bodies import json_response, read_json
from gateway.errors import ApiError, NotFoundError, ValidationFailed
from lookups import links, pdf, records

NO_STORE = {"Cache-Control": "no-store"}
NAME_MAX = 64
KEY_MAX = 32


def _not_found() -> NotFoundError:
    # One answer whether the id, the ticket number or the name is wrong.
    return NotFoundError("未查询到相关记录，请核对姓名和证件号码（或准考证号）", code="not_found")


def _text(body: dict[str, Any], field: str, problems: dict[str, str], *, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems[field] = "must_be_text"
        return None
    value = unicodedata.normalize("NFC", value.strip())
    if len(value) > limit:
        problems[field] = "too_long"
        return None
    return value


def parse_query(body: dict[str, Any], *, ticket_allowed: bool) -> tuple[int, str, str, str]:
    """(exam_id, name, mode, value) of a lookup body; 422 naming every problem."""
    allowed = {"exam_id", "name", "id_number", "captcha"} | ({"ticket_no"} if ticket_allowed else set())
    problems = {key: "unknown_field" for key in body if key not in allowed}
    exam_id = body.get("exam_id")
    if exam_id is None:
        problems["exam_id"] = "required"
    elif isinstance(exam_id, bool) or not isinstance(exam_id, int) or exam_id <= 0:
        problems["exam_id"] = "must_be_exam_id"
    name = _text(body, "name", problems, limit=NAME_MAX)
    if name is None and "name" not in problems:
        problems["name"] = "required"
    id_number = _text(body, "id_number", problems, limit=KEY_MAX)
    ticket_no = _text(body, "ticket_no", problems, limit=KEY_MAX) if ticket_allowed else None
    if id_number is not None and ticket_no is not None:
        problems["ticket_no"] = "give_id_number_or_ticket_no_not_both"
    elif id_number is None and ticket_no is None and not ({"id_number", "ticket_no"} & problems.keys()):
        problems["id_number"] = "required"
    if problems:
        raise ValidationFailed(problems)
    # In the forms registration stores: the record's key, the throttle's subject, the name compared.
    mode, value = ("id_number", normalise_id_number(id_number)) if id_number is not None else ("ticket_no", ticket_no)
    return int(exam_id), normalise_name(name), mode, value  # type: ignore[arg-type, return-value]


def _exam(request: web.Request, exam_id: int) -> Exam:
    exam = request.app[keys.CATALOGUE].catalogue.exam(exam_id)
    if exam is None:
        raise NotFoundError("考试不存在", code="exam_not_found", details={"exam_id": exam_id})
    return exam


def _too_early(message: str, code: str, at: datetime, details: dict[str, Any]) -> ApiError:
    """425 with the time in ``details``; Retry-After only when the time is ahead (at most a day)."""
    seconds = (at - utcnow()).total_seconds()
    return ApiError(message, code=code, status=425, details=details,
                    retry_after_s=min(seconds, 86400) if seconds > 0 else None)


def same_name(stored: str, given: str) -> bool:
    """Constant-time comparison of a stored name (normalised by registration) with a given one normalised alike."""
    return hmac.compare_digest(stored.encode(), given.encode())


async def _record(request: web.Request, body: dict[str, Any], exam: Exam, mode: str,
                  value: str) -> records.Record | None:
    """The record found by ``mode``/``value`` or None (its read sent in the captcha's and the throttle's batch).

    The caller compares the name: the one 404 covers no record and another name alike.
    """
    service = request.app[keys.LOOKUPS]
    pending: list[asyncio.Future[Any] | None] = []
    try:
        await captcha_gate.guard(request, body, id_number=value if mode == "id_number" else None,
                                 alongside=lambda: pending.append(service.submit(exam.id, mode, value)))
    except BaseException:
        service.abandon(pending[0] if pending else None)
        raise
    return await service.finish(exam.id, mode, value, pending[0])


def released_exam(request: web.Request, body: dict[str, Any]) -> tuple[Exam, str, str, str]:
    """(exam, name, mode, value) of a score lookup; 422, 404 for an unknown exam, 425 before the release."""
    exam_id, name, mode, value = parse_query(body, ticket_allowed=True)
    exam = _exam(request, exam_id)
    if utcnow() < exam.score_release_at:
        raise _too_early("成绩尚未发布", "not_yet_released", exam.score_release_at,
                         {"release_at": iso_local(exam.score_release_at)})
    return exam, name, mode, value


def scores_response(exam: Exam, record: records.Record | None, name: str) -> web.Response:
    """The candidate's scores; the one 404 for no record, another name or no scores."""
    if record is None or not same_name(record.name, name) or not record.scores:
        raise _not_found()
    subjects = []
    for code, score in sorted(record.scores.items()):
        subject = exam.subjects.get(code)
        pass_mark = subject.pass_mark if subject else None
        subjects.append({"code": code, "name": subject.name if subject else code, "score": float(score),
                         "pass_mark": pass_mark, "passed": pass_mark is not None and float(score) >= pass_mark})
    return json_response({"exam_id": exam.id, "name": record.name, "ticket_no": record.ticket_no,
                          "subjects": subjects, "passed_all": all(s["passed"] for s in subjects)},
                         headers=NO_STORE)


async def lookup_score(request: web.Request) -> web.Response:
    """``POST /api/v1/scores/lookup``: the candidate's scores once released."""
    body = await read_json(request)
    exam, name, mode, value = released_exam(request, body)
    return scores_response(exam, await _record(request, body, exam, mode, value), name)


def ticket_body(request: web.Request, exam: Exam, record: records.Record) -> dict[str, Any]:
    """The ticket as the lookup answers it (and the PDF shows it)."""
    site = exam.sites.get(record.site_id)
    subjects = []
    for code in record.subjects:
        subject = exam.subjects.get(code)
        subjects.append({"code": code, "name": subject.name if subject else code,
                         "starts_at": iso_local(subject.starts_at) if subject else None,
                         "ends_at": iso_local(subject.ends_at) if subject else None})
    return {"ticket_no": record.ticket_no, "name": record.name, "exam": {"id": exam.id, "name": exam.name},
            "site": {"name": site.name if site else None, "address": site.address if site else None},
            "room": record.room, "seat_no": record.seat_no, "subjects": subjects}


async def lookup_ticket(request: web.Request) -> web.Response:
    """``POST /api/v1/tickets/lookup``: the admission ticket inside the print window, with a signed PDF link."""
    body = await read_json(request)
    exam_id, name, mode, value = parse_query(body, ticket_allowed=False)
    exam = _exam(request, exam_id)
    now = utcnow()
    if not exam.ticket_print_opens_at <= now < exam.ticket_print_closes_at:
        raise _too_early("当前不在准考证打印时间内", "not_yet_available", exam.ticket_print_opens_at,
                         {"available_from": iso_local(exam.ticket_print_opens_at),
                          "available_until": iso_local(exam.ticket_print_closes_at)})
    record = await _record(request, body, exam, mode, value)
    if record is None or not same_name(record.name, name):
        raise _not_found()
    answer = ticket_body(request, exam, record)
    answer["pdf_url"] = request.app[keys.TICKET_LINKS](record.ticket_no, exam.id)
    return json_response(answer, headers=NO_STORE)


PDF_CACHE_TTL_S = 86400


def _pdf_key(ticket_no: str) -> str:
    return f"eg:lk:pdf:{ticket_no}"


def _ticket_doc(exam: Exam, record: records.Record) -> pdf.TicketDoc:
    site = exam.sites.get(record.site_id)
    subjects = tuple(pdf.TicketSubject(code, s.name, s.starts_at, s.ends_at)
                     for code in record.subjects if (s := exam.subjects.get(code)) is not None)
    return pdf.TicketDoc(record.ticket_no, record.name, record.id_number, exam.name,
                         site.name if site else "", site.address if site else "", record.room, record.seat_no,
                         subjects)


async def ticket_pdf(request: web.Request) -> web.Response:
    """``GET /api/v1/tickets/{ticket_no}.pdf?exam=&exp=&sig=``: the ticket PDF behind a signed, expiring link.

    Rendered once per ticket (in a thread) and kept in Redis for a day; 403 for a tampered,
    foreign or expired link, the same answer for each.
    """
    ticket_no = request.match_info["ticket_no"]
    app = request.app
    query = request.query
    try:
        exam_id = links.verify_link(app[keys.TICKET_PDF_KEY], ticket_no, query.get("exam", ""), query.get("exp", ""),
                                    query.get("sig", ""))
    except links.LinkError:
        raise ApiError("下载链接无效或已过期，请重新查询准考证", code="link_invalid", status=403) from None
    exam = _exam(request, exam_id)
    redis = app[keys.REDIS]
    cached = None
    with contextlib.suppress(RedisError, ConnectionError, TimeoutError, OSError):
        cached = await redis.execute(b"GET", _pdf_key(ticket_no))
    if cached is None:
        service = app[keys.LOOKUPS]
        record = await service.finish(exam.id, "ticket_no", ticket_no, service.submit(exam.id, "ticket_no", ticket_no))
        if record is None:
            raise _not_found()
        font = app[keys.SETTINGS].ticket_font
        cached = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(pdf.render_ticket, _ticket_doc(exam, record), font_path=font))
        with contextlib.suppress(RedisError, ConnectionError, TimeoutError, OSError):
            await redis.execute(b"SET", _pdf_key(ticket_no), cached, b"EX", PDF_CACHE_TTL_S)
    return web.Response(body=cached, content_type="application/pdf", headers={
        "Cache-Control": "private, max-age=600",
        "Content-Disposition": f'inline; filename="ticket-{ticket_no}.pdf"'})


def setup(app: web.Application) -> None:
    """Add the lookup routes."""
    app.router.add_post("/api/v1/tickets/lookup", lookup_ticket, name="tickets.lookup")
    app.router.add_post("/api/v1/scores/lookup", lookup_score, name="scores.lookup")
    app.router.add_get("/api/v1/tickets/{ticket_no}.pdf", ticket_pdf, name="tickets.pdf")
