"""The rules of an account's fields, and the normalised ``Registration`` they make.

The gateway's request model checks a registration body's shape (types, required and unknown
fields, choices, how many educations); the rules here judge each value and return it in the
one form it is stored in, or raise ``FieldInvalid`` whose ``code`` the client sees under the
field (``invalid_check_digit``, ``too_few_character_classes``, ``in_future``, …). They are
plain functions of strings, so password recovery and lookups call the same ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, get_args

from core import idcards
from core.errors import CoreError

# The normalisers live in core.identity (every lookup and throttle uses them); re-exported here.
from core.identity import MIDDLE_DOT, normalise_id_number, normalise_name, normalise_phone, normalise_username
from core.passwords import check_policy, normalise_answer
from core.timeutil import SHANGHAI, utcnow

__all__ = [
    "Degree", "DegreeKind", "DegreeLevel", "Education", "FieldInvalid", "MAX_DEGREES", "Registration",
    "check_answer", "check_email", "check_id_number", "check_name", "check_password", "check_phone",
    "check_text", "check_username", "check_year_month", "duplicate_at", "shanghai_today",
    "normalise_id_number", "normalise_name", "normalise_phone", "normalise_username",
    "ID_TYPES", "EDUCATION_LEVELS", "EDUCATION_MODES", "USERNAME_RE", "EducationLevel", "EducationMode", "IdType",
]  # fmt: skip

IdType = Literal["resident_id", "passport", "military_officer", "hk_macau_permit", "taiwan_permit"]
DegreeLevel = Literal["doctorate", "master", "bachelor"]
DegreeKind = Literal["academic", "professional", "honorary"]  # 学术学位, 专业学位, 名誉学位
EducationLevel = Literal["doctorate", "master", "bachelor", "college", "secondary"]
EducationMode = Literal["full_time", "part_time", "self_study", "online"]
ID_TYPES: tuple[str, ...] = get_args(IdType)
EDUCATION_LEVELS: tuple[str, ...] = get_args(EducationLevel)
EDUCATION_MODES: tuple[str, ...] = get_args(EducationMode)
MAX_EDUCATIONS = 10
MAX_DEGREES = 5
EARLIEST_GRADUATION_YEAR = 1951  # "after 1950"
EARLIEST_BIRTH_YEAR = 1900  # a resident id born earlier is a typo, not a candidate

USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{5,19}")
PHONE_RE = re.compile(r"1[3-9][0-9]{9}")
_YEAR_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")

# Identity documents other than the resident id, after upper-casing:
_ID_FORMATS = {
    # Chinese passports are E or G + 8 digits (already covered); foreign ones 1–2 letters + 7–8 digits.
    "passport": re.compile(r"[A-Z]{1,2}[0-9]{7,8}"),
    # Officer's card: "南字第1234567号" (issuing body, 字第, 6–8 digits, optional 号, stored without it),
    # or the newer 6–12 letters and digits.
    "military_officer": re.compile(r"[\u4e00-\u9fff]{1,4}字第[0-9]{6,8}|[A-Z0-9]{6,12}"),
    # Mainland travel permit for Hong Kong and Macao residents: H/M + 8 digits (10 on older cards).
    "hk_macau_permit": re.compile(r"[HM][0-9]{8}(?:[0-9]{2})?"),
    # Mainland travel permit for Taiwan residents: 8 digits, or 10 letters and digits on older cards.
    "taiwan_permit": re.compile(r"[0-9]{8}|[A-Z0-9]{10}"),
}

NAME_MIN_CHARS, NAME_MAX_CHARS = 2, 30
# Names in Latin letters (passport holders) are often longer than 30; the column allows 64.
LATIN_NAME_MAX_CHARS = 64
# CJK Unified Ideographs and every extension block (A–I), plus 〇 (used in names) and the twelve
# unified ideographs of the compatibility block (NFC maps all the others to unified ones).
_CJK_RANGES = (
    (0x3007, 0x3007), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xFA0E, 0xFA29),
    (0x20000, 0x2A6DF), (0x2A700, 0x2EE5F), (0x30000, 0x323AF),
)  # fmt: skip
_LATIN_NAME_RE = re.compile(r"[^\W\d_]+(?:(?:\. |[ .'-])[^\W\d_]+)*\.?")

EMAIL_MAX_CHARS = 254
_EMAIL_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

QUESTION_MIN_CHARS, QUESTION_MAX_CHARS = 2, 64
ANSWER_MAX_CHARS = 64
EDUCATION_TEXT_MAX_CHARS = 64


class FieldInvalid(CoreError):
    """A value breaks its field's rule; ``code`` (snake_case) names the problem."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Education:
    """One completed education; ``graduated_on`` is the first day of the graduation month."""

    cert_no: str
    school: str
    graduated_on: date
    major: str
    level: str
    mode: str


