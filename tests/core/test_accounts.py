"""The rules of an account's fields: each value judged and normalised, or refused with its code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from core import accounts
from core.accounts import FieldInvalid, normalise_id_number, normalise_name
from core.idcards import make_resident_id

pytestmark = pytest.mark.unit

TODAY = date(2026, 6, 15)
GOOD_ID = "11010119900307803X"  # valid, check digit X


def code(check: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The code ``check`` refuses its arguments with."""
    with pytest.raises(FieldInvalid) as info:
        check(*args, **kwargs)
    return info.value.code


# -- username -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["abcdef", "a_1_2_3", "Z" + "9" * 19, "wang_xiao_2026"])
def test_good_usernames(username: str) -> None:
    assert accounts.check_username(username) == username.lower()


@pytest.mark.parametrize(
    "username", ["abcde", "a" * 21, "1abcdef", "_abcdef", "abc-def", "abc def", "张三丰abc", "abcdéf", ""]
)
def test_bad_usernames(username: str) -> None:
    assert code(accounts.check_username, username) == "invalid_format"


# -- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("张三", "张三"),
        ("王晓[沛]", "王晓[沛]"),
        ("王[pei]", "王[pei]"),
        ("王晓［沛］", "王晓[沛]"),  # full-width brackets
        ("[䶮]明", "[䶮]明"),
        ("阿卜杜·热合曼", "阿卜杜·热合曼"),
        ("阿卜杜•热合曼", "阿卜杜·热合曼"),  # bullet typed for the middle dot
        ("阿卜杜・热合曼", "阿卜杜·热合曼"),  # katakana middle dot
        ("李〇", "李〇"),
        ("𠀾明", "𠀾明"),  # extension B
        ("䶮明", "䶮明"),  # extension A
        ("欧阳" + "娜" * 28, "欧阳" + "娜" * 28),  # 30
    ],
)
def test_good_chinese_names(name: str, stored: str) -> None:
    assert accounts.check_name(name, "resident_id") == stored


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("张", "too_short"),
        ("张" * 31, "too_long"),
        ("张 三", "invalid_characters"),
        ("张三1", "invalid_characters"),
        ("Zhang San", "invalid_characters"),  # latin only for passport holders
        ("·张三", "invalid_characters"),
        ("张三·", "invalid_characters"),
        ("张··三", "invalid_characters"),
        ("王晓[]", "invalid_characters"),
        ("王晓[沛", "invalid_characters"),
        ("王晓沛]", "invalid_characters"),
        ("王晓[p1]", "invalid_characters"),
        ("王晓[p i]", "invalid_characters"),
        ("王晓[[沛]]", "invalid_characters"),
        ("张三!", "invalid_characters"),
        ("   ", "required"),
    ],
)
def test_bad_chinese_names(name: str, problem: str) -> None:
    assert code(accounts.check_name, name, "resident_id") == problem


@pytest.mark.parametrize(
    ("name", "stored"),
    [("JOHN SMITH", "JOHN SMITH"), ("Jean-Luc  Picard", "Jean-Luc Picard"), ("O'NEIL", "O'NEIL"),
     ("JOHN A. SMITH", "JOHN A. SMITH"), ("José Núñez", "José Núñez"), ("玛丽·SMITH", None)],
)  # fmt: skip
def test_latin_names_for_passport_holders(name: str, stored: str | None) -> None:
    if stored is None:
        assert code(accounts.check_name, name, "passport") == "invalid_characters"
    else:
        assert accounts.check_name(name, "passport") == stored


def test_passport_holders_may_have_chinese_names() -> None:
    assert accounts.check_name("张三", "passport") == "张三"


def test_without_an_id_type_names_are_chinese() -> None:
    assert accounts.check_name("张三", None) == "张三"
    assert code(accounts.check_name, "JOHN SMITH", None) == "invalid_characters"


@pytest.mark.parametrize("name", ["J", "JOHN--SMITH", "JOHN 2", "Иван Петров", "-JOHN", "A" * 65])
def test_bad_latin_names(name: str) -> None:
    assert code(accounts.check_name, name, "passport") in ("too_short", "too_long", "invalid_characters")


