"""Certificate verification (证书查询), the electronic certificate's PDF, and the check of a signed PDF.

``POST /api/v1/certificates/verify`` is guarded like the score lookup: the route's throttles
(decided by the handler), its captcha and the record's Redis read leave in one batch
(``gateway.captcha_gate.guard``); a miss goes to PostgreSQL through ``lookups.service``'s
single-flight, capped fallback. An unknown number and another holder's name get the same 404,
after the same work (``lookups.certificates.match``).

The PDF behind the answer's signed link is rendered once per content (in a thread), signed
(``lookups.cert_signature``) and kept in Redis for a day under the hash of what it prints, like
the ticket's. ``POST /api/v1/certificates/check-pdf`` takes such a PDF and says whether its
signature holds. Operators load every certificate into Redis with
``POST /admin/api/v1/certificates/prewarm``; the worker does it whenever Redis has lost them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from aiohttp import web
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from core.identity import normalise_name
from core.redis import REDIS_DOWN
from gateway import adminauth, captcha_gate, keys
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import ApiError, BodyTooLarge, NotFoundError, Overloaded, UnsupportedMediaType
from gateway.models import Body, CaptchaValue, Reply
from gateway.routes.lookups import NAME_MAX, _text
from gateway.routing import ANONYMOUS, OPERATOR, Answer, Param, Routes
from lookups import cert_pdf, cert_prewarm, cert_signature, certificates, pdf

log = logging.getLogger("examgate.lookups")

routes = Routes("Certificates")
SERVICE: web.AppKey[certificates.CertificateLookups] = web.AppKey("certificate_lookups")
LINK_KEY = web.AppKey("certificate_link_key", bytes)
SIGNER: web.AppKey[list[cert_signature.Signer]] = web.AppKey("certificate_signer")  # [] until first used
PDF = "application/pdf"
MAX_PDF_BYTES = 1024 * 1024  # a certificate is ~20 KB
PDF_CACHE_TTL_S = 86400


def setup(app: web.Application) -> None:
    """The link key, the signer's slot and the lookups service (made with the stores)."""
    app[LINK_KEY] = app[keys.SETTINGS].derived_key(certificates.LINK_PURPOSE)
    app[SIGNER] = []
    app.cleanup_ctx.append(_service)