@dataclass(frozen=True, slots=True)
class Degree:
    """One degree (学位), recorded beside the education records; ``obtained_on`` is the first day of its month."""

    cert_no: str
    school: str
    obtained_on: date
    major: str
    level: str
    kind: str


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated, normalised registration; the password and answer are still plain (hash them next)."""

    username: str
    password: str = field(repr=False)
    name: str
    id_type: str
    id_number: str
    phone: str
    email: str
    security_question: str
    security_answer: str = field(repr=False)
    educations: tuple[Education, ...]
    degrees: tuple[Degree, ...] = ()
    agreement_version: int | None = None  # the service agreement accepted (None: none is published)


# -- the rules: each takes the value as sent and returns it normalised, or raises FieldInvalid ---------


def shanghai_today() -> date:
    """Today in Asia/Shanghai, the calendar birth and graduation dates are judged by."""
    return utcnow().astimezone(SHANGHAI).date()


def check_username(value: str) -> str:
    """A letter then 5-19 letters, digits or underscores, in any width and case; stored lower case."""
    username = normalise_username(value)
    if not USERNAME_RE.fullmatch(username):
        raise FieldInvalid("invalid_format")
    return username


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _chinese_name_ok(name: str) -> bool:
    """Ideographs and bracketed rare characters (``王晓[沛]``, ``王[pei]``), parts joined by single middle dots."""
    for part in name.split(MIDDLE_DOT):
        if not part:
            return False  # leading, trailing or doubled dot
        i = 0
        while i < len(part):
            ch = part[i]
            if ch == "[":
                end = part.find("]", i + 1)
                inner = part[i + 1 : end] if end > 0 else ""
                if not inner or not all(c.isalpha() for c in inner):
                    return False
                i = end + 1
            elif _is_cjk(ch):
                i += 1
            else:
                return False
    return True


def _is_latin(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN ")


def _within(text: str, min_chars: int, max_chars: int) -> str:
    if len(text) < min_chars:
        raise FieldInvalid("too_short")
    if len(text) > max_chars:
        raise FieldInvalid("too_long")
    return text


def check_name(value: str, id_type: str | None) -> str:
    """Chinese characters (2-30), or Latin letters (2-64) for a passport holder; stored normalised."""
    name = normalise_name(value)
    if not name:
        raise FieldInvalid("required")
    if _chinese_name_ok(name):
        return _within(name, NAME_MIN_CHARS, NAME_MAX_CHARS)
    if (id_type == "passport" and _LATIN_NAME_RE.fullmatch(name)
            and all(not c.isalpha() or _is_latin(c) for c in name)):
        return _within(name, NAME_MIN_CHARS, LATIN_NAME_MAX_CHARS)
    raise FieldInvalid("invalid_characters")


def _resident_id_problem(value: str, today: date) -> str | None:
    if len(value) != 18:
        return "invalid_length"
    if not value[:17].isascii() or not value[:17].isdigit() or value[17] not in "0123456789X":
        return "invalid_format"
    if value[:2] not in idcards.PROVINCE_CODES:
        return "invalid_region"
    born = idcards.birth_date(value)
    if born is None or born.year < EARLIEST_BIRTH_YEAR or born > today:
        return "invalid_birth_date"
    if idcards.check_digit(value[:17]) != value[17]:
        return "invalid_check_digit"
    return None


def check_id_number(value: str, id_type: str, today: date | None = None) -> str:
    """The number in the format of ``id_type`` (a resident id with its GB 11643 check digit); stored normalised."""
    number = normalise_id_number(value)
    if not number:
        raise FieldInvalid("required")
    if id_type == "resident_id":
        problem = _resident_id_problem(number, today or shanghai_today())
        if problem:
            raise FieldInvalid(problem)
    elif not _ID_FORMATS[id_type].fullmatch(number):
        raise FieldInvalid("invalid_format")
    return number


def check_phone(value: str) -> str:
    """A mainland mobile number (11 digits from 13-19), full-width digits allowed."""
    phone = normalise_phone(value)
    if not PHONE_RE.fullmatch(phone):
        raise FieldInvalid("invalid_format")
    return phone


def check_email(value: str) -> str:
    """An address with a dotted domain of letters, digits and hyphens; the domain stored lower case."""
    email = value.strip()
    if not email:
        raise FieldInvalid("required")
    if len(email) > EMAIL_MAX_CHARS:
        raise FieldInvalid("too_long")
    local, at, domain = email.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or len(local) > 64
        or not _EMAIL_LOCAL_RE.fullmatch(local)
        or len(labels) < 2
        or not all(_EMAIL_LABEL_RE.fullmatch(label) for label in labels)
        or not (labels[-1].isalpha() or labels[-1].lower().startswith("xn--"))
    ):
        raise FieldInvalid("invalid_format")
    return f"{local}@{domain.lower()}"


def check_text(value: str, min_chars: int, max_chars: int) -> str:
    """Free text with white-space runs made one space, counted after that; no control or invisible characters."""
    text = " ".join(value.split())
    if not text:
        raise FieldInvalid("required")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        raise FieldInvalid("invalid_characters")
    return _within(text, min_chars, max_chars)


def check_answer(value: str) -> str:
    """A security answer as free text, then in the form login compares (``normalise_answer``)."""
    return normalise_answer(check_text(value, 1, ANSWER_MAX_CHARS))


def check_password(value: str, *, username: str | None = None, id_number: str | None = None) -> str:
    """The password policy of ``core.passwords.check_policy``, its problem raised."""
    problem = check_policy(value, username=username, id_number=id_number)
    if problem:
        raise FieldInvalid(problem)
    return value


def check_year_month(value: str, today: date | None = None) -> date:
    """``YYYY-MM`` from 1951-01 to this month; the first day of that month."""
    m = _YEAR_MONTH_RE.fullmatch(value.strip())
    if not m:
        raise FieldInvalid("invalid_format")
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12:
        raise FieldInvalid("invalid_format")
    if year < EARLIEST_GRADUATION_YEAR:
        raise FieldInvalid("too_early")
    today = today or shanghai_today()
    if (year, month) > (today.year, today.month):
        raise FieldInvalid("in_future")
    return date(year, month, 1)


def duplicate_at(cert_nos: Iterable[str]) -> int | None:
    """The index of the first certificate number met before in ``cert_nos``, or None."""
    seen: set[str] = set()
    for index, cert_no in enumerate(cert_nos):
        if cert_no in seen:
            return index
        seen.add(cert_no)
    return None
