"""The registration form's verification code and signed link, and the printed form built from stored facts."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from core.catalogue import Exam, ReviewPoint, Subject
from lookups import forms

pytestmark = pytest.mark.unit

KEY = b"k" * 32


def test_a_code_names_its_registration_and_version() -> None:
    code = forms.form_code(KEY, 10234, 3)

    assert code.startswith("10234-3-") and len(code) == len("10234-3-") + 8
    assert forms.parse_code(KEY, code) == (10234, 3)
    assert forms.form_code(KEY, 10234, 3) == code
    assert forms.form_code(KEY, 10234, 4) != code and forms.form_code(b"x" * 32, 10234, 3) != code


def test_a_code_is_read_forgivingly() -> None:
    code = forms.form_code(KEY, 77, 12)
    mac = code.rsplit("-", 1)[1]
    typed = [code.lower(), f" {code[:4]} {code[4:]} ", code.replace("0", "O").replace("1", "I") if "0" in mac
             or "1" in mac else code]
    for variant in typed:
        assert forms.parse_code(KEY, variant) == (77, 12), variant


@pytest.mark.parametrize("bad", ["", "77-12", "77-12-ABCDEFG", "077-12-ABCDEFGH", "77-0-ABCDEFGH", "x" * 41,
                                 "77-12-ABCDEFGH-1", "七七-12-ABCDEFGH"])
def test_malformed_codes_are_not_found(bad: str) -> None:
    assert forms.parse_code(KEY, bad) is None


def test_a_forged_or_altered_code_is_not_found() -> None:
    code = forms.form_code(KEY, 77, 12)
    registration, version, mac = code.split("-")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (f"{registration}-{version}-{flipped}", f"78-{version}-{mac}", f"{registration}-13-{mac}"):
        assert forms.parse_code(KEY, forged) is None
    assert forms.parse_code(b"x" * 32, code) is None


def test_links_lapse_and_name_one_registration() -> None:
    now = time.time()
    link = forms.sign_form_link(KEY, 55, ttl_s=600, now=now)
    path, query = link.split("?")
    assert path == "/api/v1/registrations/55/form.pdf"
    exp, sig = (part.split("=", 1)[1] for part in query.split("&"))
    assert forms.verify_form_link(KEY, 55, exp, sig, now=now) == int(exp)

    for registration, e, s, at in ((56, exp, sig, now), (55, str(int(exp) + 1), sig, now),
                                   (55, exp, "A" * 43, now), (55, exp, sig[:-1], now), (55, "", sig, now),
                                   (55, exp, sig, now + 601)):
        with pytest.raises(forms.FormLinkInvalid):
            forms.verify_form_link(KEY, registration, e, s, now=at)


def _exam() -> Exam:
    at = datetime(2026, 10, 1, 1, 0, tzinfo=UTC)
    return Exam(7, "E-2026", "2026年度经济师考试", at, at, at, at, at, at, 5600,
                levels=[{"code": "mid", "name": "中级",
                         "specialties": [{"code": "fin", "name": "金融", "subjects": []}]}],
                subjects={"101": Subject("101", "经济基础知识", at, at + timedelta(hours=2), 60, 100)},
                review_points={3: ReviewPoint(3, "11", "北京市", "海淀区审核点", "中关村大街1号")})


def _facts(**changes: Any) -> forms.FormFacts:
    facts = forms.FormFacts(
        registration_id=55, candidate_id=9, exam_id=7, status="approved", version=4, province="11", city="北京市",
        level="mid", specialty="fin", subjects=("101", "999"), work_years=6, review_point_id=3,
        confirmed_at=datetime(2026, 3, 1, 2, 0, tzinfo=UTC), name="李雷", id_type="resident_id",
        id_number="11010519900307123X", phone="13912345678",
        educations=({"level": "bachelor", "school": "北京大学", "major": "经济学", "graduated_on": "2012-06-30",
                     "mode": "self_study", "cert_no": "C1"},),
        commitment={"version": 2, "signed_at": "2026-03-01T01:59:00+00:00", "title": "告知承诺书（2026版）"},
        commitment_route=True, photo_id=1, photo_sha256="a" * 64, photo_status="approved")
    return replace(facts, **changes)


def test_the_printed_form_names_what_the_codes_mean() -> None:
    doc = forms.form_doc(_facts(), _exam(), "55-4-ABCDEFGH")

    assert (doc.exam_name, doc.status, doc.code) == ("2026年度经济师考试", "审核通过", "55-4-ABCDEFGH")
    assert (doc.id_type, doc.id_number, doc.province) == ("居民身份证", "11010519900307123X", "北京市")
    assert (doc.level, doc.specialty, doc.subjects) == ("中级", "金融", ("101 经济基础知识", "999"))
    assert doc.review_point == "海淀区审核点（中关村大街1号）" and doc.archive_no is None
    [education] = doc.educations
    assert (education.level, education.mode, education.graduated_on) == ("本科", "自学考试", date(2012, 6, 30))
    assert doc.commitment is not None and doc.commitment.title == "告知承诺书（2026版）"
    assert doc.commitment.signed_at == datetime(2026, 3, 1, 1, 59, tzinfo=UTC) and doc.photo is None

    bare = forms.form_doc(_facts(commitment=None, review_point_id=None, educations=()), _exam(), "c")
    assert bare.commitment is None and bare.review_point is None and bare.educations == ()


def test_which_registrations_have_a_form() -> None:
    assert forms.AVAILABLE == {"under_review", "onsite_review", "approved", "paid"}
    assert _facts().printable_photo
    assert not _facts(photo_status="rejected").printable_photo
    assert not _facts(photo_id=None, photo_sha256=None, photo_status=None).printable_photo
