"""Candidate registration: validated, captcha-guarded, hashed off the loop, written in one statement.

``AccountForm`` checks the body's shape (types, required and unknown fields, choices, how many
educations) and calls the rules of ``core.accounts`` on each value, so one 422 lists every bad
field with its code (``invalid_check_digit``, ``too_few_character_classes``, ``in_future``, …).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError, ValidationError

from core import accounts, agreements, candidates, phone_codes
from core.accounts import FieldInvalid, Registration
from gateway import keys
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.captcha_gate import guard
from gateway.models import NOT_BLANK, Body, CaptchaValue, Reply
from gateway.routes.account_codes import code_of
from gateway.routing import Answer, Routes

routes = Routes("Accounts")
T = TypeVar("T")

FREE_TEXT = "white space runs count as one space; control, format, private-use and unassigned characters are refused"
PASSWORD_RULES = ("8-32 visible ASCII characters with at least three of upper case, lower case, digits and symbols, "
                  "containing neither the username nor the id number (422 too_few_character_classes, "
                  "contains_username, contains_id_number)")


def _string(value: Any) -> Any:
    """null counts as missing (``required``); anything but a string is ``must_be_string``, choices included."""
    if value is None:
        raise PydanticCustomError("required", "必填")
    if type(value) is not str:
        raise PydanticCustomError("must_be_string", "必须是字符串")
    return value


def _present(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("required", "必填")
    return value


def _problem(exc: FieldInvalid) -> PydanticCustomError:
    return PydanticCustomError(exc.code, "不符合要求：{code}", {"code": exc.code})


def _judged(check: Callable[..., T], value: str, *args: Any, **kwargs: Any) -> T:
    """``check(value, …)`` (a rule of ``core.accounts``): its ``FieldInvalid`` becomes the field's code."""
    try:
        return check(value, *args, **kwargs)
    except FieldInvalid as exc:
        raise _problem(exc) from None


def _rule(check: Callable[[str], T]) -> AfterValidator:
    """``check`` as a validator of one field alone."""
    return AfterValidator(lambda value: _judged(check, value))


def _text(check: Callable[[str], str], schema: dict[str, Any]) -> Any:
    """A string judged by ``check``; lengths are counted by the rule, after normalisation, so only documented here."""
    return Annotated[str, BeforeValidator(_string), _rule(check), Field(json_schema_extra=schema)]


def _free_text(min_chars: int, max_chars: int, description: str = FREE_TEXT) -> Any:
    return _text(lambda value: accounts.check_text(value, min_chars, max_chars),
                 {"minLength": min_chars, "maxLength": max_chars, "pattern": NOT_BLANK, "description": description})


def _normalised(check: Callable[..., str], value: str, *args: Any) -> str | None:
    """``value`` as ``check`` stores it, or None when it is not valid at all (then it cannot match)."""
    try:
        return check(value, *args)
    except FieldInvalid:
        return None


def _year_month(value: Any) -> date:
    return _judged(accounts.check_year_month, _string(value))


def _choice(kind: Any) -> Any:
    return Annotated[kind, BeforeValidator(_string)]


class EducationRecord(Body):
    """One completed education."""

    cert_no: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS,  # type: ignore[valid-type]
                        "unique within the body (422 duplicate)")
    school: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS)  # type: ignore[valid-type]
    graduated_on: Annotated[date, PlainValidator(_year_month), WithJsonSchema({
        "type": "string", "pattern": "^(195[1-9]|19[6-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])$",
        "description": "YYYY-MM from 1951-01 (422 too_early), not in the future (422 in_future)"})]
    major: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS)  # type: ignore[valid-type]
    level: _choice(accounts.EducationLevel)  # type: ignore[valid-type]
    mode: _choice(accounts.EducationMode)  # type: ignore[valid-type]


class DegreeRecord(Body):
    """One degree (学位)."""

    cert_no: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS,  # type: ignore[valid-type]
                        "unique within the body (422 duplicate)")
    school: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS)  # type: ignore[valid-type]
    obtained_on: Annotated[date, PlainValidator(_year_month), WithJsonSchema({
        "type": "string", "pattern": "^(195[1-9]|19[6-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])$",
        "description": "YYYY-MM from 1951-01 (422 too_early), not in the future (422 in_future)"})]
    major: _free_text(1, accounts.EDUCATION_TEXT_MAX_CHARS)  # type: ignore[valid-type]
    level: _choice(accounts.DegreeLevel)  # type: ignore[valid-type]
    kind: _choice(accounts.DegreeKind)  # type: ignore[valid-type]


class Confirmation(Body):
    """The name and id number typed a second time (确认), compared with the fields after normalisation."""

    name: Annotated[str, BeforeValidator(_string), Field(max_length=accounts.LATIN_NAME_MAX_CHARS)]
    id_number: Annotated[str, BeforeValidator(_string), Field(max_length=32)]


