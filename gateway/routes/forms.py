"""The registration form (报名表): a candidate's signed link to its PDF, the PDF, and operators' check of its code.

``GET /api/v1/registrations/{id}/form`` answers a signed, expiring link for the candidate's own
registration once its details are final and standing (``lookups.forms.AVAILABLE``) and they have
a photo. The PDF behind it is made from one PostgreSQL query for the facts (this is not a peak
path), rendered in a thread and kept in Redis for a day under the hash of everything it prints
(``lookups.pdf.content_key``, the photo by its SHA-256): a changed registration or photo is a new
PDF, an unchanged one is rendered once; only a miss reads the photo's bytes (a second query).

Operators check a printed form by its verification code: genuine or not, for which registration,
and whether that registration has changed since (``superseded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import replace
from datetime import datetime

from aiohttp import web
from pydantic import Field

from core import photos
from core.lifecycle import STATUS_NAMES
from core.redis import REDIS_DOWN
from core.reviews import masked_id
from core.timeutil import iso_local
from gateway import adminauth, auth, keys
from gateway.bodies import NO_STORE, json_response
from gateway.errors import ApiError, Conflict, NotFoundError, Overloaded
from gateway.models import Reply
from gateway.pathids import path_id
from gateway.routes.photos import LINK_KEY as PHOTO_LINK_KEY
from gateway.routes.registrations import STATUSES
from gateway.routing import ANONYMOUS, CANDIDATE, OPERATOR, Answer, Param, Routes
from lookups import form_pdf, forms, pdf

routes = Routes("Registration forms")
CODE_KEY = web.AppKey("form_code_key", bytes)
LINK_KEY = web.AppKey("form_link_key", bytes)
CHECKERS = ("reviewer", "operator", "admin")  # reviewers check forms at the review points
PDF_CACHE_TTL_S = 86400
PDF = "application/pdf"


def setup(app: web.Application) -> None:
    """The form routes' keys: the verification code's and the link's."""
    settings = app[keys.SETTINGS]
    app[CODE_KEY] = settings.derived_key(forms.CODE_PURPOSE)
    app[LINK_KEY] = settings.derived_key(forms.LINK_PURPOSE)


class FormLink(Reply):
    """A signed, expiring link to the registration form's PDF."""

    pdf_url: str = Field(description="valid EXAMGATE_FORM_LINK_TTL_S seconds")


class CheckedExam(Reply):
    """The exam of the registration."""

    id: int
    name: str


class CheckedCandidate(Reply):
    """Who registered (the id number masked as in operators' lists)."""

    name: str
    id_type: str
    id_number: str


class CheckedPhoto(Reply):
    """The candidate's current photo, with a signed link to compare it with the printed one."""

    photo_id: int
    status: str
    sha256: str
    url: str


class FormCheck(Reply):
    """A genuine form's registration, as it is now."""

    code: str
    registration_id: int
    version: int = Field(description="the registration's version the form was printed at")
    current_version: int
    superseded: bool = Field(description="the registration has moved on since the form was printed "
                                         "(a transition: confirm, decision, payment …); the details may differ")
    status: STATUSES
    status_name: str
    form_available: bool = Field(description="the registration can print a form now")
    exam: CheckedExam
    candidate: CheckedCandidate
    province: str
    city: str
    level: str
    specialty: str
    subjects: list[str]
    work_years: int
    review_point: int | None
    confirmed_at: datetime | None
    commitment: dict[str, object] | None = Field(description='{"version", "title", "signed_at"} or null')
    photo: CheckedPhoto | None


def _not_found() -> NotFoundError:
    return NotFoundError("报名记录不存在", code="registration_not_found")