# -- id numbers ---------------------------------------------------------------------------------------


def test_resident_ids() -> None:
    for born, seq in ((date(1990, 3, 7), 803), (date(2000, 2, 29), 12), (date(1950, 12, 31), 999)):
        number = make_resident_id("370112", born, seq)
        assert accounts.check_id_number(number, "resident_id", TODAY) == number
    # Full-width digits and a lower-case x are normalised.
    fullwidth = "１１０１０１１９９００３０７８０３ｘ"
    assert accounts.check_id_number(fullwidth, "resident_id", TODAY) == GOOD_ID


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("11010119900307803", "invalid_length"),
        ("11010119900307803X1", "invalid_length"),
        ("110101199003078031", "invalid_check_digit"),
        ("1101011990030780X3", "invalid_format"),
        ("11010119900307803Y", "invalid_format"),
        ("A1010119900307803X", "invalid_format"),
        (make_resident_id("990101", date(1990, 3, 7), 803), "invalid_region"),
        ("110101199002300010", "invalid_birth_date"),  # 30 February
        (make_resident_id("110101", date(1899, 12, 31), 1), "invalid_birth_date"),
        (make_resident_id("110101", date(2026, 6, 16), 1), "invalid_birth_date"),  # tomorrow
        ("", "required"),
    ],
)
def test_bad_resident_ids(number: str, problem: str) -> None:
    assert code(accounts.check_id_number, number, "resident_id", TODAY) == problem


@pytest.mark.parametrize(
    ("id_type", "number", "stored"),
    [
        ("passport", "E12345678", "E12345678"),
        ("passport", "g12345678", "G12345678"),
        ("passport", "P1234567", "P1234567"),
        ("passport", "AB12345678", "AB12345678"),
        ("military_officer", "南字第1234567号", "南字第1234567"),
        ("military_officer", "军字第123456", "军字第123456"),
        ("military_officer", "海后字第12345678号", "海后字第12345678"),
        ("military_officer", "ab123456", "AB123456"),
        ("military_officer", "123456789012", "123456789012"),
        ("hk_macau_permit", "H12345678", "H12345678"),
        ("hk_macau_permit", "m1234567890", "M1234567890"),
        ("taiwan_permit", "12345678", "12345678"),
        ("taiwan_permit", "A123456789", "A123456789"),
    ],
)
def test_other_id_types(id_type: str, number: str, stored: str) -> None:
    assert accounts.check_id_number(number, id_type) == stored


@pytest.mark.parametrize(
    ("id_type", "number"),
    [
        ("passport", "E1234567890"),
        ("passport", "ABC1234567"),
        ("passport", "123456789"),
        ("passport", "E123456"),
        ("military_officer", "南字第12345"),
        ("military_officer", "南京军区后字第1234567"),  # five characters before 字第
        ("military_officer", "字第1234567"),
        ("military_officer", "AB12"),
        ("military_officer", "AB-123456"),
        ("hk_macau_permit", "X12345678"),
        ("hk_macau_permit", "H123456789"),
        ("hk_macau_permit", "H1234567"),
        ("taiwan_permit", "1234567"),
        ("taiwan_permit", "123456789"),
        ("taiwan_permit", "A12345678-"),
        ("resident_id", "E12345678"),
    ],
)
def test_bad_other_ids(id_type: str, number: str) -> None:
    assert code(accounts.check_id_number, number, id_type, TODAY) in ("invalid_format", "invalid_length")


# -- password (policy) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1#", "too_short"),
        ("Ab1#" * 9, "too_long"),
        ("abcdefgh", "too_few_character_classes"),
        ("Ab1#zhangsan01", "contains_username"),
        ("Ab1#ZHANGSAN01", "contains_username"),
        ("a#" + GOOD_ID, "contains_id_number"),
        ("a#11010119900307803x", "contains_id_number"),
        ("Ab1#xy z9", "invalid_characters"),
    ],
)
def test_password_policy(password: str, problem: str) -> None:
    assert code(accounts.check_password, password, username="zhangsan01", id_number=GOOD_ID) == problem


