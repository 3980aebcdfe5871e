"""Account maintenance (注册维护) over HTTP: the phone, the security question, the email, education and degree
records; operators' verification of the records and the account's audit trail.

A phone change is proven by a code to each number (``POST /api/v1/sms-codes``, purpose ``change_phone``):
both are checked, each spending an attempt, and one answer (400 ``code_invalid``) covers either being
wrong; they are dropped only once the change is stored, so a number taken meanwhile (409) leaves them
usable. The security question and the email are changed with the password, verified in the bounded
hashing pool (503 when full); a wrong one is 403 ``password_incorrect`` and spends the route's
``counts: failures`` rules (``reauth-candidate`` by default), as wrong passwords at sign-in do.

A phone or security-question change ends every session of the account, the caller's included, and
answers a new token for the caller (``core.account_maintenance.renew_sessions``): what could recover
the account changed, so whoever else held a session is signed out, and the caller's token is a new one.
An email change keeps the sessions (an address recovers nothing here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from core import account_maintenance as maintenance
from core import accounts, phone_codes
from core.account_maintenance import RecordKind
from core.accounts import FieldInvalid
from core.errors import NotFound
from core.timeutil import utcnow
from gateway import adminauth, auth, keys, throttle
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import NotFoundError, ValidationFailed
from gateway.models import NOT_BLANK, Body, Reply, Text
from gateway.pathids import path_id
from gateway.routes.account_codes import code_of
from gateway.routes.accounts import DegreeRecord, EducationRecord
from gateway.routes.recovery import MAX_CODE_CHARS, Phone, required_text
from gateway.routes.reviews import AFTER, LIMIT, REVIEWERS, page_limit, query_id
from gateway.routes.sessions import MAX_PASSWORD_CHARS
from gateway.routing import CANDIDATE, OPERATOR, Answer, Routes

routes = Routes("Account maintenance")
FREE_TEXT = "white space runs count as one space; control, format, private-use and unassigned characters are refused"
Password = required_text(MAX_PASSWORD_CHARS, {"minLength": 1, "pattern": NOT_BLANK,
                                               "description": "the account's password (403 password_incorrect)"})


def _judged(check: Callable[[str], str]) -> Callable[[str], str]:
    """A rule of ``core.accounts`` as a validator: its ``FieldInvalid`` becomes the field's code."""
    def judge(value: str) -> str:
        try:
            return check(value)
        except FieldInvalid as exc:
            raise PydanticCustomError(exc.code, "不符合要求：{code}", {"code": exc.code}) from None
    return judge


