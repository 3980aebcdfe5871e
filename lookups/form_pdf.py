"""The registration form (报名表) as an A4 PDF: everything the candidate declared, their photo, a verification code.

Drawn with the ticket's parts (``lookups.pdf``: the font parsed once, the Latin fallback, the photo
box, ``content_key``) and, like the ticket, a pure function of its arguments: the same form gives
the same bytes. ``FormDoc`` holds the text as printed; ``lookups.forms`` builds it from the stored
registration and the catalogue.

The id number is printed in full, unlike the ticket's: the form is handed only to its candidate
(a signed link asked for in their own session) and exists to be checked at the review point
against the id card itself, which a masked number would not allow. The ticket is found by anyone
knowing a name and an id number, and at the exam the card is checked anyway.

Degrees (学位) are not recorded yet: the form keeps their table and prints 无 in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime

from fpdf import FPDF

from lookups.pdf import (
    HEADING_STYLE,
    LABEL_STYLE,
    Text,
    draw_photo,
    format_date,
    start_document,
)

__all__ = ["FormCommitment", "FormDegree", "FormDoc", "FormEducation", "NO_ARCHIVE", "NONE", "render_form"]

# The 295 × 413 photo (5:7) printed 30 × 42 mm.
FORM_PHOTO_MM = (30.0, 42.0)
NO_ARCHIVE = "新考生"  # printed for a candidate with no archive number
NONE = "无"
EMPTY = "—"
FOOTNOTE = (
    "本表由考生本人在网上报名后打印，所填信息以系统记录为准。",
    "参加现场审核时，请携带本表及有效身份证件、学历学位证书原件。",
    "工作人员可凭本表验证码在管理系统中核验本表真伪。",
)


@dataclass(frozen=True)
class FormEducation:
    """One education record as printed: level and mode by name, graduation by month."""

    level: str
    school: str
    major: str
    graduated_on: date
    mode: str
    cert_no: str


@dataclass(frozen=True)
class FormDegree:
    """One degree (学位) as printed; none is recorded yet."""

    degree: str
    school: str
    major: str
    obtained_on: date
    cert_no: str


@dataclass(frozen=True)
class FormCommitment:
    """The signed commitment (告知承诺书): its title and version, and when it was signed."""

    title: str
    version: int
    signed_at: datetime


@dataclass(frozen=True)
class FormDoc:
    """Everything printed on a registration form; ``photo`` is the candidate's JPEG as stored."""

    exam_name: str
    registration_id: int
    status: str  # by name: 审核通过
    code: str  # the verification code (lookups.forms.form_code)
    name: str
    id_type: str  # by name: 居民身份证
    id_number: str  # printed in full (see the module docstring)
    phone: str
    archive_no: str | None  # None: a new candidate (新考生)
    level: str
    specialty: str
    subjects: tuple[str, ...]  # "101 经济基础知识"
    province: str
    city: str
    review_point: str | None  # name and address; None: none chosen
    work_years: int
    educations: tuple[FormEducation, ...] = ()
    degrees: tuple[FormDegree, ...] = ()
    commitment: FormCommitment | None = None
    commitment_route: bool = True  # False: the province reviews every registration (不适用)
    confirmed_at: datetime | None = None
    photo: bytes | None = dataclasses.field(default=None, repr=False)


def render_form(form: FormDoc, *, font_path: str, created_at: datetime | None = None) -> bytes:
    """The form as PDF bytes; ``created_at`` (default a fixed date) goes into the PDF's metadata."""
    pdf, t = start_document(font_path, title=f"报名表 {form.registration_id}", created_at=created_at)
    _draw(pdf, form, t)
    return bytes(pdf.output())


def commitment_text(form: FormDoc) -> str:
    """What the form says of the commitment: signed (title, version, time), 未签署, or 不适用."""
    if form.commitment is not None:
        signed = form.commitment
        return f"已签署《{signed.title}》（第{signed.version}版），签署时间：{format_date(signed.signed_at)}"
    return "未签署" if form.commitment_route else "不适用（本地区实行资格审核，不适用告知承诺制）"


def _month(day: date) -> str:
    return f"{day.year}年{day.month}月"