class AccountForm(Body):
    """A registration: the account, its identity document, contacts, security question and educations."""

    # Declared in the order the rules need them: the id number and the name are judged by the id type,
    # the password against the username and the id number as stored (a field that failed is not there).

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "username": "zhangsan2026", "password": "Qiu#2026pass", "name": "张三", "id_type": "resident_id",
        "id_number": "11010519491231002X", "phone": "13912345678", "email": "zhangsan@example.com",
        "security_question": "我的小学校名？", "security_answer": "实验小学",
        "educations": [{"cert_no": "10001120120600123", "school": "北京大学", "graduated_on": "2012-06",
                        "major": "经济学", "level": "bachelor", "mode": "full_time"}],
    }]})

    username: _text(accounts.check_username, {  # type: ignore[valid-type]
        "pattern": "^[A-Za-z][A-Za-z0-9_]{5,19}$", "description": "case-insensitive"})
    id_type: _choice(accounts.IdType)  # type: ignore[valid-type]
    id_number: Annotated[str, BeforeValidator(_string), Field(json_schema_extra={
        "minLength": 1, "maxLength": 32, "pattern": NOT_BLANK,
        "description": "per id_type: a resident id is 18 characters with a valid GB 11643 check digit (422 "
                       "invalid_length, invalid_format, invalid_region, invalid_birth_date, invalid_check_digit)"})]
    name: Annotated[str, BeforeValidator(_string), Field(json_schema_extra={
        "minLength": 2, "maxLength": accounts.LATIN_NAME_MAX_CHARS, "pattern": NOT_BLANK,
        "description": "Chinese characters (2-30; a rare one in brackets, parts joined by ·), or Latin letters "
                       "for a passport (up to 64); otherwise 422 invalid_characters"})]
    password: Annotated[str, BeforeValidator(_string), Field(json_schema_extra={
        "pattern": "^[!-~]{8,32}$", "description": PASSWORD_RULES})]
    phone: _text(accounts.check_phone, {"pattern": "^1[3-9][0-9]{9}$"})  # type: ignore[valid-type]
    email: _text(accounts.check_email, {  # type: ignore[valid-type]
        "format": "email", "minLength": 3, "maxLength": accounts.EMAIL_MAX_CHARS,
        "description": "422 invalid_format unless an address with a dotted domain"})
    security_question: _free_text(accounts.QUESTION_MIN_CHARS, accounts.QUESTION_MAX_CHARS)  # type: ignore[valid-type]
    security_answer: _text(accounts.check_answer, {  # type: ignore[valid-type]
        "minLength": 1, "maxLength": accounts.ANSWER_MAX_CHARS, "pattern": NOT_BLANK, "description": FREE_TEXT})
    educations: Annotated[list[EducationRecord], BeforeValidator(_present),
                          Field(max_length=accounts.MAX_EDUCATIONS, json_schema_extra={"minItems": 1})]
    degrees: Annotated[list[DegreeRecord], Field(default_factory=list, max_length=accounts.MAX_DEGREES)]
    confirmation: Annotated[Confirmation, BeforeValidator(_present), Field(
        description="name and id_number typed again: 422 mismatch under confirmation.name / confirmation.id_number "
                    "unless equal to the fields (after the same normalisation)")]
    sms_code: Annotated[str, BeforeValidator(_string), Field(
        max_length=16, description="the code POST /api/v1/sms-codes (purpose register) sent to the phone; "
                                   "400 code_invalid when wrong, expired or used")]
    agreement_version: Annotated[int | None, Field(
        None, ge=1, description="the service agreement version read and accepted (GET /api/v1/documents/agreement); "
                                "required while one is published: 409 agreement_version_changed otherwise")] = None
    captcha: CaptchaValue = None

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str, info: ValidationInfo) -> str:
        id_type = info.data.get("id_type")
        if id_type is None:  # a number cannot be judged without its type, which is reported instead
            return value
        return _judged(accounts.check_id_number, value, id_type)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        return _judged(accounts.check_name, value, info.data.get("id_type"))

    @field_validator("password")
    @classmethod
    def _password(cls, value: str, info: ValidationInfo) -> str:
        return _judged(accounts.check_password, value, username=info.data.get("username"),
                       id_number=info.data.get("id_number"))

    @field_validator("degrees")
    @classmethod
    def _degrees(cls, value: list[DegreeRecord]) -> list[DegreeRecord]:
        index = accounts.duplicate_at(degree.cert_no for degree in value)
        if index is not None:
            raise ValidationError.from_exception_data(cls.__name__, [{
                "type": PydanticCustomError("duplicate", "学位证书编号重复"), "loc": (index, "cert_no"),
                "input": value[index].cert_no}])
        return value

    @field_validator("confirmation")
    @classmethod
    def _confirmation(cls, value: Confirmation, info: ValidationInfo) -> Confirmation:
        # Compared with the fields as stored (normalised); a field that failed is reported there instead.
        problems = []
        name, id_number, id_type = info.data.get("name"), info.data.get("id_number"), info.data.get("id_type")
        if name is not None and _normalised(accounts.check_name, value.name, id_type) != name:
            problems.append({"type": PydanticCustomError("mismatch", "两次输入的姓名不一致"), "loc": ("name",),
                             "input": value.name})
        if (id_number is not None and id_type is not None
                and _normalised(accounts.check_id_number, value.id_number, id_type) != id_number):
            problems.append({"type": PydanticCustomError("mismatch", "两次输入的证件号码不一致"),
                             "loc": ("id_number",), "input": value.id_number})
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)  # type: ignore[arg-type]
        return value

    @field_validator("educations")
    @classmethod
    def _educations(cls, value: list[EducationRecord]) -> list[EducationRecord]:
        if not value:
            raise PydanticCustomError("required", "至少填写一条学历")
        index = accounts.duplicate_at(education.cert_no for education in value)
        if index is not None:
            # pydantic puts a ValidationError raised here under this field, so the code lands on the record.
            raise ValidationError.from_exception_data(cls.__name__, [{
                "type": PydanticCustomError("duplicate", "学历证书编号重复"), "loc": (index, "cert_no"),
                "input": value[index].cert_no}])
        return value

    def registration(self) -> Registration:
        """The registration to store, every value in its normalised form."""
        return Registration(
            username=self.username, password=self.password, name=self.name, id_type=self.id_type,
            id_number=self.id_number, phone=self.phone, email=self.email, security_question=self.security_question,
            security_answer=self.security_answer,
            educations=tuple(accounts.Education(cert_no=e.cert_no, school=e.school, graduated_on=e.graduated_on,
                                                major=e.major, level=e.level, mode=e.mode) for e in self.educations),
            degrees=tuple(accounts.Degree(cert_no=d.cert_no, school=d.school, obtained_on=d.obtained_on, major=d.major,
                                          level=d.level, kind=d.kind) for d in self.degrees),
            agreement_version=self.agreement_version)