def _string(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("required", "必填")
    if type(value) is not str:
        raise PydanticCustomError("must_be_string", "必须是字符串")
    return value


def _text(check: Callable[[str], str], schema: dict[str, Any]) -> Any:
    """A string judged by ``check`` (lengths counted by the rule, after normalisation: only documented here)."""
    return Annotated[str, BeforeValidator(_string), AfterValidator(_judged(check)), Field(json_schema_extra=schema)]


# -- bodies and answers --------------------------------------------------------------------------------


class PhoneChange(Body):
    """The new number and the codes sent to the current and the new number (purpose change_phone)."""

    new_phone: Phone
    old_code: required_text(MAX_CODE_CHARS)  # type: ignore[valid-type]
    new_code: required_text(MAX_CODE_CHARS)  # type: ignore[valid-type]


class SecurityQuestionChange(Body):
    """The password, and the new question and its answer."""

    password: Password  # type: ignore[valid-type]
    question: _text(lambda value: accounts.check_text(value, accounts.QUESTION_MIN_CHARS,  # type: ignore[valid-type]
                                                      accounts.QUESTION_MAX_CHARS),
                    {"minLength": accounts.QUESTION_MIN_CHARS, "maxLength": accounts.QUESTION_MAX_CHARS,
                     "pattern": NOT_BLANK, "description": FREE_TEXT})
    answer: _text(accounts.check_answer, {  # type: ignore[valid-type]
        "minLength": 1, "maxLength": accounts.ANSWER_MAX_CHARS, "pattern": NOT_BLANK, "description": FREE_TEXT})


class EmailChange(Body):
    """The password and the new address."""

    password: Password  # type: ignore[valid-type]
    email: _text(accounts.check_email, {  # type: ignore[valid-type]
        "format": "email", "minLength": 3, "maxLength": accounts.EMAIL_MAX_CHARS,
        "description": "422 invalid_format unless an address with a dotted domain"})


class RecordStatus(Body):
    """A record's verification status, and an optional note kept in the audit."""

    status: Literal["verified", "needs_manual", "rejected", "not_checked"]
    note: Text(1, maintenance.NOTE_MAX_CHARS) | None = None  # type: ignore[valid-type]


class NewSession(Reply):
    """Every session of the account ended: the caller's new one."""

    token: str = Field(description="the caller's new session token (the one sent is ended)")
    expires_in: int


class PhoneChanged(NewSession):
    """The number now bound."""

    phone: str


class QuestionChanged(NewSession):
    """The question now set."""

    security_question: str


class EmailChanged(Reply):
    """The address now stored (normalised)."""

    email: str


RecordStatusName = Literal["not_checked", "verified", "needs_manual", "rejected"]


class EducationItem(Reply):
    """An education record (学历) and its verification status."""

    education_id: int
    cert_no: str
    school: str
    graduated_on: str = Field(description="YYYY-MM")
    major: str
    level: accounts.EducationLevel
    mode: accounts.EducationMode
    status: RecordStatusName
    added_at: str | None = Field(description="when added after registration (null: given at registration)")
    checked_at: str | None


class DegreeItem(Reply):
    """A degree record (学位) and its verification status."""

    degree_id: int
    cert_no: str
    school: str
    obtained_on: str = Field(description="YYYY-MM")
    major: str
    level: accounts.DegreeLevel
    kind: accounts.DegreeKind
    status: RecordStatusName
    added_at: str | None = Field(description="when added after registration (null: given at registration)")
    checked_at: str | None


class CheckedEducation(EducationItem):
    """An education record as operators see it: who checked it."""

    checked_by: str | None


class CheckedDegree(DegreeItem):
    """A degree record as operators see it: who checked it."""

    checked_by: str | None


class AccountEvent(Reply):
    """One change of the account."""

    event_id: int
    action: str = Field(description="create, accept_agreement, change_phone, change_security_question, change_email, "
                                    "add_education, delete_education, add_degree, delete_degree, "
                                    "set_education_status, set_degree_status, …")
    actor: str = Field(description="candidate:<id> or operator:<name>")
    details: dict[str, Any] = Field(description="what changed; phone numbers and addresses masked, never a secret")
    address: str | None
    at: str


class AccountEventPage(Reply):
    """A page of the audit trail, oldest first; ``next_after`` is the ``after`` of the next page (null: the last)."""

    events: list[AccountEvent]
    next_after: int | None


# -- the candidate's routes ----------------------------------------------------------------------------


async def _account(request: web.Request) -> tuple[int, maintenance.Account]:
    candidate_id = await auth.candidate_id(request)
    try:
        return candidate_id, await maintenance.account_of(request.app[keys.PG], candidate_id)
    except NotFound:  # the account went away under a live session
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True) from None


async def _verify_password(request: web.Request, account: maintenance.Account, password: str) -> None:
    """The account's password, or 403 after spending the route's ``counts: failures`` rules."""
    if not await request.app[keys.HASHER].verify(account.password_hash, password):
        await throttle.record_failure(request)
        raise maintenance.PasswordIncorrect()


async def _renewed(request: web.Request, candidate_id: int, username: str) -> dict[str, Any]:
    app = request.app
    session = await maintenance.renew_sessions(app[keys.REDIS], candidate_id, username, now=utcnow(),
                                               settings=app[keys.SESSIONS])
    return {"token": session.token, "expires_in": session.expires_in_s}


