"""Validation of the account registration body (``POST /api/v1/accounts``) into a normalised ``Registration``.

Every problem is collected, not just the first: ``AccountInvalid.fields`` maps each bad field
(dotted paths such as ``educations.0.level``) to a snake_case problem code. Anything that is not
the expected JSON type is a problem code too, never another exception.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core import idcards
from core.errors import CoreError

# The normalisers live in core.identity (every lookup and throttle uses them); re-exported here.
from core.identity import MIDDLE_DOT, normalise_id_number, normalise_name, normalise_phone, normalise_username
from core.passwords import check_policy, normalise_answer
from core.timeutil import SHANGHAI, utcnow

__all__ = [
    "AccountInvalid", "Education", "Registration", "parse_registration",
    "normalise_id_number", "normalise_name", "normalise_phone", "normalise_username",
    "ID_TYPES", "EDUCATION_LEVELS", "EDUCATION_MODES", "USERNAME_RE",
]  # fmt: skip

ID_TYPES = ("resident_id", "passport", "military_officer", "hk_macau_permit", "taiwan_permit")
EDUCATION_LEVELS = ("doctorate", "master", "bachelor", "college", "secondary")
EDUCATION_MODES = ("full_time", "part_time", "self_study", "online")
MAX_EDUCATIONS = 10
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

_FIELDS = ("username", "password", "name", "id_type", "id_number", "phone", "email",
           "security_question", "security_answer", "educations")  # fmt: skip
_EDUCATION_FIELDS = ("cert_no", "school", "graduated_on", "major", "level", "mode")


class AccountInvalid(CoreError):
    """The registration body has problems: ``fields`` maps each bad field path to a problem code."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid account: " + ", ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


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


# -- field checks: each returns (normalised value, None) or (None, problem code) ----------------------


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


def _check_name(value: str, id_type: str | None) -> tuple[str | None, str | None]:
    name = normalise_name(value)
    if not name:
        return None, "required"
    if _chinese_name_ok(name):
        if len(name) < NAME_MIN_CHARS:
            return None, "too_short"
        if len(name) > NAME_MAX_CHARS:
            return None, "too_long"
        return name, None
    if id_type == "passport":
        if _LATIN_NAME_RE.fullmatch(name) and all(not c.isalpha() or _is_latin(c) for c in name):
            if len(name) < NAME_MIN_CHARS:
                return None, "too_short"
            if len(name) > LATIN_NAME_MAX_CHARS:
                return None, "too_long"
            return name, None
    return None, "invalid_characters"