class AccountCreated(Reply):
    """The new candidate's id."""

    candidate_id: int


@routes.post("/api/v1/accounts", "accounts.create", summary="Register a candidate (captcha per live config)",
             body=AccountForm, captcha=True, answers={201: Answer(AccountCreated, "registered")},
             errors={400: "code_invalid: the phone's registration code is wrong, expired or used",
                     409: "id_number_taken, phone_taken, username_taken (details.field names it); "
                          "agreement_version_changed (details.version: the one in force)",
                     422: "validation_failed: details.fields maps each bad field (dotted path, e.g. "
                          "educations.0.graduated_on) to its code: required, unknown_field, must_be_string, "
                          "invalid_choice, invalid_format, invalid_check_digit, too_short, too_long, "
                          "too_few_character_classes, contains_username, in_future, duplicate, …",
                     503: "overloaded: the password hashing pool is full (Retry-After); or shed"})
async def create_account(request: web.Request) -> web.Response:
    """Register a candidate: 201 ``{"candidate_id"}``; 422 with every bad field; 409 for a taken identity."""
    # Validation costs no I/O and reveals nothing stored, so a form with a typo does not burn the captcha.
    form = await read_body(request, AccountForm)
    registration = form.registration()
    await guard(request, form, account=registration.username, id_number=registration.id_number)
    app = request.app
    agreements.require_current(await agreements.latest(app[keys.PG], "agreement"), form.agreement_version)
    app[keys.HASHER].check_capacity()  # a full hashing pool refuses before the code's attempt is spent
    # The phone's code: an attempt is spent now; the code is dropped only once the account exists,
    # so a taken username (409) can be corrected and sent again with the same code.
    taken = await phone_codes.check(app[keys.REDIS], registration.phone, "register", code_of(form.sms_code),
                                    secret=app[keys.RECOVERY_KEY])
    hasher = app[keys.HASHER]
    hashed = await asyncio.gather(hasher.hash(registration.password),
                                  hasher.hash_answer(registration.security_answer), return_exceptions=True)
    for result in hashed:  # both awaited to the end, so no failure goes unretrieved
        if isinstance(result, BaseException):
            raise result
    password_hash, answer_hash = hashed
    assert isinstance(password_hash, str) and isinstance(answer_hash, str)
    candidate_id = await candidates.create(app[keys.PG], registration, password_hash=password_hash,
                                           answer_hash=answer_hash, redis=app[keys.REDIS],
                                           address=app[keys.CLIENT_IP].of(request))
    await phone_codes.consume(app[keys.REDIS], taken.phone, "register")
    return json_response({"candidate_id": candidate_id}, status=201, headers=NO_STORE)