PASSWORD_ERRORS = {403: "password_incorrect: not the account's password (counted by the route's failures rules)",
                   429: "too_many_requests: a throttle, e.g. reauth-candidate after repeated wrong passwords "
                        "(Retry-After)",
                   503: "overloaded: the password hashing pool is full (Retry-After); or shed"}


@routes.put("/api/v1/me/phone", "me.phone.put", caller=CANDIDATE, body=PhoneChange,
            summary="Change the bound phone: a code (purpose change_phone) to the current and to the new number",
            answers={200: Answer(PhoneChanged, "changed; every session ended, the caller's new token")},
            errors={400: "code_invalid: either code wrong, expired or used (one answer; each check spends an "
                         "attempt)",
                    409: "phone_taken: another account has the new number (the codes stay usable)",
                    422: "validation_failed: new_phone invalid_format, or same_as_current"})
async def change_phone(request: web.Request) -> web.Response:
    """Bind the new number once both codes are right; every session ends and the caller gets a new token."""
    body = await read_body(request, PhoneChange)
    candidate_id, account = await _account(request)
    new_phone = body.new_phone
    if new_phone == account.phone:
        raise ValidationFailed({"new_phone": "same_as_current"}, "新手机号码与当前绑定的号码相同")
    app = request.app
    redis, secret = app[keys.REDIS], app[keys.RECOVERY_KEY]
    # Both checked whatever the other's result, each spending an attempt: one answer, whichever is wrong.
    checked = await asyncio.gather(
        phone_codes.check(redis, account.phone, "change_phone", code_of(body.old_code), secret=secret),
        phone_codes.check(redis, new_phone, "change_phone", code_of(body.new_code), secret=secret),
        return_exceptions=True)
    for result in checked:
        if isinstance(result, BaseException) and not isinstance(result, phone_codes.CodeInvalid):
            raise result
    if any(isinstance(result, BaseException) for result in checked):
        raise phone_codes.CodeInvalid()
    await maintenance.change_phone(app[keys.PG], candidate_id, account.phone, new_phone,
                                   address=app[keys.CLIENT_IP].of(request))
    await asyncio.gather(phone_codes.consume(redis, account.phone, "change_phone"),
                         phone_codes.consume(redis, new_phone, "change_phone"))
    answer = {"phone": new_phone, **await _renewed(request, candidate_id, account.username)}
    return json_response(answer, headers=NO_STORE)


@routes.put("/api/v1/me/security-question", "me.security_question.put", caller=CANDIDATE,
            body=SecurityQuestionChange, summary="Change the security question and its answer (with the password)",
            answers={200: Answer(QuestionChanged, "changed; every session ended, the caller's new token")},
            errors={**PASSWORD_ERRORS, 422: "validation_failed: question too_short, too_long, invalid_characters; "
                                            "answer too_long, invalid_characters"})
async def change_security_question(request: web.Request) -> web.Response:
    """Set a new question and answer once the password is verified; every session ends, the caller gets a new one."""
    body = await read_body(request, SecurityQuestionChange)
    app = request.app
    app[keys.HASHER].check_capacity()  # a full pool refuses before any I/O
    candidate_id, account = await _account(request)
    await _verify_password(request, account, body.password)
    answer_hash = await app[keys.HASHER].hash_answer(body.answer)
    await maintenance.change_security_question(app[keys.PG], candidate_id, body.question, answer_hash,
                                               address=app[keys.CLIENT_IP].of(request))
    answer = {"security_question": body.question, **await _renewed(request, candidate_id, account.username)}
    return json_response(answer, headers=NO_STORE)


