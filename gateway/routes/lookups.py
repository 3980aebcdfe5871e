"""Admission-ticket and score lookups, the release-time peak: PostgreSQL never sees the spike.

Outside the window (before ``score_release_at`` for scores; outside the print window for
tickets) the answer is 425 with the time, decided from the in-memory catalogue before any
captcha, Redis or PostgreSQL work. Inside it, the throttle (all the route's rules: the
edge leaves them to the handler), the captcha check and the record's Redis read are
sent in the same tick, so they leave together (the limiter's script on its own connection);
the name is compared in constant time and a wrong id, ticket or name all get the same 404. A
miss goes to PostgreSQL through ``lookups.service.Lookups``.

The ticket PDF is rendered once (in a thread) and kept in Redis under a hash of everything it
prints (``lookups.pdf.content_key``): the record, the exam's names and times, and the photo by its
hash. The record names the photo (``lookups.records``: the first 16 hex digits of its SHA-256,
written by the prewarm), so a cached PDF is found with the record's one ``HGET`` and a ``GET``,
without PostgreSQL; a changed ticket or photo is another key, never a stale PDF. Only a miss reads
the photo's bytes, one indexed query by ticket and hash. A separate Redis key per candidate for the
photo's hash would have to be written by every photo change; the record is written anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import unicodedata
from dataclasses import replace
from typing import Annotated, Any, ClassVar

from aiohttp import web
from pydantic import AfterValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from core.catalogue import Exam
from core.errors import storage_errors
from core.redis import REDIS_DOWN
from core.timeutil import utcnow
from gateway import captcha_gate, keys
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import ApiError, ValidationFailed
from gateway.models import Body, CaptchaValue, Id, Reply
from gateway.routing import Answer, Param, Routes
from lookups import links, pdf, records, rules, validity

routes = Routes("Lookups")
NAME_MAX = 64
KEY_MAX = 32


def _text(limit: int) -> Any:
    """A string, not blank, at most ``limit`` characters once stripped and NFC-normalised (as before models)."""
    def check(value: str) -> str:
        value = value.strip()
        if not value:
            raise PydanticCustomError("must_be_text", "must be text")
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        if len(value) > limit:
            raise PydanticCustomError("too_long", "too long")
        return value
    return Annotated[str, AfterValidator(check), Field(json_schema_extra={
        "minLength": 1, "maxLength": limit, "pattern": r"[^\s\u001c-\u001f\u0085]"})]


class TicketQuery(Body):
    """Who asks for a ticket: the exam, the name and the id number as registered."""

    field_codes: ClassVar[dict[str, str]] = {"exam_id": "must_be_exam_id", "name": "must_be_text",
                                             "id_number": "must_be_text", "ticket_no": "must_be_text"}
    exam_id: Id
    name: _text(NAME_MAX)  # type: ignore[valid-type]
    id_number: _text(KEY_MAX)  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class ScoreQuery(Body):
    """Who asks for scores: the exam, the name, and the id number or the ticket number (one of them)."""

    field_codes: ClassVar[dict[str, str]] = TicketQuery.field_codes
    model_config = ConfigDict(**Body.model_config, json_schema_extra={
        "oneOf": [{"required": ["id_number"]}, {"required": ["ticket_no"]}]})
    exam_id: Id
    name: _text(NAME_MAX)  # type: ignore[valid-type]
    # Either may be left out, neither may be null: the schema says a string (null answers must_be_text).
    id_number: _text(KEY_MAX) = Field(  # type: ignore[valid-type]
        None, description="give id_number or ticket_no, not both")
    ticket_no: _text(KEY_MAX) = None  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class SubjectScore(Reply):
    """One subject's score against its pass mark (the level's published one, else the subject's own)."""

    code: str
    name: str
    score: float
    pass_mark: float | None
    passed: bool
    year: int | None = Field(None, description="the exam's year (Asia/Shanghai)")
    valid_until: int | None = Field(None, description="a passed subject counts for the family's exams up to this "
                                                      "year (year + validity_years - 1); null: not passed")


class CarriedPass(Reply):
    """A subject passed in an exam of the family (this one or an earlier one still valid)."""

    code: str
    name: str
    level: str
    exam_id: int
    year: int
    score: float
    pass_mark: float
    valid_until: int


class Qualification(Reply):
    """A specialty of the level whose every subject is passed within one validity window."""

    level: str
    specialty: str
    subjects: list[CarriedPass]


