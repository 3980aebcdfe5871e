"""SMS codes for accounts, username recovery, and the account's texts (service agreement, registration notice).

``POST /api/v1/sms-codes`` answers 202 whatever the phone and purpose, so it tells nobody whether
a phone has an account: a code for registration or a phone change is sent to any mainland mobile
number (only its holder reads it); a username-recovery code only to a phone that has an account,
with the same round trips otherwise. Every send passes the per-phone throttle (429), and the
route's rules throttle per address and globally, behind a captcha per live config.

Username recovery answers one way for every mismatch (unknown id number, another name, another
phone, wrong code): 400 ``code_invalid``, after the same work.
"""

from __future__ import annotations

import hmac
import math
import unicodedata
from typing import Literal

from aiohttp import web
from pydantic import Field

from core import agreements, candidates, phone_codes, sms
from core.identity import normalise_name
from core.timeutil import utcnow
from gateway import adminauth, auth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body, read_body
from gateway.captcha_gate import guard
from gateway.errors import NotFoundError
from gateway.models import Body, CaptchaValue, Id, Reply, Text
from gateway.routes.recovery import MAX_CODE_CHARS, IdNumber, Name, Phone, required_text
from gateway.routing import CANDIDATE, OPERATOR, Answer, Param, Routes

routes = Routes("Accounts")
TEMPLATES = {"register": "register_code", "change_phone": "change_phone_code",
             "recover_username": "recover_username_code"}
KIND = Param("kind", "path", {"enum": list(agreements.KINDS)}, "agreement (网上报名协议) or notice (注册须知)")


class CodeRequest(Body):
    """Where a code goes and what it is for."""

    phone: Phone
    purpose: Literal["register", "change_phone", "recover_username"]
    captcha: CaptchaValue = None


class CodeSent(Reply):
    """How long a code sent now is valid."""

    expires_in: int = Field(description="seconds the code is valid (answered whether or not a code was sent)")


class UsernameRecovery(Body):
    """Who asks: the account's name, id number and phone, and the code sent to the phone."""

    name: Name
    id_number: IdNumber
    phone: Phone
    code: required_text(MAX_CODE_CHARS)  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class Username(Reply):
    """The recovered username."""

    username: str


class Document(Reply):
    """The version in force of one of the account's texts."""

    kind: str
    version: int
    title: str
    text: str
    sha256: str


class NewDocument(Body):
    """A new version of an account text."""

    title: Text(1, 200)  # type: ignore[valid-type]
    text: Text(1, 100_000)  # type: ignore[valid-type]


class Acceptance(Body):
    """The agreement version the candidate read and accepts."""

    version: Id


def code_of(raw: str) -> str:
    """A typed code as the check takes it: full-width digits and spaces forgiven."""
    return unicodedata.normalize("NFKC", raw).strip()


async def send_code(app: web.Application, phone: str, purpose: str, *, candidate_id: int = 0,
                    throttled: bool = False) -> None:
    """Throttle (unless ``throttled`` already), store and enqueue a code for the valid ``phone`` and ``purpose``."""
    settings = app[keys.SETTINGS].code_settings()
    if not throttled:
        await phone_codes.throttle(app[keys.REDIS], phone, now=utcnow(), settings=settings)
    code = await phone_codes.issue(app[keys.REDIS], phone, purpose, secret=app[keys.RECOVERY_KEY],
                                   settings=settings, candidate_id=candidate_id)
    template = TEMPLATES[purpose]
    await sms.enqueue(app[keys.PG], phone, template,
                      sms.render(template, code=code, minutes=math.ceil(settings.code_ttl_s / 60)))


@routes.post("/api/v1/sms-codes", "sms_codes.create", body=CodeRequest, captcha=True, shedding="login",
             limits=("ip", "global"),
             summary="Send a verification code by SMS (registration, a phone change, username recovery)",
             answers={202: Answer(CodeSent, "accepted (for username recovery, sent only to a phone with an account)")},
             errors={429: "too_many_requests: codes to this phone too frequent (details.reason sms_per_phone), "
                          "or a throttle (Retry-After)"})