@routes.put("/api/v1/me/email", "me.email.put", caller=CANDIDATE, body=EmailChange,
            summary="Change the email address (with the password)",
            answers={200: Answer(EmailChanged, "changed (the same address: nothing written)")},
            errors={**PASSWORD_ERRORS, 422: "validation_failed: email invalid_format, too_long"})
async def change_email(request: web.Request) -> web.Response:
    """Store a new address once the password is verified; sessions are kept."""
    body = await read_body(request, EmailChange)
    app = request.app
    app[keys.HASHER].check_capacity()
    candidate_id, account = await _account(request)
    await _verify_password(request, account, body.password)
    await maintenance.change_email(app[keys.PG], candidate_id, body.email, address=app[keys.CLIENT_IP].of(request))
    return json_response({"email": body.email}, headers=NO_STORE)


def _not_found(kind: RecordKind) -> NotFoundError:
    return NotFoundError(f"{kind.label}信息不存在", code=f"{kind.name}_not_found")


def _record_id(request: web.Request, kind: RecordKind) -> int:
    found = path_id(request.match_info[kind.id_name])
    if found is None:
        raise _not_found(kind)
    return found


async def _add(request: web.Request, kind: RecordKind, record: accounts.Education | accounts.Degree) -> web.Response:
    candidate_id = await auth.candidate_id(request)
    try:
        added = await maintenance.add_record(request.app[keys.PG], kind, candidate_id, record,
                                             address=request.app[keys.CLIENT_IP].of(request))
    except NotFound:
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True) from None
    return json_response(added, status=201, headers=NO_STORE)


async def _delete(request: web.Request, kind: RecordKind) -> web.Response:
    candidate_id = await auth.candidate_id(request)
    record_id = _record_id(request, kind)
    try:
        await maintenance.delete_record(request.app[keys.PG], kind, candidate_id, record_id,
                                        address=request.app[keys.CLIENT_IP].of(request))
    except NotFound:
        raise _not_found(kind) from None
    return web.Response(status=204)


@routes.post("/api/v1/me/educations", "me.educations.create", caller=CANDIDATE, body=EducationRecord,
             summary="Add an education record (学历); it is not checked yet",
             answers={201: Answer(EducationItem, "added, status not_checked")},
             errors={409: f"too_many_educations: {accounts.MAX_EDUCATIONS} already (details.max); duplicate_cert_no: "
                          "the account has a record with this certificate number",
                     422: "validation_failed: a field's code (required, too_long, invalid_characters, too_early, "
                          "in_future, invalid_choice, …)"})
async def add_education(request: web.Request) -> web.Response:
    """201 with the new record."""
    body = await read_body(request, EducationRecord)
    return await _add(request, maintenance.EDUCATIONS, accounts.Education(
        cert_no=body.cert_no, school=body.school, graduated_on=body.graduated_on, major=body.major, level=body.level,
        mode=body.mode))


@routes.post("/api/v1/me/degrees", "me.degrees.create", caller=CANDIDATE, body=DegreeRecord,
             summary="Add a degree record (学位); it is not checked yet",
             answers={201: Answer(DegreeItem, "added, status not_checked")},
             errors={409: f"too_many_degrees: {accounts.MAX_DEGREES} already (details.max); duplicate_cert_no: "
                          "the account has a record with this certificate number",
                     422: "validation_failed: a field's code (required, too_long, invalid_characters, too_early, "
                          "in_future, invalid_choice, …)"})
async def add_degree(request: web.Request) -> web.Response:
    """201 with the new record."""
    body = await read_body(request, DegreeRecord)
    return await _add(request, maintenance.DEGREES, accounts.Degree(
        cert_no=body.cert_no, school=body.school, obtained_on=body.obtained_on, major=body.major, level=body.level,
        kind=body.kind))


@routes.delete("/api/v1/me/educations/{education_id}", "me.educations.delete", caller=CANDIDATE,
               summary="Delete one of the account's education records (not a verified one, not the last one)",
               answers={204: Answer(None, "deleted")},
               errors={404: "education_not_found (or another account's)",
                       409: "record_verified: verified records stay; last_education: at least one is kept"})
