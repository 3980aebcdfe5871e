"""Password recovery over HTTP: by security question, or by a code sent through the SMS outbox.

No answer depends on whether a name goes with an id number (``core.recovery``: the question is
the id number's, a decoy for an unknown one); every start is captcha-guarded per live config and
throttled by the rules keyed on the id number, in the one form registration stores it.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from aiohttp import web

from core import recovery
from core.accounts import ANSWER_MAX_CHARS, LATIN_NAME_MAX_CHARS, PHONE_RE
from core.identity import normalise_phone
from core.passwords import PASSWORD_MAX_CHARS
from core.timeutil import utcnow
from gateway import keys
from gateway.bodies import json_response, read_json
from gateway.captcha_gate import guard
from gateway.errors import ValidationFailed

NO_STORE = {"Cache-Control": "no-store"}
MAX_ID_NUMBER_CHARS = 32
MAX_NAME_CHARS = LATIN_NAME_MAX_CHARS  # the longest name an account can have
# A new password longer than the policy allows is a policy problem (422 too_long), not a body problem.
MAX_NEW_PASSWORD_CHARS = PASSWORD_MAX_CHARS * 8
MAX_CODE_CHARS = 16


def _fields(body: dict[str, Any], limits: dict[str, int]) -> dict[str, str]:
    """The named string fields (each required, at most its limit); 422 listing every problem."""
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, limit in limits.items():
        value = body.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems[name] = "required"
        elif not isinstance(value, str):
            problems[name] = "must_be_string"
        elif len(value) > limit:
            problems[name] = "too_long"
        else:
            values[name] = value
    for name in body:
        if name not in limits and name != "captcha":
            problems[name] = "unknown_field"
    if problems:
        raise ValidationFailed(problems)
    return values


def _phone(raw: str) -> str:
    phone = normalise_phone(raw)
    if not PHONE_RE.fullmatch(phone):
        raise ValidationFailed({"phone": "invalid_format"})
    return phone


async def start_question(request: web.Request) -> web.Response:
    """Open a reset by security question: 200 ``{"reset_id", "question"}`` (the id number's, whatever the name)."""
    body = await read_json(request)
    values = _fields(body, {"name": MAX_NAME_CHARS, "id_number": MAX_ID_NUMBER_CHARS})
    await guard(request, body, id_number=values["id_number"])
    app = request.app
    challenge = await recovery.start_question(app[keys.PG], app[keys.REDIS], values["name"], values["id_number"],
                                              secret=app[keys.RECOVERY_KEY])
    return json_response({"reset_id": challenge.reset_id, "question": challenge.question}, headers=NO_STORE)


async def finish_question(request: web.Request) -> web.Response:
    """Answer the question and set the new password: 204; 400 ``reset_invalid``; 422 for a weak password."""
    body = await read_json(request)
    values = _fields(body, {"answer": ANSWER_MAX_CHARS, "new_password": MAX_NEW_PASSWORD_CHARS})
    await guard(request, body)
    app = request.app
    await recovery.finish_question(app[keys.PG], app[keys.REDIS], app[keys.HASHER], request.match_info["reset_id"],
                                   values["answer"], values["new_password"])
    return web.Response(status=204)


async def start_sms(request: web.Request) -> web.Response:
    """Send a reset code to the phone if name, id number and phone are one account's: 202 either way."""
    body = await read_json(request)
    values = _fields(body, {"name": MAX_NAME_CHARS, "id_number": MAX_ID_NUMBER_CHARS,
                            "phone": MAX_ID_NUMBER_CHARS})
    phone = _phone(values["phone"])
    await guard(request, body, id_number=values["id_number"])
    app = request.app
    await recovery.start_sms(app[keys.PG], app[keys.REDIS], values["name"], values["id_number"], phone,
                             now=utcnow(), secret=app[keys.RECOVERY_KEY])
    return json_response({"expires_in": recovery.DEFAULT_SETTINGS.code_ttl_s}, status=202, headers=NO_STORE)


async def confirm_sms(request: web.Request) -> web.Response:
    """Check the SMS code and set the new password: 204; 400 ``code_invalid``; 422 for a weak password."""
    body = await read_json(request)
    values = _fields(body, {"phone": MAX_ID_NUMBER_CHARS, "code": MAX_CODE_CHARS,
                            "new_password": MAX_NEW_PASSWORD_CHARS})
    phone = _phone(values["phone"])
    await guard(request, body)
    app = request.app
    code = unicodedata.normalize("NFKC", values["code"]).strip()
    await recovery.confirm_sms(app[keys.PG], app[keys.REDIS], app[keys.HASHER], phone, code,
                               values["new_password"], secret=app[keys.RECOVERY_KEY])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    """Add the password-recovery routes."""
    app.router.add_post("/api/v1/password-resets/question", start_question, name="password_resets.question.start")
    app.router.add_post("/api/v1/password-resets/question/{reset_id}", finish_question,
                        name="password_resets.question.finish")
    app.router.add_post("/api/v1/password-resets/sms", start_sms, name="password_resets.sms.start")
    app.router.add_post("/api/v1/password-resets/sms/confirm", confirm_sms, name="password_resets.sms.confirm")
