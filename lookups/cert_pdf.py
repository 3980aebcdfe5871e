"""The electronic certificate (电子证书) as an A4 PDF: the holder, the certificate, a seal mark and a QR code.

Drawn with the ticket's parts (``lookups.pdf``: the font parsed once, the Latin fallback,
``content_key``, the id number masked as the ticket masks it) and, like the ticket, a pure
function of its arguments, so the same certificate gives the same bytes and a cache keyed by
``content_key`` is never stale. The QR code (segno) holds the verification page's address with
the number (``…/certificates?cert_no=…``); the page asks for the holder's name and a captcha, so
the code itself tells nothing a photocopy of the certificate does not. The QR code is drawn as
vector rectangles (a run of dark modules per rectangle): no image to encode, crisp at any zoom.
The seal is a mark drawn in red (two rings, a star, the issuer's name), not an image of a real seal.
The signature (``lookups.cert_signature``) is added after rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import quote

import segno
from fpdf import FPDF

from lookups.pdf import LABEL_STYLE, Text, mask_id_number, start_document

__all__ = ["ISSUER", "CertificateDoc", "render_certificate", "verification_url"]

ISSUER = "全国专业技术人员资格考试办公室"
SEAL_TEXT = "证书专用章"
RED = (200, 16, 16)
QR_MM = 32.0
NOTES = (
    "本证书为电子证书，与纸质证书具有同等效力。",
    "扫描右侧二维码，或在证书查询页面输入证书编号、持证人姓名，可核验本证书真伪。",
    "本文件经数字签名，任何修改都会使签名失效；可在证书查询页面上传本文件核验签名。",
)


@dataclass(frozen=True)
class CertificateDoc:
    """Everything printed on an electronic certificate."""

    cert_no: str
    name: str
    id_number: str  # printed masked (lookups.pdf.mask_id_number)
    exam_name: str
    level_name: str
    approved_on: date
    management_no: str
    verify_url: str  # what the QR code holds


def verification_url(base_url: str, cert_no: str) -> str:
    """The verification page's address with the number filled in."""
    return f"{base_url.rstrip('/')}/certificates?cert_no={quote(cert_no, safe='')}"


def render_certificate(doc: CertificateDoc, *, font_path: str, created_at: datetime | None = None) -> bytes:
    """The certificate as PDF bytes (unsigned); ``created_at`` (default a fixed date) goes into the metadata."""
    pdf, t = start_document(font_path, title=f"电子证书 {doc.cert_no}", created_at=created_at)
    _draw(pdf, doc, t)
    return bytes(pdf.output())


def _date(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _draw(pdf: FPDF, doc: CertificateDoc, t: Text) -> None:
    pdf.set_draw_color(*RED)
    pdf.set_line_width(1.2)
    pdf.rect(10, 10, pdf.w - 20, pdf.h - 20)
    pdf.set_line_width(0.3)
    pdf.rect(13, 13, pdf.w - 26, pdf.h - 26)
    pdf.set_draw_color(0)

    pdf.set_y(28)
    pdf.set_font(size=26)
    pdf.cell(w=0, h=14, text=t("专业技术人员职业资格证书"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=13)
    pdf.cell(w=0, h=8, text=t("（电子证书）"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(10)

    pdf.set_font(size=13)
    pdf.multi_cell(w=0, h=9, text=t(f"    {doc.name}参加{doc.exam_name}，成绩合格，经审核，"
                                    f"取得{doc.level_name}资格，特发此证。"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)

    pdf.set_font(size=12)
    fields = (
        ("持证人姓名", doc.name),
        ("证件号码", mask_id_number(doc.id_number)),
        ("考试名称", doc.exam_name),
        ("资格级别", doc.level_name),
        ("批准日期", _date(doc.approved_on)),
        ("证书编号", doc.cert_no),
        ("管理号", doc.management_no),
    )
    with pdf.table(col_widths=(35, 135), text_align=("CENTER", "LEFT"), first_row_as_headings=False,
                   line_height=9, padding=(1, 2)) as table:
        for label, value in fields:
            row = table.row()
            row.cell(t(label), style=LABEL_STYLE)
            row.cell(t(value))
    pdf.ln(8)

    top = pdf.get_y()
    _draw_qr(pdf, doc.verify_url, x=pdf.l_margin, y=top, size=QR_MM)
    pdf.set_font(size=9)
    pdf.set_xy(pdf.l_margin, top + QR_MM + 1)
    pdf.cell(w=QR_MM, h=5, text=t("扫码核验"), align="C")
    _draw_seal(pdf, t, x=pdf.w - pdf.r_margin - 45, y=top + 22)
    pdf.set_font(size=12)
    pdf.set_xy(pdf.w - pdf.r_margin - 100, top + 48)
    pdf.cell(w=100, h=8, text=t(ISSUER), align="C", new_x="LEFT", new_y="NEXT")
    pdf.cell(w=100, h=8, text=t(_date(doc.approved_on)), align="C")

    pdf.set_y(pdf.h - pdf.b_margin - 38)
    pdf.set_font(size=9.5)
    for number, line in enumerate(NOTES, start=1):
        pdf.multi_cell(w=0, h=5.5, text=t(f"{number}. {line}"), new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(w=0, h=5.5, text=t(f"核验地址：{doc.verify_url}"), new_x="LMARGIN", new_y="NEXT")


def _draw_qr(pdf: FPDF, url: str, *, x: float, y: float, size: float) -> None:
    """The QR code of ``url`` (error correction M, a quiet zone of 2 modules) as black rectangles."""
    code = segno.make(url, error="m", micro=False)
    matrix = code.matrix
    quiet = 2
    module = size / (len(matrix) + 2 * quiet)
    pdf.set_fill_color(0)
    for row_index, row in enumerate(matrix):
        top = y + (row_index + quiet) * module
        column = 0
        while column < len(row):
            if not row[column]:
                column += 1
                continue
            start = column
            while column < len(row) and row[column]:
                column += 1
            pdf.rect(x + (start + quiet) * module, top, (column - start) * module, module, style="F")


def _draw_seal(pdf: FPDF, t: Text, *, x: float, y: float) -> None:
    """A seal-style mark centred at (x, y): two red rings, a star, the seal's words; the cursor left as it was."""
    cursor = pdf.get_x(), pdf.get_y()
    pdf.set_draw_color(*RED)
    pdf.set_fill_color(*RED)
    pdf.set_text_color(*RED)
    pdf.set_line_width(1.0)
    pdf.circle(x, y, 20)
    pdf.set_line_width(0.3)
    pdf.circle(x, y, 17.5)
    pdf.star(x, y - 3, 2.6, 7, 5, rotate_degrees=90, style="F")
    pdf.set_font(size=8)
    pdf.set_xy(x - 17, y - 14)
    pdf.cell(w=34, h=4, text=t("资格考试管理机构"), align="C")
    pdf.set_font(size=9)
    pdf.set_xy(x - 15, y + 7)
    pdf.cell(w=30, h=5, text=t(SEAL_TEXT), align="C")
    pdf.set_text_color(0)
    pdf.set_draw_color(0)
    pdf.set_fill_color(255)
    pdf.set_line_width(0.2)
    pdf.set_xy(*cursor)