def _heading(pdf: FPDF, t: Text, text: str) -> None:
    pdf.set_font(size=12.5)
    pdf.cell(w=0, h=8, text=t(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=10.5)


def _pairs(pdf: FPDF, t: Text, fields: tuple[tuple[str, str], ...], *, width: float | None = None) -> None:
    label_w = 30
    value_w = (width or pdf.epw) - label_w
    with pdf.table(width=width or pdf.epw, align="LEFT", col_widths=(label_w, value_w), text_align=("CENTER", "LEFT"),
                   first_row_as_headings=False, line_height=6, padding=(1, 2)) as table:
        for label, value in fields:
            row = table.row()
            row.cell(t(label), style=LABEL_STYLE)
            row.cell(t(value))


def _grid(pdf: FPDF, t: Text, widths: tuple[int, ...], heading: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    pdf.set_font(size=10)
    with pdf.table(col_widths=widths, text_align="CENTER", headings_style=HEADING_STYLE, line_height=6,
                   padding=(1, 1)) as table:
        top = table.row()
        for text in heading:
            top.cell(t(text))
        for values in rows:
            row = table.row()
            for text in values:
                row.cell(t(text))
    pdf.set_font(size=10.5)


def _draw(pdf: FPDF, form: FormDoc, t: Text) -> None:
    pdf.set_font(size=24)
    pdf.cell(w=0, h=13, text=t("报名表"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=14)
    pdf.multi_cell(w=0, h=8, text=t(form.exam_name), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=10.5)
    pdf.cell(w=0, h=7, text=t(f"报名序号：{form.registration_id}    验证码：{form.code}"), align="R",
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)

    top = pdf.get_y()
    photo_w, photo_h = FORM_PHOTO_MM
    draw_photo(pdf, form.photo, t, x=pdf.w - pdf.r_margin - photo_w, y=top, size_mm=FORM_PHOTO_MM)
    _pairs(pdf, t, (
        ("姓名", form.name),
        ("证件类型", form.id_type),
        ("证件号码", form.id_number),
        ("联系电话", form.phone),
        ("档案号", form.archive_no or NO_ARCHIVE),
        ("报名状态", form.status),
        ("信息确认时间", format_date(form.confirmed_at) if form.confirmed_at else EMPTY),
    ), width=pdf.epw - photo_w - 5)
    pdf.set_y(max(pdf.get_y(), top + photo_h))
    pdf.ln(2)

    _heading(pdf, t, "报考信息")
    _pairs(pdf, t, (
        ("报考级别", form.level),
        ("报考专业", form.specialty),
        ("报考科目", "；".join(form.subjects) or EMPTY),
        ("报考地区", f"{form.province} {form.city}"),
        ("审核点", form.review_point or "未选择"),
        ("相关工作年限", f"{form.work_years}年"),
        ("告知承诺", commitment_text(form)),
    ))
    pdf.ln(2)

    _heading(pdf, t, "学历信息")
    _grid(pdf, t, (22, 36, 30, 22, 20, 40), ("学历", "毕业学校", "所学专业", "毕业时间", "学习形式", "证书编号"),
          [(e.level, e.school, e.major, _month(e.graduated_on), e.mode, e.cert_no) for e in form.educations]
          or [(NONE, EMPTY, EMPTY, EMPTY, EMPTY, EMPTY)])
    pdf.ln(2)

    _heading(pdf, t, "学位信息")
    _grid(pdf, t, (22, 44, 34, 30, 40), ("学位", "授予单位", "所学专业", "授予时间", "证书编号"),
          [(d.degree, d.school, d.major, _month(d.obtained_on), d.cert_no) for d in form.degrees]
          or [(NONE, EMPTY, EMPTY, EMPTY, EMPTY)])
    pdf.ln(3)

    pdf.set_font(size=9.5)
    for number, line in enumerate(FOOTNOTE, start=1):
        pdf.multi_cell(w=0, h=5.5, text=t(f"{number}. {line}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(size=11)
    pdf.cell(w=pdf.epw / 2, h=9, text=t(f"验证码：{form.code}"))
    pdf.cell(w=pdf.epw / 2, h=9, text=t("考生签名：____________  日期：____________"), align="R")
