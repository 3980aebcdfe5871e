"""A person named in an import row (a certificate's holder, an integrity record's subject): name and id number.

Files carry no document type, so an id number is judged by its shape: 17 digits and a digit or X
is a resident id and must pass GB 11643 (region, birth date, check digit); anything else must be
one of the other documents' formats (core/accounts.py). Both are stored as registration stores
them (core/identity.py), so a lookup by a candidate's own id number or name finds them.

``normalise_people`` is the first check of the kinds that use it: it rewrites ``import_rows`` in
place with the normalised values and reports the rows that are not a valid name or id number.
"""

from __future__ import annotations

from core.accounts import FieldInvalid, check_id_number, check_name, normalise_id_number, normalise_name
from core.db import Conn
from core.imports.base import ROWS_TABLE

__all__ = ["id_number_problem", "name_problem", "normalise_people"]

_OTHER_DOCUMENTS = ("passport", "hk_macau_permit", "taiwan_permit", "military_officer")
_RESIDENT_ID_PROBLEMS = {
    "invalid_length": "长度应为 18 位",
    "invalid_format": "格式有误",
    "invalid_region": "地区码无效",
    "invalid_birth_date": "出生日期无效",
    "invalid_check_digit": "校验码不符",
}
_NAME_PROBLEMS = {"too_short": "太短", "too_long": "太长", "invalid_characters": "含有不允许的字符",
                  "required": "为空"}


def _looks_resident(number: str) -> bool:
    return len(number) == 18 and number[:17].isascii() and number[:17].isdigit()


def id_number_problem(number: str) -> str | None:
    """Why a normalised id number is no valid identity document's number (Chinese), or None."""
    if _looks_resident(number):
        try:
            check_id_number(number, "resident_id")
        except FieldInvalid as exc:
            return f"身份证号 {number} {_RESIDENT_ID_PROBLEMS.get(exc.code, '无效')}"
        return None
    for kind in _OTHER_DOCUMENTS:
        try:
            check_id_number(number, kind)
        except FieldInvalid:
            continue
        return None
    return f"证件号码 {number} 格式有误（应为 18 位身份证号，或护照、港澳台通行证、军官证号码）"


def name_problem(name: str) -> str | None:
    """Why a normalised name is no person's name (Chinese), or None; Latin letters are allowed (passports)."""
    try:
        check_name(name, "passport")
    except FieldInvalid as exc:
        return f"姓名 {name} {_NAME_PROBLEMS.get(exc.code, '无效')}"
    return None


async def normalise_people(conn: Conn, *, name: str = "name", id_number: str = "id_number") -> list[tuple[int, str]]:
    """Normalise the name and id-number columns of ``import_rows`` in place; the rows where either is invalid."""
    rows = await conn.fetch(f"SELECT line, {name} AS name, {id_number} AS id_number FROM {ROWS_TABLE}")
    bad: list[tuple[int, str]] = []
    changed: list[tuple[int, str, str]] = []
    for row in rows:
        person, number = normalise_name(row["name"]), normalise_id_number(row["id_number"])
        for problem in (name_problem(person), id_number_problem(number)):
            if problem is not None:
                bad.append((row["line"], problem))
        if (person, number) != (row["name"], row["id_number"]):
            changed.append((row["line"], person, number))
    if changed:
        await conn.execute(
            f"""UPDATE {ROWS_TABLE} r SET {name} = c.name, {id_number} = c.id_number
                  FROM unnest($1::integer[], $2::text[], $3::text[]) AS c (line, name, id_number)
                 WHERE r.line = c.line""",
            [c[0] for c in changed], [c[1] for c in changed], [c[2] for c in changed])
    return bad