async def request_code(request: web.Request) -> web.Response:
    """202 whatever the phone: a code is stored and queued for sending, or (unknown phone, recovery) nothing."""
    body = await read_body(request, CodeRequest)
    await guard(request, body)
    app = request.app
    phone = phone_codes.valid_phone(body.phone)
    assert phone is not None  # the body's rule checked it
    if body.purpose == "recover_username":
        await phone_codes.throttle(app[keys.REDIS], phone, now=utcnow(), settings=app[keys.SETTINGS].code_settings())
        owner = await candidates.find_by_phone(app[keys.PG], phone)
        if owner is None:
            # The round trips of a send (a Redis call, a PostgreSQL statement), storing and sending nothing.
            await app[keys.REDIS].hget(phone_codes.code_key(phone, body.purpose), "left")
            await app[keys.PG].execute("SELECT 1")
        else:
            await send_code(app, phone, body.purpose, candidate_id=owner, throttled=True)
    else:
        await send_code(app, phone, body.purpose)
    return json_response({"expires_in": app[keys.SETTINGS].sms_code_ttl_s}, status=202, headers=NO_STORE)


@routes.post("/api/v1/username-recoveries", "username_recoveries.create", body=UsernameRecovery, captcha=True,
             shedding="login", limits=("ip", "global", "id_number"),
             summary="The username of the account with this name, id number and phone, proven by the phone's code",
             answers={200: Answer(Username, "the username")},
             errors={400: "code_invalid: wrong, expired or used code, or no account with these three (one answer)"})
async def recover_username(request: web.Request) -> web.Response:
    """The username, when the code is right and name, id number and phone are one account's; 400 otherwise."""
    body = await read_body(request, UsernameRecovery)
    await guard(request, body, id_number=body.id_number)
    app = request.app
    # The code first: its attempt is spent whoever asks, so guessing costs the same as asking.
    taken = await phone_codes.check(app[keys.REDIS], body.phone, "recover_username", code_of(body.code),
                                    secret=app[keys.RECOVERY_KEY])
    found = await candidates.find_by_id_number(app[keys.PG], body.id_number)
    matches = (found is not None and found.candidate_id == taken.candidate_id
               and hmac.compare_digest(found.name.encode(), normalise_name(body.name).encode())
               and hmac.compare_digest(found.phone, taken.phone))
    if not matches or found is None:
        raise phone_codes.CodeInvalid()
    username = await candidates.username_of(app[keys.PG], found.candidate_id)
    await phone_codes.consume(app[keys.REDIS], taken.phone, "recover_username")
    return json_response({"username": username}, headers=NO_STORE)


@routes.get("/api/v1/documents/{kind}", "account_documents.get",
            summary="The service agreement (网上报名协议) or the registration notice (注册须知) in force",
            params=(KIND,), answers={200: Answer(Document, "the version in force")},
            errors={404: "document_not_found: none published"})
async def get_document(request: web.Request) -> web.Response:
    """The version in force; 404 when none is published (nothing is asked then)."""
    kind = request.match_info["kind"]
    found = await agreements.latest(request.app[keys.PG], kind) if kind in agreements.KINDS else None
    if found is None:
        raise NotFoundError("文件不存在", code="document_not_found", details={"kind": kind})
    return json_response({"kind": kind, "version": found.version, "title": found.title, "text": found.text,
                          "sha256": found.sha256}, headers={"Cache-Control": "no-cache"})


@routes.post("/api/v1/me/agreement", "me.agreement.accept", caller=CANDIDATE, body=Acceptance,
             summary="Accept the service agreement in force (asked again when a newer version is published)",
             answers={204: Answer(None, "accepted")},
             errors={409: "agreement_version_changed: another version is in force (details.version)"})
async def accept_agreement(request: web.Request) -> web.Response:
    """Record the acceptance; 409 when the version read is not the one in force."""
    candidate_id = await auth.candidate_id(request)
    body = parse_body(await json_bytes(request), Acceptance)
    await agreements.accept(request.app[keys.PG], candidate_id, body.version,
                            address=request.app[keys.CLIENT_IP].of(request))
    return web.Response(status=204)


@routes.post("/admin/api/v1/documents/{kind}", "admin.account_documents.publish", caller=OPERATOR,
             roles=("admin",), body=NewDocument, params=(KIND,),
             summary="Publish a new version of the service agreement or the registration notice",
             answers={201: Answer(Document, "published (the same text again: the version in force)")},
             errors={404: "document_not_found: no such kind"})
async def publish_document(request: web.Request) -> web.Response:
    """A new version; accounts that accepted an older agreement are asked again."""
    kind = request.match_info["kind"]
    if kind not in agreements.KINDS:
        raise NotFoundError("文件不存在", code="document_not_found", details={"kind": kind})
    body = parse_body(await json_bytes(request), NewDocument)
    made = await agreements.publish(request.app[keys.PG], kind, body.title, body.text,
                                    actor=adminauth.operator_of(request).name)
    return json_response({"kind": kind, "version": made.version, "title": made.title, "text": made.text,
                          "sha256": made.sha256}, status=201, headers=NO_STORE)