class Scores(Reply):
    """The candidate's scores."""

    exam_id: int
    name: str
    ticket_no: str
    subjects: list[SubjectScore]
    passed_all: bool
    level: str | None = Field(None, description="the registration's level, as its subjects tell")
    year: int | None = None
    validity_years: int | None = Field(None, description="of the exam's family (exam_families; 1 without a row)")
    qualified: bool | None = Field(None, description="every subject of a specialty of the level passed in this exam; "
                                                     "null: the earlier passes still valid would decide (see "
                                                     "GET /api/v1/exams/{exam_id}/my-valid-subjects)")
    qualification: Qualification | None = None


class TicketSubject(Reply):
    """A subject on the ticket with its session times."""

    code: str
    name: str
    starts_at: str | None
    ends_at: str | None


class TicketExam(Reply):
    """The exam on the ticket."""

    id: int
    name: str


class TicketSite(Reply):
    """The exam site on the ticket."""

    name: str | None
    address: str | None


class Ticket(Reply):
    """The admission ticket, with a signed link to its PDF."""

    ticket_no: str
    name: str
    exam: TicketExam
    site: TicketSite
    room: str
    seat_no: str
    subjects: list[TicketSubject]
    pdf_url: str


async def _record(request: web.Request, body: Body, exam: Exam, query: rules.Query) -> records.Record | None:
    """The record ``query`` names, or None (its read sent in the captcha's and the throttle's batch).

    The caller compares the name: the one 404 covers no record and another name alike.
    """
    service = request.app[keys.LOOKUPS]
    mode, value = query.mode, query.value
    pending: list[asyncio.Future[Any] | None] = []
    try:
        await captcha_gate.guard(request, body, id_number=value if mode == "id_number" else None,
                                 alongside=lambda: pending.append(service.submit(exam.id, mode, value)))
    except BaseException:
        service.abandon(pending[0] if pending else None)
        raise
    return await service.finish(exam.id, mode, value, pending[0])


LOOKUP_ERRORS = {404: "not_found (one answer for a wrong id, ticket number or name), exam_not_found",
                 422: "validation_failed: details.fields (must_be_exam_id, must_be_text, too_long, required, "
                      "give_id_number_or_ticket_no_not_both)",
                 503: "overloaded (the PostgreSQL fallback is full: details.reason lookup_fallback_full); or shed"}


@routes.post("/api/v1/scores/lookup", "scores.lookup", body=ScoreQuery, captcha=True,
             limits=("ip", "global", "id_number"), handler_decides=True, answers={200: Answer(Scores, "the scores")},
             errors={**LOOKUP_ERRORS, 425: "not_yet_released (details.release_at)"})
async def lookup_score(request: web.Request) -> web.Response:
    """The candidate's scores once released, by id number or ticket number."""
    body, exam, query = await released_query(request)
    record = await _record(request, body, exam, query)
    return json_response(scores_answer(exam, record, query.name), headers=NO_STORE)


def scores_answer(exam: Exam, record: records.Record | None, name: str) -> dict[str, Any]:
    """The score lookup's answer: ``NoRecord`` as ``rules.scores_of``; pass marks, years, validity and the
    qualification this exam's record tells as ``lookups.validity`` (from the catalogue: no other read)."""
    answer = rules.scores_of(exam, record, name)
    assert record is not None  # scores_of answered NoRecord otherwise
    return validity.with_validity(answer, exam, record, validity.level_of(exam, record.subjects))


async def released_query(request: web.Request) -> tuple[ScoreQuery, Exam, rules.Query]:
    """A score lookup's body, exam and query; 422, 404 for an unknown exam, 425 before the release."""
    body = await read_body(request, ScoreQuery)
    if body.id_number is not None and body.ticket_no is not None:
        raise ValidationFailed({"ticket_no": "give_id_number_or_ticket_no_not_both"})
    if body.id_number is None and body.ticket_no is None:
        raise ValidationFailed({"id_number": "required"})
    exam = request.app[keys.CATALOGUE].exam(body.exam_id)
    rules.check_released(exam, utcnow())
    return body, exam, rules.query(body.exam_id, body.name, id_number=body.id_number, ticket_no=body.ticket_no)


@routes.post("/api/v1/tickets/lookup", "tickets.lookup", body=TicketQuery, captcha=True,
             limits=("ip", "global", "id_number"), handler_decides=True,
             answers={200: Answer(Ticket, "the ticket with a signed PDF link")},
             errors={**LOOKUP_ERRORS, 425: "not_yet_available (details.available_from, details.available_until)"})