async def _service(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    app[SERVICE] = certificates.CertificateLookups(app[keys.PG], app[keys.REDIS],
                                                   max_pg_in_flight=settings.lookup_pg_max_in_flight,
                                                   memory_ttl_s=settings.lookup_memory_ttl_s)
    yield


async def signer(app: web.Application) -> cert_signature.Signer:
    """The certificate signing key of ``EXAMGATE_KEYS_DIR``, read (or made there) in a thread on first use."""
    held = app[SIGNER]
    if not held:
        found = await asyncio.get_running_loop().run_in_executor(
            None, cert_signature.ensure_key, app[keys.SETTINGS].keys_dir)
        if not held:
            held.append(found)
    return held[0]


def _cert_no(value: str) -> str:
    found = certificates.normalise_cert_no(value)
    if found is None:
        raise PydanticCustomError("must_be_cert_no", "must be a certificate number")
    return found


CertNo = Annotated[str, AfterValidator(_cert_no), Field(json_schema_extra={
    "minLength": 6, "maxLength": 32, "pattern": "^[0-9A-Za-z]{6,32}$",
    "description": "6-32 letters and digits (full-width characters and spaces are forgiven)"})]


class CertificateQuery(Body):
    """Who verifies a certificate: its number and the holder's name."""

    field_codes: ClassVar[dict[str, str]] = {"cert_no": "must_be_cert_no", "name": "must_be_text"}
    cert_no: CertNo
    name: _text(NAME_MAX)  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class CertificateExam(Reply):
    """The exam the certificate was earned in."""

    id: int
    name: str


class CertificateLevel(Reply):
    """The qualification level certified."""

    code: str
    name: str


class Verified(Reply):
    """A genuine certificate, with a signed link to its electronic certificate."""

    cert_no: str
    name: str
    exam: CertificateExam
    level: CertificateLevel
    approved_on: str = Field(description="ISO date")
    management_no: str
    pdf_url: str = Field(description="valid EXAMGATE_TICKET_LINK_TTL_S seconds")


class PdfChecked(Reply):
    """Whether a certificate PDF's signature holds."""

    valid: bool
    cert_no: str | None = Field(None, description="the number the PDF was signed for (valid only)")
    key_id: str | None = Field(None, description="the signing key (valid only)")
    reason: str | None = Field(None, description="not_pdf, unsigned, malformed, unknown_key, mismatch (invalid only)")


class CertificatesPrewarmed(Reply):
    """What a prewarm loaded."""

    certificates: int
    seconds: float


def _not_found() -> NotFoundError:
    return NotFoundError(certificates.NO_CERTIFICATE, code="not_found")


@routes.post("/api/v1/certificates/verify", "certificates.verify", body=CertificateQuery, captcha=True,
             limits=("ip", "global"), handler_decides=True,
             answers={200: Answer(Verified, "the certificate with a signed PDF link")},
             errors={404: "not_found (one answer for an unknown number and another name)",
                     422: "validation_failed: details.fields (must_be_cert_no, must_be_text, too_long, required)",
                     503: "overloaded (the PostgreSQL fallback is full: details.reason lookup_fallback_full); "
                          "or shed"})
async def verify_certificate(request: web.Request) -> web.Response:
    """证书查询: the certificate of this number when the name is its holder's."""
    body = await read_body(request, CertificateQuery)
    service = request.app[SERVICE]
    pending: list[asyncio.Future[Any] | None] = []
    try:
        await captcha_gate.guard(request, body, alongside=lambda: pending.append(service.submit_key(body.cert_no)))
    except BaseException:
        service.abandon(pending[0] if pending else None)
        raise
    record = await service.finish_key(body.cert_no, pending[0])
    try:
        found = certificates.match(record, normalise_name(body.name))
    except certificates.NoCertificate:
        raise _not_found() from None
    url = certificates.sign_pdf_link(request.app[LINK_KEY], found.cert_no,
                                     ttl_s=request.app[keys.SETTINGS].ticket_link_ttl_s)
    return json_response(certificates.answer(found, url), headers=NO_STORE)


def _pdf_key(content_key: str) -> str:
    return f"{certificates.PREFIX}pdf:{content_key}"


def _render_signed(doc: cert_pdf.CertificateDoc, font_path: str, sign: cert_signature.Signer) -> bytes:
    return sign.sign(cert_pdf.render_certificate(doc, font_path=font_path), doc.cert_no)


@routes.get("/api/v1/certificates/{cert_no:[0-9A-Za-z]{6,32}}.pdf", "certificates.pdf", caller=ANONYMOUS,
            summary="The electronic certificate as a signed PDF, behind the signed expiring link verification gave",
            params=(Param("cert_no", "path", {"type": "string", "pattern": "^[0-9A-Za-z]{6,32}$"}),
                    Param("exp", "query", {"type": "integer"}, required=True),
                    Param("sig", "query", {"type": "string"}, required=True)),
            answers={200: Answer({"type": "string", "format": "binary"}, "the signed PDF", media_type=PDF)},
            errors={403: "link_invalid (tampered, another certificate's, or expired)", 404: "not_found",
                    503: "service_unavailable: the PDF cannot be made (the font is missing); or shed"})
async def certificate_pdf(request: web.Request) -> web.Response:
    """``GET /api/v1/certificates/{cert_no}.pdf?exp=&sig=``: rendered and signed once per content."""
    cert_no = request.match_info["cert_no"]
    app = request.app
    try:
        expires_at = certificates.verify_pdf_link(app[LINK_KEY], cert_no, request.query.get("exp", ""),
                                                  request.query.get("sig", ""))
    except certificates.LinkInvalid:
        raise ApiError("下载链接无效或已过期，请重新查询证书", code="link_invalid", status=403) from None
    service = app[SERVICE]
    record = await service.finish_key(cert_no, service.submit_key(cert_no))
    if record is None:
        raise _not_found()  # withdrawn since the link was given
    settings = app[keys.SETTINGS]
    doc = cert_pdf.CertificateDoc(record.cert_no, record.name, record.id_number, record.exam_name,
                                  record.level_name, certificates.approved_date(record), record.management_no,
                                  cert_pdf.verification_url(settings.public_url, record.cert_no))
    loop = asyncio.get_running_loop()
    sign = await signer(app)
    key = _pdf_key(f"{sign.key_id}:{pdf.content_key(doc, None)}")
    redis = app[keys.REDIS]
    cached: bytes | None = None
    with contextlib.suppress(*REDIS_DOWN):
        cached = await redis.execute(b"GET", key)
    if cached is None:
        try:
            cached = await loop.run_in_executor(None, functools.partial(
                _render_signed, doc, settings.ticket_font, sign))
        except pdf.PdfError:
            raise Overloaded("电子证书文件暂时无法生成，请稍后重试", code="service_unavailable", retry_after_s=30,
                             details={"reason": "certificate_pdf_unavailable"}) from None
        with contextlib.suppress(*REDIS_DOWN):
            await redis.execute(b"SET", key, cached, b"EX", PDF_CACHE_TTL_S)
    max_age = max(0, min(expires_at - int(time.time()), settings.ticket_link_ttl_s))
    return web.Response(body=cached, content_type=PDF, headers={
        "Cache-Control": f"private, max-age={max_age}",
        "Content-Disposition": f'inline; filename="certificate-{cert_no}.pdf"'})


@routes.post("/api/v1/certificates/check-pdf", "certificates.check_pdf", max_body_bytes=MAX_PDF_BYTES,
             summary="Check an electronic certificate PDF's signature: genuine and unaltered, or why not",
             raw_body={PDF: {"schema": {"type": "string", "format": "binary", "minLength": 1}}},
             answers={200: Answer(PdfChecked, "the verdict (valid or not, with the reason)")},
             errors={400: "malformed_body: empty body", 413: "body_too_large: above 1 MiB (details.max_bytes)",
                     415: "unsupported_media_type: the body must be application/pdf"})
async def check_pdf(request: web.Request) -> web.Response:
    """``POST /api/v1/certificates/check-pdf``: ``{"valid": true, "cert_no", "key_id"}`` or ``{"valid": false,
    "reason"}``."""
    if request.content_type != PDF:
        raise UnsupportedMediaType(details={"expected": PDF, "got": request.content_type or None})
    raw = request._read_bytes  # kept by ``read()``: a body the edge waited for
    if raw is None:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(details={"max_bytes": MAX_PDF_BYTES}) from None
    if not raw:
        raise ApiError("请求内容为空", code="malformed_body", status=400, details={"reason": "empty body"})
    if len(raw) > MAX_PDF_BYTES:
        raise BodyTooLarge(details={"max_bytes": MAX_PDF_BYTES})
    try:
        checked = (await signer(request.app)).check(raw)
    except cert_signature.SignatureInvalid as exc:
        return json_response({"valid": False, "reason": exc.reason}, headers=NO_STORE)
    return json_response({"valid": True, "cert_no": checked.cert_no, "key_id": checked.key_id}, headers=NO_STORE)


@routes.post("/admin/api/v1/certificates/prewarm", "admin.certificates.prewarm", caller=OPERATOR,
             summary="Load every certificate into Redis (verification then never asks PostgreSQL)",
             answers={200: Answer(CertificatesPrewarmed, "what was loaded")})
async def prewarm_certificates(request: web.Request) -> web.Response:
    """Load every certificate into Redis: ``{"certificates", "seconds"}``."""
    report = await cert_prewarm.prewarm(request.app[keys.PG], request.app[keys.REDIS_PY])
    log.info("operator %s prewarmed %d certificates in %.1f s", adminauth.operator_of(request).name,
             report.certificates, report.seconds)
    return json_response(report.as_dict())