def test_a_good_password_is_kept_as_typed() -> None:
    assert accounts.check_password("Qiu#2026pass", username="zhangsan01", id_number=GOOD_ID) == "Qiu#2026pass"


# -- phone, email, question, answer ---------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["13012345678", "19999999999", " 15800001111 ", "１３９１２３４５６７８"])
def test_good_phones(phone: str) -> None:
    stored = accounts.check_phone(phone)
    assert len(stored) == 11 and stored.isascii()


@pytest.mark.parametrize("phone", ["12012345678", "1391234567", "139123456789", "+8613912345678", "139-1234-5678"])
def test_bad_phones(phone: str) -> None:
    assert code(accounts.check_phone, phone) == "invalid_format"


@pytest.mark.parametrize(
    "email", ["a@b.cn", "first.last+tag@mail.example.com", "x_y@sub-domain.example.org", "u@xn--fiqs8s.xn--fiqs8s"]
)
def test_good_emails(email: str) -> None:
    assert accounts.check_email(email) == email


@pytest.mark.parametrize(
    "email",
    ["plain", "@example.com", "a@", "a@localhost", "a..b@example.com", ".a@example.com", "a@-example.com",
     "a@example..com", "a b@example.com", "a@example.c0m", "张三@example.com", "a@exa_mple.com",
     "a" * 65 + "@example.com"],
)  # fmt: skip
def test_bad_emails(email: str) -> None:
    assert code(accounts.check_email, email) == "invalid_format"


def test_email_length() -> None:
    long_domain = ".".join(["a" * 61] * 4) + ".com"  # 251 characters: the address has 258
    assert code(accounts.check_email, f"abcdef@{long_domain}") == "too_long"
    assert code(accounts.check_email, "  ") == "required"
    assert accounts.check_email(" ZhangSan@Example.COM ") == "ZhangSan@example.com"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("security_question", "我", "too_short"),
        ("security_question", "问" * 65, "too_long"),
        ("security_question", "问题\x00？", "invalid_characters"),
        ("security_answer", "答" * 65, "too_long"),
        ("security_answer", "   ", "required"),
        ("security_answer", "a\u200bb", "invalid_characters"),
    ],
)
def test_question_and_answer(field: str, value: str, problem: str) -> None:
    check = accounts.check_answer if field == "security_answer" else (
        lambda text: accounts.check_text(text, accounts.QUESTION_MIN_CHARS, accounts.QUESTION_MAX_CHARS))
    assert code(check, value) == problem


def test_answer_is_normalised_like_at_login() -> None:
    assert accounts.check_answer(" ＢｅiJing ") == "beijing"
    assert accounts.check_text("  Shi Yan  XiaoXue ", 1, 64) == "Shi Yan XiaoXue"


# -- graduation months, certificates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [("2012-6", "invalid_format"), ("2012-13", "invalid_format"), ("2012-00", "invalid_format"),
     ("2012-06-01", "invalid_format"), ("1950-12", "too_early"), ("2026-07", "in_future")],
)  # fmt: skip
def test_bad_graduation_months(value: str, problem: str) -> None:
    assert code(accounts.check_year_month, value, TODAY) == problem


def test_graduation_month_boundaries() -> None:
    assert accounts.check_year_month("1951-01", TODAY) == date(1951, 1, 1)
    assert accounts.check_year_month(" 2026-06 ", TODAY) == date(2026, 6, 1)


def test_default_today_is_shanghai_today() -> None:
    assert accounts.check_year_month("2012-06") == date(2012, 6, 1)
    assert accounts.shanghai_today() >= TODAY


def test_the_first_repeated_certificate() -> None:
    assert accounts.duplicate_at(["A", "B", "C"]) is None
    assert accounts.duplicate_at(["A", "B", "A", "B"]) == 2


# -- helpers shared with lookups --------------------------------------------------------------------------


def test_normalisers() -> None:
    assert normalise_name(" 阿卜杜・热合曼 ") == "阿卜杜·热合曼"
    assert normalise_name("JOHN   SMITH") == "JOHN SMITH"
    assert normalise_id_number(" 11010119900307803x") == GOOD_ID
    assert normalise_id_number("南字第1234567号") == "南字第1234567"
