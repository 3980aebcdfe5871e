"""Registration body validation: every field, every id type, names, educations, extra fields, wrong types."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from core.accounts import (
    AccountInvalid,
    Education,
    Registration,
    normalise_id_number,
    normalise_name,
    parse_registration,
)
from core.idcards import make_resident_id

pytestmark = pytest.mark.unit

TODAY = date(2026, 6, 15)
GOOD_ID = "11010119900307803X"  # valid, check digit X


def body(**changes: Any) -> dict[str, Any]:
    """A valid registration body with some fields changed (a value of ... removes the field)."""
    b: dict[str, Any] = {
        "username": "zhangsan01",
        "password": "Qiu#2026pass",
        "name": "张三",
        "id_type": "resident_id",
        "id_number": GOOD_ID,
        "phone": "13912345678",
        "email": "zhangsan@example.com",
        "security_question": "我的小学校名？",
        "security_answer": "实验小学",
        "educations": [
            {"cert_no": "10001120120600123", "school": "北京大学", "graduated_on": "2012-06",
             "major": "经济学", "level": "bachelor", "mode": "full_time"},
        ],
        "captcha": {"kind": "pow", "payload": "x"},
    }  # fmt: skip
    for key, value in changes.items():
        if value is ...:
            b.pop(key, None)
        else:
            b[key] = value
    return b


def edu(**changes: Any) -> dict[str, Any]:
    e = dict(body()["educations"][0])
    e.update(changes)
    return e


def problems(b: Any) -> dict[str, str]:
    with pytest.raises(AccountInvalid) as info:
        parse_registration(b, today=TODAY)
    return info.value.fields


def problem(field: str, **changes: Any) -> str:
    """The problem reported for ``field`` when the body has ``changes`` (and only that field is bad)."""
    fields = problems(body(**changes))
    assert list(fields) == [field], fields
    return fields[field]


def test_valid_body_is_normalised() -> None:
    reg = parse_registration(
        body(username="  ZhangSan01 ", id_number=" 11010119900307803x ", name=" 张三 ",
             email="ZhangSan@Example.COM", security_answer="  Shi Yan  XiaoXue ",
             educations=[edu(), edu(cert_no="A2", graduated_on="2016-07", level="master", mode="part_time")]),
        today=TODAY,
    )  # fmt: skip
    assert reg == Registration(
        username="zhangsan01",
        password="Qiu#2026pass",
        name="张三",
        id_type="resident_id",
        id_number=GOOD_ID,
        phone="13912345678",
        email="ZhangSan@example.com",
        security_question="我的小学校名？",
        security_answer="shi yan xiaoxue",
        educations=(
            Education("10001120120600123", "北京大学", date(2012, 6, 1), "经济学", "bachelor", "full_time"),
            Education("A2", "北京大学", date(2016, 7, 1), "经济学", "master", "part_time"),
        ),
    )
    assert "Qiu#2026pass" not in repr(reg) and "shi yan" not in repr(reg)


def test_registration_is_frozen() -> None:
    reg = parse_registration(body(), today=TODAY)
    with pytest.raises(AttributeError):
        reg.username = "other"  # type: ignore[misc]


def test_every_bad_field_is_reported() -> None:
    fields = problems(
        {"username": "1abc", "password": "short", "name": "Zhang3", "id_type": "resident_id",
         "id_number": "110101199003078031", "phone": "12345", "email": "no-at", "security_question": "?",
         "security_answer": "", "educations": [edu(level="phd", graduated_on="2030-01"), "x"], "extra": 1}
    )  # fmt: skip
    assert fields == {
        "extra": "unknown_field",
        "username": "invalid_format",
        "id_number": "invalid_check_digit",
        "name": "invalid_characters",
        "password": "too_short",
        "phone": "invalid_format",
        "email": "invalid_format",
        "security_question": "too_short",
        "security_answer": "required",
        "educations.0.graduated_on": "in_future",
        "educations.0.level": "invalid_choice",
        "educations.1": "must_be_object",
    }


def test_missing_fields_are_required() -> None:
    fields = ("username", "id_type", "id_number", "name", "password", "phone", "email",
              "security_question", "security_answer", "educations")
    assert problems({}) == dict.fromkeys(fields, "required")


@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], [{}], "text", b"bytes"])
def test_body_not_an_object(value: Any) -> None:
    assert problems(value) == {"body": "must_be_object"}


@pytest.mark.parametrize("value", [1, 2.5, True, False, ["a"], {"a": 1}])
@pytest.mark.parametrize(
    "field",
    ["username", "password", "name", "id_type", "id_number", "phone", "email", "security_question", "security_answer"],
)
def test_wrong_types(field: str, value: Any) -> None:
    assert problems(body(**{field: value}))[field] == "must_be_string"


@pytest.mark.parametrize("field", ["username", "name", "phone"])
def test_null_is_required(field: str) -> None:
    assert problem(field, **{field: None}) == "required"


def test_unknown_fields_are_refused_but_captcha_is_ignored() -> None:
    assert problem("is_admin", is_admin=True) == "unknown_field"
    parse_registration(body(captcha=...), today=TODAY)
    with pytest.raises(AccountInvalid) as info:
        parse_registration(body(), today=TODAY, ignore=())
    assert info.value.fields == {"captcha": "unknown_field"}


# -- username -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["abcdef", "a_1_2_3", "Z" + "9" * 19, "wang_xiao_2026"])
def test_good_usernames(username: str) -> None:
    reg = parse_registration(body(username=username), today=TODAY)
    assert reg.username == username.lower()


@pytest.mark.parametrize(
    "username", ["abcde", "a" * 21, "1abcdef", "_abcdef", "abc-def", "abc def", "张三丰abc", "abcdéf", ""]
)
def test_bad_usernames(username: str) -> None:
    assert problem("username", username=username) in ("invalid_format", "required")


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
    assert parse_registration(body(name=name), today=TODAY).name == stored


@pytest.mark.parametrize(
    ("name", "code"),
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
def test_bad_chinese_names(name: str, code: str) -> None:
    assert problem("name", name=name) == code


@pytest.mark.parametrize(
    ("name", "stored"),
    [("JOHN SMITH", "JOHN SMITH"), ("Jean-Luc  Picard", "Jean-Luc Picard"), ("O'NEIL", "O'NEIL"),
     ("JOHN A. SMITH", "JOHN A. SMITH"), ("José Núñez", "José Núñez"), ("玛丽·SMITH", None)],
)  # fmt: skip
def test_latin_names_for_passport_holders(name: str, stored: str | None) -> None:
    changes = {"id_type": "passport", "id_number": "E12345678", "name": name}
    if stored is None:
        assert problem("name", **changes) == "invalid_characters"
    else:
        assert parse_registration(body(**changes), today=TODAY).name == stored


def test_passport_holders_may_have_chinese_names() -> None:
    assert parse_registration(body(id_type="passport", id_number="G12345678"), today=TODAY).name == "张三"


@pytest.mark.parametrize("name", ["J", "JOHN--SMITH", "JOHN 2", "Иван Петров", "-JOHN", "A" * 65])
def test_bad_latin_names(name: str) -> None:
    assert problem("name", id_type="passport", id_number="E12345678", name=name) in ("too_short", "too_long",
                                                                                    "invalid_characters")


# -- id numbers ---------------------------------------------------------------------------------------


def test_resident_ids() -> None:
    for born, seq in ((date(1990, 3, 7), 803), (date(2000, 2, 29), 12), (date(1950, 12, 31), 999)):
        number = make_resident_id("370112", born, seq)
        assert parse_registration(body(id_number=number), today=TODAY).id_number == number
    # Full-width digits and a lower-case x are normalised.
    fullwidth = "１１０１０１１９９００３０７８０３ｘ"
    assert parse_registration(body(id_number=fullwidth), today=TODAY).id_number == GOOD_ID


@pytest.mark.parametrize(
    ("number", "code"),
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
def test_bad_resident_ids(number: str, code: str) -> None:
    assert problem("id_number", id_number=number) == code


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
    reg = parse_registration(body(id_type=id_type, id_number=number), today=TODAY)
    assert (reg.id_type, reg.id_number) == (id_type, stored)


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
    assert problem("id_number", id_type=id_type, id_number=number) in ("invalid_format", "invalid_length")


def test_unknown_id_type() -> None:
    fields = problems(body(id_type="driving_licence"))
    assert fields == {"id_type": "invalid_choice"}  # the number cannot be judged without its type


# -- password (policy) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "code"),
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
def test_password_policy_in_registration(password: str, code: str) -> None:
    assert problem("password", password=password) == code


def test_password_is_checked_against_the_raw_username_when_the_username_is_bad() -> None:
    fields = problems(body(username="1zhangsan", password="Ab#1zhangsan"))
    assert fields == {"username": "invalid_format", "password": "contains_username"}


# -- phone, email, question, answer ---------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["13012345678", "19999999999", " 15800001111 ", "１３９１２３４５６７８"])
def test_good_phones(phone: str) -> None:
    reg = parse_registration(body(phone=phone), today=TODAY)
    assert len(reg.phone) == 11 and reg.phone.isascii()


@pytest.mark.parametrize("phone", ["12012345678", "1391234567", "139123456789", "+8613912345678", "139-1234-5678"])
def test_bad_phones(phone: str) -> None:
    assert problem("phone", phone=phone) == "invalid_format"


@pytest.mark.parametrize(
    "email", ["a@b.cn", "first.last+tag@mail.example.com", "x_y@sub-domain.example.org", "u@xn--fiqs8s.xn--fiqs8s"]
)
def test_good_emails(email: str) -> None:
    assert parse_registration(body(email=email), today=TODAY).email == email


@pytest.mark.parametrize(
    "email",
    ["plain", "@example.com", "a@", "a@localhost", "a..b@example.com", ".a@example.com", "a@-example.com",
     "a@example..com", "a b@example.com", "a@example.c0m", "张三@example.com", "a@exa_mple.com",
     "a" * 65 + "@example.com"],
)  # fmt: skip
def test_bad_emails(email: str) -> None:
    assert problem("email", email=email) == "invalid_format"


def test_email_length() -> None:
    long_domain = ".".join(["a" * 61] * 4) + ".com"  # 251 characters: the address has 258
    assert problem("email", email=f"abcdef@{long_domain}") == "too_long"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("security_question", "我", "too_short"),
        ("security_question", "问" * 65, "too_long"),
        ("security_question", "问题\x00？", "invalid_characters"),
        ("security_answer", "答" * 65, "too_long"),
        ("security_answer", "   ", "required"),
        ("security_answer", "a\u200bb", "invalid_characters"),
    ],
)
def test_question_and_answer(field: str, value: str, code: str) -> None:
    assert problem(field, **{field: value}) == code


def test_answer_is_normalised_like_at_login() -> None:
    reg = parse_registration(body(security_answer=" ＢｅiJing "), today=TODAY)
    assert reg.security_answer == "beijing"


# -- educations ---------------------------------------------------------------------------------------


def test_ten_educations_allowed_eleven_not() -> None:
    ten = [edu(cert_no=f"C{i}") for i in range(10)]
    assert len(parse_registration(body(educations=ten), today=TODAY).educations) == 10
    assert problem("educations", educations=[*ten, edu(cert_no="C10")]) == "too_many"


@pytest.mark.parametrize(("value", "code"), [([], "required"), (None, "required"), (..., "required"),
                                             ({}, "must_be_list"), ("x", "must_be_list"), (3, "must_be_list")])  # fmt: skip
def test_educations_shape(value: Any, code: str) -> None:
    assert problem("educations", educations=value) == code


@pytest.mark.parametrize("level", ["doctorate", "master", "bachelor", "college", "secondary"])
@pytest.mark.parametrize("mode", ["full_time", "part_time", "self_study", "online"])
def test_every_level_and_mode(level: str, mode: str) -> None:
    (e,) = parse_registration(body(educations=[edu(level=level, mode=mode)]), today=TODAY).educations
    assert (e.level, e.mode) == (level, mode)


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"level": "phd"}, "level", "invalid_choice"),
        ({"level": "Bachelor"}, "level", "invalid_choice"),
        ({"mode": "evening"}, "mode", "invalid_choice"),
        ({"graduated_on": "2012-6"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "2012-13"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "2012-00"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "2012-06-01"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "1950-12"}, "graduated_on", "too_early"),
        ({"graduated_on": "2026-07"}, "graduated_on", "in_future"),
        ({"cert_no": ""}, "cert_no", "required"),
        ({"cert_no": "1" * 65}, "cert_no", "too_long"),
        ({"school": "  "}, "school", "required"),
        ({"major": None}, "major", "required"),
        ({"major": 5}, "major", "must_be_string"),
        ({"level": ["bachelor"]}, "level", "must_be_string"),
        ({"graduated_on": 201206}, "graduated_on", "must_be_string"),
        ({"gpa": "3.9"}, "gpa", "unknown_field"),
    ],
)
def test_bad_education_fields(changes: dict[str, Any], field: str, code: str) -> None:
    assert problem(f"educations.0.{field}", educations=[edu(**changes)]) == code


def test_education_boundaries() -> None:
    (first,) = parse_registration(body(educations=[edu(graduated_on="1951-01")]), today=TODAY).educations
    (this_month,) = parse_registration(body(educations=[edu(graduated_on="2026-06")]), today=TODAY).educations
    assert (first.graduated_on, this_month.graduated_on) == (date(1951, 1, 1), date(2026, 6, 1))


def test_education_paths_are_indexed_and_missing_keys_required() -> None:
    fields = problems(body(educations=[edu(), {"cert_no": "X"}, edu(cert_no="10001120120600123")]))
    assert fields == {
        "educations.1.school": "required",
        "educations.1.graduated_on": "required",
        "educations.1.major": "required",
        "educations.1.level": "required",
        "educations.1.mode": "required",
        "educations.2.cert_no": "duplicate",
    }


# -- helpers shared with lookups --------------------------------------------------------------------------


def test_normalisers() -> None:
    assert normalise_name(" 阿卜杜・热合曼 ") == "阿卜杜·热合曼"
    assert normalise_name("JOHN   SMITH") == "JOHN SMITH"
    assert normalise_id_number(" 11010119900307803x") == GOOD_ID
    assert normalise_id_number("南字第1234567号") == "南字第1234567"


def test_default_today_is_used() -> None:
    reg = parse_registration(body())
    assert reg.educations[0].graduated_on == date(2012, 6, 1)
