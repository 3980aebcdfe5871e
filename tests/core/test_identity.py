"""The one normalisation per kind of identity.

Every spelling of one identity gives one form, and that form is a fixed point.
"""

from __future__ import annotations

import pytest

from core.accounts import check_id_number, check_phone, check_username
from core.identity import normalise_id_number, normalise_name, normalise_phone, normalise_username
from tests.core.test_accounts import TODAY

pytestmark = pytest.mark.unit


def full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@pytest.mark.parametrize(("normalise", "canonical", "spellings"), [
    (normalise_id_number, "11010119900307803X",
     ["11010119900307803x", " 11010119900307803X\t", full_width("11010119900307803x"),
      "\u3000" + full_width("1101011990") + "0307803X "]),
    (normalise_id_number, "南字第1234567", ["南字第1234567号", " 南字第１２３４５６７ 号 ", "南字第1234567号号"]),
    (normalise_username, "zhangsan01", ["ZhangSan01", " zhangsan01 ", full_width("ZHANGSAN01"), "\u3000zhangsan01"]),
    (normalise_phone, "13912345678", [" 13912345678", full_width("13912345678"), "13912345678\u3000"]),
    (normalise_name, "阿卜杜·热合曼", [" 阿卜杜・热合曼 ", "阿卜杜•热合曼", "阿卜杜·热合曼\u3000"]),
    (normalise_name, "JOHN SMITH", ["JOHN   SMITH", " JOHN\tSMITH "]),
])
def test_every_spelling_gives_the_one_form(normalise, canonical: str, spellings: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert normalise(canonical) == canonical
    for spelling in spellings:
        assert normalise(spelling) == canonical, spelling
        assert normalise(normalise(spelling)) == canonical, spelling


def test_registration_stores_the_one_form() -> None:
    stored = (check_username(full_width("ZhangSan01")),
              check_id_number(full_width("11010119900307803x"), "resident_id", TODAY),
              check_phone(full_width("13912345678")))
    assert stored == ("zhangsan01", "11010119900307803X", "13912345678")