def _check_printable(facts: forms.FormFacts) -> None:
    """409 unless the registration has a form: final and standing, with a photo to print."""
    if facts.status not in forms.AVAILABLE:
        why = "报名信息确认后才能打印报名表" if facts.status in ("draft", "rejected") else "该报名已失效"
        raise Conflict(f"当前报名状态为“{STATUS_NAMES.get(facts.status, facts.status)}”，不能打印报名表：{why}",
                       code="form_not_available", details={"status": facts.status})
    if not facts.printable_photo:
        raise Conflict("报名表须印有本人照片，请先上传照片" if facts.photo_id is None
                       else "照片审核未通过，请重新上传照片后再打印报名表",
                       code="photo_required", details={"photo_status": facts.photo_status})


@routes.get("/api/v1/registrations/{registration_id}/form", "registrations.form", caller=CANDIDATE,
            summary="报名表: a signed, expiring link to the registration form's PDF",
            answers={200: Answer(FormLink, "the link")},
            errors={404: "registration_not_found (or not yours)",
                    409: "form_not_available (details.status: draft, rejected, cancelled, expired), "
                         "photo_required (no current photo, or a rejected one: details.photo_status)"})
async def form_link(request: web.Request) -> web.Response:
    """``GET /api/v1/registrations/{id}/form``: 200 ``{"pdf_url"}`` for the candidate's own registration."""
    candidate = request[auth.CANDIDATE_ID]
    registration_id = path_id(request.match_info["registration_id"])
    app = request.app
    facts = None if registration_id is None else await forms.read_facts(app[keys.PG], registration_id)
    if facts is None or facts.candidate_id != candidate:
        raise _not_found()  # someone else's is not there at all
    _check_printable(facts)
    url = forms.sign_form_link(app[LINK_KEY], facts.registration_id, ttl_s=app[keys.SETTINGS].form_link_ttl_s)
    return json_response({"pdf_url": url}, headers=NO_STORE)


def _pdf_key(content_key: str) -> str:
    return f"eg:form:pdf:{content_key}"


@routes.get("/api/v1/registrations/{registration_id:[1-9][0-9]{0,17}}/form.pdf", "registrations.form.pdf",
            caller=ANONYMOUS,
            summary="The registration form as a PDF, behind the signed expiring link GET …/form gave",
            params=(Param("registration_id", "path", {"type": "integer", "minimum": 1}),
                    Param("exp", "query", {"type": "integer"}, required=True),
                    Param("sig", "query", {"type": "string"}, required=True)),
            answers={200: Answer({"type": "string", "format": "binary"}, "the PDF", media_type=PDF)},
            errors={403: "link_invalid (tampered, another registration's, or expired)",
                    404: "registration_not_found, exam_not_found",
                    409: "form_not_available, photo_required (the registration changed since the link was given)",
                    503: "service_unavailable: the PDF cannot be made (the font is missing); or shed"})
async def form_document(request: web.Request) -> web.Response:
    """``GET /api/v1/registrations/{id}/form.pdf?exp=&sig=``: the form, rendered once per content."""
    registration_id = int(request.match_info["registration_id"])
    app = request.app
    try:
        expires_at = forms.verify_form_link(app[LINK_KEY], registration_id, request.query.get("exp", ""),
                                            request.query.get("sig", ""))
    except forms.FormLinkInvalid:
        raise ApiError("下载链接无效或已过期，请重新打开报名表", code="link_invalid", status=403) from None
    pg = app[keys.PG]
    facts = await forms.read_facts(pg, registration_id)
    if facts is None:
        raise _not_found()
    _check_printable(facts)
    assert facts.photo_sha256 is not None  # _check_printable: a printable photo
    exam = app[keys.CATALOGUE].exam(facts.exam_id)
    doc = forms.form_doc(facts, exam, forms.form_code(app[CODE_KEY], facts.registration_id, facts.version))
    key = _pdf_key(pdf.content_key(doc, facts.photo_sha256))
    redis = app[keys.REDIS]
    cached: bytes | None = None
    with contextlib.suppress(*REDIS_DOWN):
        cached = await redis.execute(b"GET", key)
    if cached is None:
        jpeg = await forms.read_photo(pg, facts.photo_sha256)
        if jpeg is None:  # a photo row names its bytes by a foreign key: not expected
            raise RuntimeError(f"photo {facts.photo_id} has no stored bytes")
        try:
            rendered: bytes = await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(form_pdf.render_form, replace(doc, photo=jpeg),
                                        font_path=app[keys.SETTINGS].ticket_font))
        except pdf.PdfError:
            raise Overloaded("报名表文件暂时无法生成，请稍后重试", code="service_unavailable", retry_after_s=30,
                             details={"reason": "form_pdf_unavailable"}) from None
        with contextlib.suppress(*REDIS_DOWN):
            await redis.execute(b"SET", key, rendered, b"EX", PDF_CACHE_TTL_S)
        cached = rendered
    max_age = max(0, min(expires_at - int(time.time()), app[keys.SETTINGS].form_link_ttl_s))
    return web.Response(body=cached, content_type=PDF, headers={
        "Cache-Control": f"private, max-age={max_age}",
        "Content-Disposition": f'inline; filename="registration-form-{registration_id}.pdf"'})


