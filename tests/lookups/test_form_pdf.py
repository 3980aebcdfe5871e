"""The registration form PDF: every declared fact read back as Chinese text, the photo embedded as stored, one page."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from lookups.form_pdf import FormCommitment, FormDegree, FormDoc, FormEducation, render_form
from lookups.pdf import content_key
from tests.lookups.test_pdf import embedded_images, normalised_photo, pdftotext

BJ = timezone(timedelta(hours=8))
FORM = FormDoc(
    exam_name="2026年度全国经济专业技术资格考试",
    registration_id=10234,
    status="审核通过",
    code="10234-3-7KQ2M9XA",
    name="欧阳娜娜",
    id_type="居民身份证",
    id_number="11010519900307123X",
    phone="13912345678",
    archive_no=None,
    level="中级",
    specialty="金融",
    subjects=("101 经济基础知识", "102 金融专业知识和实务"),
    province="北京市",
    city="海淀区",
    review_point="海淀区人事考试中心（中关村大街123号）",
    work_years=5,
    educations=(FormEducation("本科", "北京大学", "经济学", date(2012, 6, 30), "全日制", "10001120120600123"),
                FormEducation("硕士研究生", "中国人民大学", "金融学", date(2015, 6, 30), "非全日制",
                              "10002120150600456")),
    commitment=FormCommitment("告知承诺书", 1, datetime(2026, 3, 1, 2, 5, tzinfo=UTC)),
    confirmed_at=datetime(2026, 3, 1, 10, 7, tzinfo=BJ),
)


def test_everything_declared_is_printed(font_path: str, tmp_path: Path) -> None:
    photo = normalised_photo()
    data = render_form(replace(FORM, photo=photo.jpeg), font_path=font_path)

    assert data.startswith(b"%PDF-")
    text = pdftotext(data, tmp_path)
    assert text.count("\f") == 1  # one page
    for expected in ("报名表", FORM.exam_name, "报名序号：10234", "验证码：10234-3-7KQ2M9XA", "欧阳娜娜", "居民身份证",
                     "11010519900307123X",  # in full: the candidate's own document, checked against the card
                     "13912345678", "档案号", "新考生", "报名状态", "审核通过", "信息确认时间", "2026年3月1日 10:07",
                     "报考级别", "中级", "报考专业", "金融", "101 经济基础知识；102 金融专业知识和实务",
                     "北京市 海淀区", "海淀区人事考试中心（中关村大街123号）", "5年",
                     "学历信息", "北京大学", "经济学", "2012年6月", "全日制", "10001120120600123",
                     "硕士研究生", "中国人民大学", "金融学", "非全日制", "2015年6月",
                     "学位信息", "无",
                     "告知承诺", "已签署《告知承诺书》（第1版），签署时间：2026年3月1日 10:05",  # signed at 02:05 UTC
                     "考生签名"):
        assert expected in text, expected
    assert "照片" not in text
    [(width, height, encoding, stored)] = embedded_images(data, tmp_path)
    assert (width, height, encoding) == (295, 413, "jpeg") and stored == photo.jpeg


def test_what_is_not_there_is_said(font_path: str, tmp_path: Path) -> None:
    bare = replace(FORM, educations=(), commitment=None, review_point=None, confirmed_at=None, archive_no="A2025001")
    text = pdftotext(render_form(bare, font_path=font_path), tmp_path)
    assert "未签署" in text and "未选择" in text and "照片" in text
    assert "A2025001" in text and "新考生" not in text
    assert embedded_images(render_form(bare, font_path=font_path), tmp_path) == []

    elsewhere = pdftotext(render_form(replace(bare, commitment_route=False), font_path=font_path), tmp_path)
    assert "不适用" in elsewhere and "未签署" not in elsewhere


def test_degrees_have_their_place(font_path: str, tmp_path: Path) -> None:
    degree = FormDegree("学士", "北京大学", "经济学", date(2012, 7, 1), "1000142012001234")
    text = pdftotext(render_form(replace(FORM, degrees=(degree,)), font_path=font_path), tmp_path)
    assert "学士" in text and "1000142012001234" in text and "2012年7月" in text


def test_the_same_form_gives_the_same_bytes_and_key(font_path: str) -> None:
    photo = normalised_photo()
    first = render_form(replace(FORM, photo=photo.jpeg), font_path=font_path)
    assert render_form(replace(FORM, photo=photo.jpeg), font_path=font_path) == first

    key = content_key(FORM, photo.sha256)
    other_photo = normalised_photo(background=(220, 232, 245))
    assert other_photo.sha256 != photo.sha256
    changed = [content_key(FORM, other_photo.sha256), content_key(replace(FORM, status="已缴费"), photo.sha256),
               content_key(replace(FORM, code="10234-4-ABCDEFGH"), photo.sha256),
               content_key(replace(FORM, educations=FORM.educations[:1]), photo.sha256)]
    assert len({key, *changed}) == 1 + len(changed)