def _is_latin(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN ")


def _check_resident_id(value: str, today: date) -> str | None:
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


def _check_id_number(value: str, id_type: str, today: date) -> tuple[str | None, str | None]:
    number = normalise_id_number(value)
    if not number:
        return None, "required"
    if id_type == "resident_id":
        problem = _check_resident_id(number, today)
        return (None, problem) if problem else (number, None)
    return (number, None) if _ID_FORMATS[id_type].fullmatch(number) else (None, "invalid_format")


def _check_email(value: str) -> tuple[str | None, str | None]:
    email = value.strip()
    if not email:
        return None, "required"
    if len(email) > EMAIL_MAX_CHARS:
        return None, "too_long"
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
        return None, "invalid_format"
    return f"{local}@{domain.lower()}", None


def _check_text(value: str, min_chars: int, max_chars: int) -> tuple[str | None, str | None]:
    text = " ".join(value.split())
    if not text:
        return None, "required"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        return None, "invalid_characters"
    if len(text) < min_chars:
        return None, "too_short"
    if len(text) > max_chars:
        return None, "too_long"
    return text, None


def _check_year_month(value: str, today: date) -> tuple[date | None, str | None]:
    m = _YEAR_MONTH_RE.fullmatch(value.strip())
    if not m:
        return None, "invalid_format"
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12:
        return None, "invalid_format"
    if year < EARLIEST_GRADUATION_YEAR:
        return None, "too_early"
    if (year, month) > (today.year, today.month):
        return None, "in_future"
    return date(year, month, 1), None


class _Problems:
    """Collects problems by field path and reads typed values out of a JSON object."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, path: str, problem: str) -> None:
        self.fields.setdefault(path, problem)

    def string(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is None:
            self.add(path, "required")
            return None
        if not isinstance(value, str):
            self.add(path, "must_be_string")
            return None
        return value

    def unknown(self, obj: Mapping[Any, Any], known: Collection[str], prefix: str) -> None:
        for key in obj:
            if key not in known:
                self.add(f"{prefix}{key}", "unknown_field")


def _education(item: Any, path: str, today: date, problems: _Problems) -> Education | None:
    if not isinstance(item, dict):
        problems.add(path, "must_be_object")
        return None
    problems.unknown(item, _EDUCATION_FIELDS, f"{path}.")
    values: dict[str, Any] = {}
    for key in ("cert_no", "school", "major"):
        raw = problems.string(item, key, f"{path}.{key}")
        if raw is not None:
            values[key], problem = _check_text(raw, 1, EDUCATION_TEXT_MAX_CHARS)
            if problem:
                problems.add(f"{path}.{key}", problem)
    raw = problems.string(item, "graduated_on", f"{path}.graduated_on")
    if raw is not None:
        values["graduated_on"], problem = _check_year_month(raw, today)
        if problem:
            problems.add(f"{path}.graduated_on", problem)
    for key, choices in (("level", EDUCATION_LEVELS), ("mode", EDUCATION_MODES)):
        raw = problems.string(item, key, f"{path}.{key}")
        if raw is not None:
            if raw in choices:
                values[key] = raw
            else:
                problems.add(f"{path}.{key}", "invalid_choice")
    if all(values.get(key) is not None for key in _EDUCATION_FIELDS):
        return Education(**values)
    return None


def _educations(value: Any, today: date, problems: _Problems) -> tuple[Education, ...]:
    if value is None:
        problems.add("educations", "required")
        return ()
    if not isinstance(value, list):
        problems.add("educations", "must_be_list")
        return ()
    if not value:
        problems.add("educations", "required")
        return ()
    if len(value) > MAX_EDUCATIONS:
        problems.add("educations", "too_many")
        return ()
    result = [_education(item, f"educations.{i}", today, problems) for i, item in enumerate(value)]
    seen: set[str] = set()
    for i, edu in enumerate(result):
        if edu is not None:
            if edu.cert_no in seen:
                problems.add(f"educations.{i}.cert_no", "duplicate")
            seen.add(edu.cert_no)
    return tuple(e for e in result if e is not None)


def parse_registration(
    body: Any, *, today: date | None = None, ignore: Collection[str] = ("captcha",)
) -> Registration:
    """Validate and normalise a registration body; raise ``AccountInvalid`` listing every bad field.

    ``ignore`` names keys that may be present and are not ours (the captcha, consumed earlier);
    any other unknown key is refused. ``today`` (Asia/Shanghai) bounds birth and graduation dates.
    """
    if not isinstance(body, dict):
        raise AccountInvalid({"body": "must_be_object"})
    today = today or utcnow().astimezone(SHANGHAI).date()
    problems = _Problems()
    problems.unknown(body, (*_FIELDS, *ignore), "")
    out: dict[str, Any] = {}

    raw = problems.string(body, "username", "username")
    if raw is not None:
        username = normalise_username(raw)
        if USERNAME_RE.fullmatch(username):
            out["username"] = username
        else:
            problems.add("username", "invalid_format")

    raw = problems.string(body, "id_type", "id_type")
    if raw is not None:
        if raw in ID_TYPES:
            out["id_type"] = raw
        else:
            problems.add("id_type", "invalid_choice")

    raw = problems.string(body, "id_number", "id_number")
    if raw is not None and "id_type" in out:
        out["id_number"], problem = _check_id_number(raw, out["id_type"], today)
        if problem:
            problems.add("id_number", problem)

    raw = problems.string(body, "name", "name")
    if raw is not None:
        out["name"], problem = _check_name(raw, out.get("id_type"))
        if problem:
            problems.add("name", problem)

    raw = problems.string(body, "password", "password")
    if raw is not None:
        problem = check_policy(
            raw,
            username=out.get("username") or (body["username"] if isinstance(body.get("username"), str) else None),
            id_number=out.get("id_number") or (body["id_number"] if isinstance(body.get("id_number"), str) else None),
        )
        if problem:
            problems.add("password", problem)
        else:
            out["password"] = raw

    raw = problems.string(body, "phone", "phone")
    if raw is not None:
        phone = normalise_phone(raw)
        if PHONE_RE.fullmatch(phone):
            out["phone"] = phone
        else:
            problems.add("phone", "invalid_format")

    raw = problems.string(body, "email", "email")
    if raw is not None:
        out["email"], problem = _check_email(raw)
        if problem:
            problems.add("email", problem)

    raw = problems.string(body, "security_question", "security_question")
    if raw is not None:
        out["security_question"], problem = _check_text(raw, QUESTION_MIN_CHARS, QUESTION_MAX_CHARS)
        if problem:
            problems.add("security_question", problem)

    raw = problems.string(body, "security_answer", "security_answer")
    if raw is not None:
        answer, problem = _check_text(raw, 1, ANSWER_MAX_CHARS)
        if problem:
            problems.add("security_answer", problem)
        else:
            assert answer is not None
            out["security_answer"] = normalise_answer(answer)

    out["educations"] = _educations(body.get("educations"), today, problems)

    if problems.fields:
        raise AccountInvalid(problems.fields)
    return Registration(**out)
