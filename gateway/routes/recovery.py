"""Password recovery over HTTP: by security question, or by a code sent through the SMS outbox.

No answer depends on whether a name goes with an id number (``core.recovery``: the question is
the id number's, a decoy for an unknown one); every start is captcha-guarded per live config and
throttled by the rules keyed on the id number, in the one form registration stores it.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from core import recovery
from core.accounts import ANSWER_MAX_CHARS, LATIN_NAME_MAX_CHARS, FieldInvalid, check_phone
from core.passwords import PASSWORD_MAX_CHARS
from core.timeutil import utcnow
from gateway import keys
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.captcha_gate import guard
from gateway.models import NOT_BLANK, Body, CaptchaValue, Reply
from gateway.routing import Answer, Param, Routes

routes = Routes("Password recovery")
MAX_ID_NUMBER_CHARS = 32
MAX_NAME_CHARS = LATIN_NAME_MAX_CHARS  # the longest name an account can have
# A new password longer than the policy allows is a policy problem (422 too_long), not a body problem.
MAX_NEW_PASSWORD_CHARS = PASSWORD_MAX_CHARS * 8
MAX_CODE_CHARS = 16
NEW_PASSWORD_RULES = "the password policy of registration; 422 details.fields.new_password names its problem"


def _given(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("required", "必填")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("required", "必填")
    return value


def _phone(value: str) -> str:
    try:
        return check_phone(value)
    except FieldInvalid as exc:
        raise PydanticCustomError(exc.code, "手机号码格式不正确") from None


def required_text(max_chars: int, schema: dict[str, Any] | None = None, *checks: Any) -> Any:
    """A string of at most ``max_chars`` that is not blank (``required`` otherwise), then ``checks``."""
    # The length constraint before the validators, so that pydantic checks it as a string's (string_too_long).
    extra = schema or {"minLength": 1, "pattern": NOT_BLANK}
    return Annotated[str, Field(max_length=max_chars, json_schema_extra=extra), BeforeValidator(_given),
                     AfterValidator(_not_blank), *(AfterValidator(check) for check in checks)]


Name = required_text(MAX_NAME_CHARS)
IdNumber = required_text(MAX_ID_NUMBER_CHARS)
Phone = required_text(MAX_ID_NUMBER_CHARS, {"pattern": "^1[3-9][0-9]{9}$"}, _phone)
NewPassword = required_text(MAX_NEW_PASSWORD_CHARS, {"pattern": "^[!-~]{8,32}$", "description": NEW_PASSWORD_RULES})


class QuestionStart(Body):
    """Whose security question: the account's name and id number."""

    name: Name  # type: ignore[valid-type]
    id_number: IdNumber  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class QuestionAnswer(Body):
    """The answer to the security question and the new password."""

    answer: required_text(ANSWER_MAX_CHARS)  # type: ignore[valid-type]
    new_password: NewPassword  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class SmsStart(Body):
    """Whose phone gets the code: the account's name, id number and phone."""

    name: Name  # type: ignore[valid-type]
    id_number: IdNumber  # type: ignore[valid-type]
    phone: Phone  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class SmsConfirm(Body):
    """The code sent to the phone and the new password."""

    phone: Phone  # type: ignore[valid-type]
    code: required_text(MAX_CODE_CHARS)  # type: ignore[valid-type]
    new_password: NewPassword  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class ResetStarted(Reply):
    """The reset's id and the question to answer."""

    reset_id: str
    question: str


class CodeSent(Reply):
    """How long a code sent now is valid."""

    expires_in: int = Field(description="seconds the code is valid (answered whether or not a code was sent)")


PASSWORD_SET = {204: Answer(None, "password changed")}
WEAK_PASSWORD = "validation_failed: details.fields.new_password names the policy problem (the reset stays usable)"
HASHER_FULL = "overloaded (hashing pool full); or shed"


