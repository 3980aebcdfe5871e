"""The registration body (``AccountForm``): shape codes, each rule's code under its field, every problem at once."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from core.accounts import Education, Registration, shanghai_today
from gateway.models import fields_of
from gateway.routes.accounts import AccountForm

pytestmark = pytest.mark.unit

GOOD_ID = "11010119900307803X"  # valid, check digit X
TODAY = shanghai_today()
NEXT_MONTH = f"{TODAY.year + TODAY.month // 12}-{TODAY.month % 12 + 1:02d}"
THIS_MONTH = f"{TODAY.year}-{TODAY.month:02d}"


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
    if "confirmation" not in changes:  # typed again as given (a value that is not text: left to its field)
        b["confirmation"] = {"name": _text_or(b.get("name"), "张三"),
                             "id_number": _text_or(b.get("id_number"), GOOD_ID)}
    b.setdefault("sms_code", "123456")
    return b


def _text_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) and len(value) <= 32 else default


def edu(**changes: Any) -> dict[str, Any]:
    e = dict(body()["educations"][0])
    e.update(changes)
    return e


def parse(b: Any) -> Registration:
    return AccountForm.model_validate_json(orjson.dumps(b)).registration()


def problems(b: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse(b)
    return fields_of(info.value, AccountForm.field_codes)


def problem(field: str, **changes: Any) -> str:
    """The problem reported for ``field`` when the body has ``changes`` (and only that field is bad)."""
    fields = problems(body(**changes))
    assert list(fields) == [field], fields
    return fields[field]


def test_valid_body_is_normalised() -> None:
    reg = parse(
        body(username="  ZhangSan01 ", id_number=" 11010119900307803x ", name=" 张三 ",
             email="ZhangSan@Example.COM", security_answer="  Shi Yan  XiaoXue ",
             educations=[edu(), edu(cert_no="A2", graduated_on="2016-07", level="master", mode="part_time")]),
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


def test_every_bad_field_is_reported() -> None:
    fields = problems(
        {"username": "1abc", "password": "short", "name": "Zhang3", "id_type": "resident_id",
         "id_number": "110101199003078031", "phone": "12345", "email": "no-at", "security_question": "?",
         "security_answer": "", "educations": [edu(level="phd", graduated_on=NEXT_MONTH), "x"], "extra": 1,
         "confirmation": {"name": "张三", "id_number": GOOD_ID}, "sms_code": "123456"}
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


def test_the_confirmation_must_match_the_fields_as_stored() -> None:
    # Typed again with other spacing or case: the same once normalised.
    assert parse(body(confirmation={"name": " 张三 ", "id_number": GOOD_ID.lower()})).id_number == GOOD_ID
    assert problems(body(confirmation={"name": "张四", "id_number": "110101199003078030"})) == {
        "confirmation.name": "mismatch", "confirmation.id_number": "mismatch"}
    # A field that is itself wrong is reported there, not again as a mismatch.
    assert problems(body(name="Zhang3", confirmation={"name": "张三", "id_number": GOOD_ID})) == {
        "name": "invalid_characters"}


def test_degrees_are_optional_and_checked() -> None:
    degree = {"cert_no": "1000142012001234", "school": "北京大学", "obtained_on": "2012-07", "major": "经济学",
              "level": "bachelor", "kind": "academic"}
    made = parse(body(degrees=[degree]))
    assert [(d.level, d.kind, d.obtained_on) for d in made.degrees] == [("bachelor", "academic", date(2012, 7, 1))]
    assert parse(body()).degrees == ()
    assert problems(body(degrees=[degree, {**degree, "level": "college", "kind": "x"}])) == {
        "degrees.1.level": "invalid_choice", "degrees.1.kind": "invalid_choice"}
    assert problems(body(degrees=[degree, degree])) == {"degrees.1.cert_no": "duplicate"}


def test_missing_fields_are_required() -> None:
    fields = ("username", "id_type", "id_number", "name", "password", "phone", "email",
              "security_question", "security_answer", "educations", "confirmation", "sms_code")
    assert problems({}) == dict.fromkeys(fields, "required")


@pytest.mark.parametrize("value", [1, 2.5, True, False, ["a"], {"a": 1}])
@pytest.mark.parametrize(
    "field",
    ["username", "password", "name", "id_type", "id_number", "phone", "email", "security_question", "security_answer"],
)
def test_wrong_types(field: str, value: Any) -> None:
    assert problems(body(**{field: value}))[field] == "must_be_string"


@pytest.mark.parametrize("field", ["username", "name", "phone", "password", "id_type", "educations"])
def test_null_is_required(field: str) -> None:
    assert problem(field, **{field: None}) == "required"


def test_unknown_fields_are_refused_but_captcha_is_optional() -> None:
    assert problem("is_admin", is_admin=True) == "unknown_field"
    assert parse(body(captcha=...)).username == "zhangsan01"


def test_unknown_id_type() -> None:
    fields = problems(body(id_type="driving_licence"))
    assert fields == {"id_type": "invalid_choice"}  # the number cannot be judged without its type


def test_the_id_type_decides_the_number_and_the_name() -> None:
    reg = parse(body(id_type="passport", id_number="g12345678", name="Jean-Luc  Picard"))
    assert (reg.id_number, reg.name) == ("G12345678", "Jean-Luc Picard")
    assert problem("id_number", id_type="passport") == "invalid_format"
    assert problem("name", name="JOHN SMITH") == "invalid_characters"  # latin only for passport holders


@pytest.mark.parametrize(("changes", "code"), [
    ({"password": "Ab1#" * 9}, "too_long"),
    ({"password": "abcdefgh"}, "too_few_character_classes"),
    ({"password": "Ab1#ZHANGSAN01"}, "contains_username"),
    ({"username": " ZhangSan01 ", "password": "Ab1#zhangsan01"}, "contains_username"),  # as stored
    ({"password": "a#11010119900307803x"}, "contains_id_number"),
    ({"id_number": " 11010119900307803x", "password": "a#" + GOOD_ID}, "contains_id_number"),
])  # fmt: skip
def test_password_policy_against_the_stored_username_and_id_number(changes: dict[str, Any], code: str) -> None:
    assert problem("password", **changes) == code


def test_a_bad_username_is_reported_alone() -> None:
    # The password is judged against the username as stored; a username that fails is not stored.
    assert problems(body(username="1zhangsan", password="Ab#1zhangsan")) == {"username": "invalid_format"}


def test_answer_is_normalised_like_at_login() -> None:
    assert parse(body(security_answer=" ＢｅiJing ")).security_answer == "beijing"


# -- educations ---------------------------------------------------------------------------------------


def test_ten_educations_allowed_eleven_not() -> None:
    ten = [edu(cert_no=f"C{i}") for i in range(10)]
    assert len(parse(body(educations=ten)).educations) == 10
    assert problem("educations", educations=[*ten, edu(cert_no="C10")]) == "too_many"


@pytest.mark.parametrize(("value", "code"), [
    ([], "required"), (None, "required"), (..., "required"), ({}, "must_be_list"), ("x", "must_be_list"),
    (3, "must_be_list"),
])  # fmt: skip
def test_educations_shape(value: Any, code: str) -> None:
    assert problem("educations", educations=value) == code


@pytest.mark.parametrize("level", ["doctorate", "master", "bachelor", "college", "secondary"])
@pytest.mark.parametrize("mode", ["full_time", "part_time", "self_study", "online"])
def test_every_level_and_mode(level: str, mode: str) -> None:
    (e,) = parse(body(educations=[edu(level=level, mode=mode)])).educations
    assert (e.level, e.mode) == (level, mode)


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"level": "phd"}, "level", "invalid_choice"),
        ({"level": "Bachelor"}, "level", "invalid_choice"),
        ({"mode": "evening"}, "mode", "invalid_choice"),
        ({"graduated_on": "2012-6"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "2012-13"}, "graduated_on", "invalid_format"),
        ({"graduated_on": "1950-12"}, "graduated_on", "too_early"),
        ({"graduated_on": NEXT_MONTH}, "graduated_on", "in_future"),
        ({"graduated_on": None}, "graduated_on", "required"),
        ({"cert_no": ""}, "cert_no", "required"),
        ({"cert_no": "1" * 65}, "cert_no", "too_long"),
        ({"school": "  "}, "school", "required"),
        ({"major": None}, "major", "required"),
        ({"major": 5}, "major", "must_be_string"),
        ({"level": ["bachelor"]}, "level", "must_be_string"),
        ({"level": None}, "level", "required"),
        ({"graduated_on": 201206}, "graduated_on", "must_be_string"),
        ({"gpa": "3.9"}, "gpa", "unknown_field"),
    ],
)
def test_bad_education_fields(changes: dict[str, Any], field: str, code: str) -> None:
    assert problem(f"educations.0.{field}", educations=[edu(**changes)]) == code


def test_education_boundaries() -> None:
    (first,) = parse(body(educations=[edu(graduated_on="1951-01")])).educations
    (this_month,) = parse(body(educations=[edu(graduated_on=THIS_MONTH)])).educations
    assert (first.graduated_on, this_month.graduated_on) == (date(1951, 1, 1), TODAY.replace(day=1))


def test_education_paths_are_indexed_and_missing_keys_required() -> None:
    fields = problems(body(educations=[edu(), {"cert_no": "X"}]))
    assert fields == {
        "educations.1.school": "required",
        "educations.1.graduated_on": "required",
        "educations.1.major": "required",
        "educations.1.level": "required",
        "educations.1.mode": "required",
    }


def test_a_repeated_certificate_is_a_duplicate_of_the_later_record() -> None:
    fields = problems(body(educations=[edu(), edu(cert_no="A2"), edu(cert_no=" 10001120120600123 ")]))
    assert fields == {"educations.2.cert_no": "duplicate"}


def test_the_document_states_the_shape() -> None:
    schema = AccountForm.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"username", "password", "name", "id_type", "id_number", "phone", "email",
                                       "security_question", "security_answer", "educations", "confirmation",
                                       "sms_code"}
    assert schema["properties"]["educations"]["minItems"] == 1
    assert schema["properties"]["educations"]["maxItems"] == 10
    assert schema["$defs"]["EducationRecord"]["properties"]["graduated_on"]["type"] == "string"