async def delete_education(request: web.Request) -> web.Response:
    """204, or 409 for a verified record or the last education."""
    return await _delete(request, maintenance.EDUCATIONS)


@routes.delete("/api/v1/me/degrees/{degree_id}", "me.degrees.delete", caller=CANDIDATE,
               summary="Delete one of the account's degree records (not a verified one)",
               answers={204: Answer(None, "deleted")},
               errors={404: "degree_not_found (or another account's)",
                       409: "record_verified: verified records stay"})
async def delete_degree(request: web.Request) -> web.Response:
    """204, or 409 for a verified record."""
    return await _delete(request, maintenance.DEGREES)


# -- operators -----------------------------------------------------------------------------------------


def _candidate_id(request: web.Request) -> int:
    found = path_id(request.match_info["candidate_id"])
    if found is None:
        raise NotFoundError("考生不存在", code="candidate_not_found")
    return found


async def _set_status(request: web.Request, kind: RecordKind) -> web.Response:
    candidate_id, record_id = _candidate_id(request), _record_id(request, kind)
    body = await read_body(request, RecordStatus)
    note = None if body.note is None else " ".join(body.note.split()) or None
    try:
        updated = await maintenance.set_status(request.app[keys.PG], kind, candidate_id, record_id, body.status,
                                               operator=adminauth.operator_of(request).name, note=note,
                                               scope=adminauth.scope(request))
    except NotFound:
        raise _not_found(kind) from None
    return json_response(updated, headers=NO_STORE)


STATUS_SUMMARY = ("Set a record's verification status: verified (then it cannot be deleted), needs_manual, rejected, "
                  "or back to not_checked")


@routes.put("/admin/api/v1/candidates/{candidate_id}/educations/{education_id}/status",
            "admin.candidates.educations.status", caller=OPERATOR, roles=REVIEWERS, body=RecordStatus,
            summary=STATUS_SUMMARY, answers={200: Answer(CheckedEducation, "the record as it is now")},
            errors={404: "education_not_found: not this candidate's, or the candidate is out of scope"})
async def set_education_status(request: web.Request) -> web.Response:
    """200 with the record, audited with the operator's name."""
    return await _set_status(request, maintenance.EDUCATIONS)


@routes.put("/admin/api/v1/candidates/{candidate_id}/degrees/{degree_id}/status",
            "admin.candidates.degrees.status", caller=OPERATOR, roles=REVIEWERS, body=RecordStatus,
            summary=STATUS_SUMMARY, answers={200: Answer(CheckedDegree, "the record as it is now")},
            errors={404: "degree_not_found: not this candidate's, or the candidate is out of scope"})
async def set_degree_status(request: web.Request) -> web.Response:
    """200 with the record, audited with the operator's name."""
    return await _set_status(request, maintenance.DEGREES)


@routes.get("/admin/api/v1/candidates/{candidate_id}/account-events", "admin.candidates.account_events",
            caller=OPERATOR, roles=REVIEWERS, params=(AFTER, LIMIT),
            summary="A candidate's account audit trail (registration, changes, records, verifications), oldest first",
            answers={200: Answer(AccountEventPage, "a page")},
            errors={404: "candidate_not_found (or out of scope)", 422: "validation_failed: a bad after or limit"})
async def account_events(request: web.Request) -> web.Response:
    """A page of the audit trail."""
    candidate_id = _candidate_id(request)
    limit = page_limit(request)
    try:
        found = await maintenance.events(request.app[keys.PG], candidate_id, scope=adminauth.scope(request),
                                         after=query_id(request, "after") or 0, limit=limit)
    except NotFound:
        raise NotFoundError("考生不存在", code="candidate_not_found") from None
    return json_response({"events": found, "next_after": found[-1]["event_id"] if len(found) == limit else None},
                         headers=NO_STORE)