@routes.post("/api/v1/password-resets/question", "password_resets.question.start",
             summary="Start a reset by security question (the id number's question; a decoy for an unknown one)",
             body=QuestionStart, captcha=True, shedding="login", limits=("ip", "global", "id_number"),
             answers={200: Answer(ResetStarted, "reset started")})
async def start_question(request: web.Request) -> web.Response:
    """Open a reset by security question: 200 ``{"reset_id", "question"}`` (the id number's, whatever the name)."""
    body = await read_body(request, QuestionStart)
    await guard(request, body, id_number=body.id_number)
    app = request.app
    challenge = await recovery.start_question(app[keys.PG], app[keys.REDIS], body.name, body.id_number,
                                              secret=app[keys.RECOVERY_KEY])
    return json_response({"reset_id": challenge.reset_id, "question": challenge.question}, headers=NO_STORE)


@routes.post("/api/v1/password-resets/question/{reset_id}", "password_resets.question.finish",
             summary="Answer the security question and set a new password (ends every session)",
             body=QuestionAnswer, captcha=True, shedding="login", answers=PASSWORD_SET,
             params=(Param("reset_id", "path", {"type": "string"}, "the reset_id its start answered"),),
             errors={400: "reset_invalid (unknown, expired or used reset id, or wrong answer); "
                          "reset_attempts_exhausted", 422: WEAK_PASSWORD, 503: HASHER_FULL})
async def finish_question(request: web.Request) -> web.Response:
    """Answer the question and set the new password: 204; 400 ``reset_invalid``; 422 for a weak password."""
    body = await read_body(request, QuestionAnswer)
    await guard(request, body)
    app = request.app
    await recovery.finish_question(app[keys.PG], app[keys.REDIS], app[keys.HASHER], request.match_info["reset_id"],
                                   body.answer, body.new_password)
    return web.Response(status=204)


@routes.post("/api/v1/password-resets/sms", "password_resets.sms.start",
             summary="Send a reset code to the phone if name, id number and phone are one account's",
             body=SmsStart, captcha=True, shedding="login", limits=("ip", "global", "id_number"),
             answers={202: Answer(CodeSent, "accepted (sent only when the three match)")},
             errors={429: "too_many_requests: codes to this phone too frequent (details.reason sms_per_phone), "
                          "or a throttle (Retry-After)"})
async def start_sms(request: web.Request) -> web.Response:
    """Send a reset code to the phone if name, id number and phone are one account's: 202 either way."""
    body = await read_body(request, SmsStart)
    await guard(request, body, id_number=body.id_number)
    app = request.app
    codes = app[keys.SETTINGS].code_settings()
    await recovery.start_sms(app[keys.PG], app[keys.REDIS], body.name, body.id_number, body.phone,
                             now=utcnow(), secret=app[keys.RECOVERY_KEY], settings=recovery.RecoverySettings.of(codes))
    return json_response({"expires_in": codes.code_ttl_s}, status=202, headers=NO_STORE)


@routes.post("/api/v1/password-resets/sms/confirm", "password_resets.sms.confirm",
             summary="Check the SMS code and set a new password (ends every session)",
             body=SmsConfirm, captcha=True, shedding="login", answers=PASSWORD_SET,
             errors={400: "code_invalid (wrong, expired, used or out of attempts)", 422: WEAK_PASSWORD,
                     503: HASHER_FULL})
async def confirm_sms(request: web.Request) -> web.Response:
    """Check the SMS code and set the new password: 204; 400 ``code_invalid``; 422 for a weak password."""
    body = await read_body(request, SmsConfirm)
    await guard(request, body)
    app = request.app
    code = unicodedata.normalize("NFKC", body.code).strip()
    await recovery.confirm_sms(app[keys.PG], app[keys.REDIS], app[keys.HASHER], body.phone, code,
                               body.new_password, secret=app[keys.RECOVERY_KEY])
    return web.Response(status=204)