@routes.get("/admin/api/v1/registration-forms/{code}", "admin.registration_forms.check", caller=OPERATOR,
            roles=CHECKERS,
            summary="Check a printed registration form's verification code: its registration as it is now",
            params=(Param("code", "path", {"type": "string", "minLength": 1, "maxLength": forms.CODE_MAX_CHARS},
                          "the code printed on the form (e.g. 10234-3-7KQ2M9XA; case, spaces and O/I/L forgiven)"),),
            answers={200: Answer(FormCheck, "the form is genuine")},
            errors={404: "form_not_found: no form was issued with this code (or its registration is outside "
                         "the operator's scope)"})
async def check_form(request: web.Request) -> web.Response:
    """``GET /admin/api/v1/registration-forms/{code}``: who the form belongs to, and whether it is still current."""
    app = request.app
    found = forms.parse_code(app[CODE_KEY], request.match_info["code"])
    facts = None if found is None else await forms.read_facts(app[keys.PG], found[0])
    if found is None or facts is None or not adminauth.in_scope(request, facts.province):
        raise NotFoundError("验证码无效：未找到对应的报名表", code="form_not_found")
    registration_id, version = found
    exam = app[keys.CATALOGUE].catalogue.exam(facts.exam_id)
    photo = None
    if facts.photo_id is not None and facts.photo_sha256 is not None:
        url, _ = photos.sign_photo_link(app[PHOTO_LINK_KEY], facts.photo_id,
                                        ttl_s=app[keys.SETTINGS].photo_link_ttl_s)
        photo = {"photo_id": facts.photo_id, "status": facts.photo_status, "sha256": facts.photo_sha256, "url": url}
    signed = facts.commitment
    return json_response({
        "code": forms.form_code(app[CODE_KEY], registration_id, version),
        "registration_id": registration_id,
        "version": version,
        "current_version": facts.version,
        "superseded": version != facts.version,
        "status": facts.status,
        "status_name": STATUS_NAMES.get(facts.status, facts.status),
        "form_available": facts.status in forms.AVAILABLE and facts.printable_photo,
        "exam": {"id": facts.exam_id, "name": exam.name if exam else ""},
        "candidate": {"name": facts.name, "id_type": facts.id_type, "id_number": masked_id(facts.id_number)},
        "province": facts.province,
        "city": facts.city,
        "level": facts.level,
        "specialty": facts.specialty,
        "subjects": list(facts.subjects),
        "work_years": facts.work_years,
        "review_point": facts.review_point_id,
        "confirmed_at": iso_local(facts.confirmed_at) if facts.confirmed_at else None,
        "commitment": None if signed is None else {
            "version": signed["version"], "title": signed["title"],
            "signed_at": iso_local(datetime.fromisoformat(signed["signed_at"]))},
        "photo": photo,
    }, headers=NO_STORE)