async def lookup_ticket(request: web.Request) -> web.Response:
    """The admission ticket inside the print window, with a signed PDF link."""
    body = await read_body(request, TicketQuery)
    exam = request.app[keys.CATALOGUE].exam(body.exam_id)
    rules.check_print_window(exam, utcnow())
    query = rules.query(body.exam_id, body.name, id_number=body.id_number, ticket_no=None)
    record = await _record(request, body, exam, query)
    answer = rules.ticket_of(exam, record, query.name)
    answer["pdf_url"] = request.app[keys.TICKET_LINKS](answer["ticket_no"], exam.id)
    return json_response(answer, headers=NO_STORE)


PDF_CACHE_TTL_S = 86400


def _pdf_key(content_key: str) -> str:
    return f"eg:lk:pdf:{content_key}"


def _ticket_doc(exam: Exam, record: records.Record) -> pdf.TicketDoc:
    """The ticket as printed, without the photo's bytes (``content_key`` names the photo by ``record.photo``)."""
    site = exam.sites.get(record.site_id)
    subjects = tuple(pdf.TicketSubject(code, s.name, s.starts_at, s.ends_at)
                     for code in record.subjects if (s := exam.subjects.get(code)) is not None)
    return pdf.TicketDoc(record.ticket_no, record.name, record.id_number, exam.name,
                         site.name if site else "", site.address if site else "", record.room, record.seat_no,
                         subjects)


async def _photo(app: web.Application, exam_id: int, record: records.Record) -> bytes | None:
    """The JPEG the record names, or None (no photo, or none with that hash any more)."""
    if record.photo is None:
        return None
    async with storage_errors():
        jpeg: bytes | None = await app[keys.PG].fetchval(records.PHOTO_SQL, exam_id, record.ticket_no, record.photo)
    return jpeg


@routes.get("/api/v1/tickets/{ticket_no}.pdf", "tickets.pdf",
            summary="The admission ticket as a PDF, behind the signed expiring link the ticket lookup gave",
            params=(Param("ticket_no", "path", {"type": "string"}),
                    Param("exam", "query", {"type": "integer"}, required=True),
                    Param("exp", "query", {"type": "integer"}, required=True),
                    Param("sig", "query", {"type": "string"}, required=True)),
            answers={200: Answer({"type": "string"}, "the PDF", media_type="application/pdf")},
            errors={403: "link_invalid (tampered, another ticket's, or expired)", 404: "not_found, exam_not_found",
                    503: "service_unavailable: the PDF cannot be made (ticket font missing); or shed"})
async def ticket_pdf(request: web.Request) -> web.Response:
    """``GET /api/v1/tickets/{ticket_no}.pdf?exam=&exp=&sig=``: the ticket PDF behind a signed, expiring link.

    Rendered once per content (in a thread) and kept in Redis for a day under the hash of what it
    prints; 403 for a tampered, foreign or expired link, the same answer for each.
    """
    ticket_no = request.match_info["ticket_no"]
    app = request.app
    query = request.query
    try:
        exam_id = links.verify_link(app[keys.TICKET_PDF_KEY], ticket_no, query.get("exam", ""), query.get("exp", ""),
                                    query.get("sig", ""))
    except links.LinkError:
        raise ApiError("下载链接无效或已过期，请重新查询准考证", code="link_invalid", status=403) from None
    exam = request.app[keys.CATALOGUE].exam(exam_id)
    service = app[keys.LOOKUPS]
    record = await service.finish(exam.id, "ticket_no", ticket_no, service.submit(exam.id, "ticket_no", ticket_no))
    if record is None:
        raise rules.NoRecord()
    doc = _ticket_doc(exam, record)
    key = _pdf_key(pdf.content_key(doc, record.photo))
    redis = app[keys.REDIS]
    cached: bytes | None = None
    with contextlib.suppress(*REDIS_DOWN):
        cached = await redis.execute(b"GET", key)
    if cached is None:
        jpeg = await _photo(app, exam.id, record)
        if jpeg is None and record.photo is not None:  # gone since the record was written: print what there is
            key = _pdf_key(pdf.content_key(doc, None))
        font = app[keys.SETTINGS].ticket_font
        rendered: bytes = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(pdf.render_ticket, replace(doc, photo=jpeg), font_path=font))
        with contextlib.suppress(*REDIS_DOWN):
            await redis.execute(b"SET", key, rendered, b"EX", PDF_CACHE_TTL_S)
        cached = rendered
    return web.Response(body=cached, content_type="application/pdf", headers={
        "Cache-Control": "private, max-age=600",
        "Content-Disposition": f'inline; filename="ticket-{ticket_no}.pdf"'})
