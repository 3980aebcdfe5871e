"""The admission ticket (准考证) as an A4 PDF with extractable Chinese text, and what other documents share.

Text is set in the configured CJK TrueType font; characters it lacks (Droid Sans Fallback has
no digits or Latin letters at all) fall back to Helvetica, a PDF core font that is never
embedded. Rendering is a pure function of its arguments: the PDF's creation date is fixed
unless given, so the same ticket gives the same bytes. The candidate's photo is printed in a
box at the top right, the stored JPEG embedded as it is (DCTDecode, never decoded and
re-encoded); without one the box says 照片. ``content_key`` names a document by everything
printed on it — the photo by its SHA-256 — so a cache keyed by it is never stale.

The registration form (``lookups.form_pdf``) is drawn with the same parts: ``start_document``
(the font parsed once, the fallback, the page), ``draw_photo`` and ``content_key``.

Speed: fpdf2 parses the whole font each time a document adds it (~150 ms for the 4 MB Droid
font, 49k glyphs) and its subsetter then splits the glyph table again: ~230 ms per ticket.
``_ParsedFont`` parses a font once per path (~200 ms, ~47 MiB kept) and hands each document a
copy with fresh per-document state whose font tables are rebuilt cheaply from that parse: ~40 ms
per ticket, most of it fpdf2's layout. This leans on fpdf2 2.8 / fontTools 4 internals (both
pinned); ``tests/lookups/test_pdf.py`` checks that the result reads and rasterises exactly like
fpdf2's own ``add_font`` path, which fonts the fast path does not cover (CFF outlines,
collections, colour fonts) still take.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from fontTools import ttLib
from fontTools.ttLib.tables._g_l_y_f import Glyph
from fpdf import FPDF
from fpdf.fonts import FontFace, SubsetMap, TTFFont

from core.timeutil import SHANGHAI

__all__ = [
    "PdfError",
    "TicketDoc",
    "TicketFontInvalid",
    "TicketFontMissing",
    "TicketSubject",
    "check_ticket_font",
    "format_exam_time",
    "load_ticket_font",
    "mask_id_number",
    "render_ticket",
    # shared with the other documents (lookups.form_pdf)
    "HEADING_STYLE",
    "LABEL_STYLE",
    "Text",
    "content_key",
    "draw_photo",
    "format_date",
    "start_document",
]

FIXED_CREATED_AT = datetime(2000, 1, 1, tzinfo=UTC)
CJK_FAMILY = "ticket-cjk"
LATIN_FAMILY = "helvetica"
# The 295 × 413 photo (5:7) printed 25 × 35 mm on the ticket (1 inch at 300 dpi).
TICKET_PHOTO_MM = (25.0, 35.0)
# Bumped when a drawing changes, so PDFs cached under content_key are made again.
LAYOUT_VERSION = 2
Text = Callable[[str], str]  # a document's text for its fonts (see _latin_fallback)
NOTICE = (
    "请考生仔细核对本准考证上的个人信息，如有错误请立即联系报名机构。",
    "考试当天须携带本准考证和有效身份证件原件，二者缺一不得入场。",
    "请于每科开考前30分钟到达考场，开考15分钟后不得入场。",
    "严禁携带手机、智能手表等电子设备进入考场，违者按作弊处理。",
    "请妥善保管本准考证，查询成绩时需使用准考证号。",
)


class PdfError(Exception):
    """A ticket PDF could not be rendered."""


class TicketFontMissing(PdfError):
    """The configured ticket font file does not exist (``EXAMGATE_TICKET_FONT``)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"ticket font {path} does not exist; install it with scripts/system-deps.sh "
                         "or point EXAMGATE_TICKET_FONT at a TrueType font with Chinese glyphs")
        self.path = path


class TicketFontInvalid(PdfError):
    """The configured ticket font file exists but cannot be read as a font."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"ticket font {path} is not usable: {reason}")
        self.path = path
        self.reason = reason


class TicketSubject(NamedTuple):
    """One exam subject on the ticket; times must be timezone-aware."""

    code: str
    name: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class TicketDoc:
    """Everything printed on an admission ticket; ``photo`` is the candidate's JPEG as stored (None: the 照片 box)."""

    ticket_no: str
    name: str
    id_number: str  # printed masked, see mask_id_number
    exam_name: str
    site_name: str
    site_address: str
    room: int
    seat_no: int
    subjects: tuple[TicketSubject, ...] = ()
    photo: bytes | None = dataclasses.field(default=None, repr=False)


def mask_id_number(id_number: str) -> str:
    """The id number with its middle starred: first 6 and last 4 kept (a quarter each when shorter than 14)."""
    n = len(id_number)
    head, tail = (6, 4) if n >= 14 else (n // 4, n // 4)
    return id_number[:head] + "*" * (n - head - tail) + id_number[n - tail:]


def format_exam_time(starts_at: datetime, ends_at: datetime) -> str:
    """``2026年12月20日 09:00–11:30`` in Beijing time; the end date is repeated only if it differs."""
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("exam times must be timezone-aware")
    start, end = starts_at.astimezone(SHANGHAI), ends_at.astimezone(SHANGHAI)
    text = f"{_date(start)} {start:%H:%M}–"
    return text + (f"{end:%H:%M}" if end.date() == start.date() else f"{_date(end)} {end:%H:%M}")


def _date(moment: datetime) -> str:
    return f"{moment.year}年{moment.month}月{moment.day}日"


def format_date(moment: datetime) -> str:
    """``2026年12月20日 09:00`` in Beijing time."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    local = moment.astimezone(SHANGHAI)
    return f"{_date(local)} {local:%H:%M}"


def content_key(doc: Any, photo_sha256: str | None) -> str:
    """Hex SHA-256 of everything ``doc`` (a document dataclass) prints: its fields, its photo by ``photo_sha256``.

    The photo's bytes are left out (a cache hit must not need them); its hash stands for them. The
    document's type and ``LAYOUT_VERSION`` are part of it, so another document or a new drawing of
    the same facts is another key.
    """
    facts = {field.name: getattr(doc, field.name) for field in dataclasses.fields(doc) if field.name != "photo"}
    printed = [type(doc).__name__, LAYOUT_VERSION, facts, photo_sha256]
    return hashlib.sha256(orjson.dumps(printed, default=_plain)).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):  # NamedTuples (orjson takes plain tuples only)
        return list(value)
    raise TypeError(f"{type(value).__name__} is not part of a printed document")


def check_ticket_font(font_path: str) -> None:
    """Raise TicketFontMissing unless ``font_path`` is a file: one stat, no parsing (for start-up and readiness)."""
    _font_file(font_path)


def load_ticket_font(font_path: str) -> None:
    """Parse the font now rather than on the first render (e.g. at start-up); raises like render_ticket."""
    _parsed_font(font_path)


def render_ticket(ticket: TicketDoc, *, font_path: str, created_at: datetime | None = None) -> bytes:
    """The ticket as PDF bytes; ``created_at`` (default a fixed date) goes into the PDF's metadata."""
    return _render(ticket, _parsed_font(font_path), created_at or FIXED_CREATED_AT)


def _render(ticket: TicketDoc, font: _ParsedFont, created_at: datetime) -> bytes:
    pdf, t = _document(font, f"准考证 {ticket.ticket_no}", created_at)
    _draw(pdf, ticket, t)
    return bytes(pdf.output())


def start_document(font_path: str, *, title: str, created_at: datetime | None = None) -> tuple[FPDF, Text]:
    """An A4 document with its first page, the CJK font current, and ``t`` for its text (see ``_latin_fallback``)."""
    return _document(_parsed_font(font_path), title, created_at or FIXED_CREATED_AT)


def _document(font: _ParsedFont, title: str, created_at: datetime) -> tuple[FPDF, Text]:
    pdf = _DocumentPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_creation_date(created_at)
    pdf.set_lang("zh-CN")
    pdf.set_creator("examgate")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_font(LATIN_FAMILY, size=11)  # registers the core font before it can be a fallback
    font.add_to(pdf, CJK_FAMILY)
    pdf.set_fallback_fonts([LATIN_FAMILY])
    pdf.set_title(title)
    pdf.add_page()
    cjk = pdf.fonts[CJK_FAMILY]
    assert isinstance(cjk, TTFFont)  # added from a TrueType file (_ParsedFont.add_to)
    cmap = cjk.cmap
    pdf.set_font(CJK_FAMILY, size=12)
    return pdf, lambda text: _latin_fallback(text, cmap)


def draw_photo(pdf: FPDF, jpeg: bytes | None, t: Text, *, x: float, y: float, size_mm: tuple[float, float]) -> None:
    """The photo box at (x, y): the JPEG embedded as stored (no re-encoding), or 照片 in an empty frame.

    The position of the text cursor is left as it was.
    """
    w, h = size_mm
    cursor = pdf.get_x(), pdf.get_y()
    if jpeg is not None:
        pdf.image(io.BytesIO(jpeg), x=x, y=y, w=w, h=h, alt_text="考生照片")
    else:
        pdf.set_xy(x, y + h / 2 - 4)
        pdf.cell(w=w, h=8, text=t("照片"), align="C")
    pdf.set_draw_color(0)
    pdf.rect(x, y, w, h)
    pdf.set_xy(*cursor)


class _DocumentPDF(FPDF):
    def get_fallback_font(self, char: str, style: str = "") -> str | None:
        """Helvetica for what the CJK font lacks; ``_latin_fallback`` has mapped it to Latin-1 codes."""
        return LATIN_FAMILY if ord(char) < 256 else None


def _latin_fallback(text: str, cmap: dict[int, str]) -> str:
    """``text`` with the characters the CJK font lacks in Helvetica's WinAnsi codes (``–`` → 0x96).

    fpdf2 does this itself only when a core font is the current font, not for fallback runs.
    """
    if all(ord(ch) in cmap for ch in text):
        return text
    out = []
    for ch in text:
        if ord(ch) not in cmap:
            try:
                ch = ch.encode("cp1252").decode("latin-1")
            except UnicodeEncodeError:
                pass  # in neither font: fpdf2 logs the missing glyph and draws an empty box
        out.append(ch)
    return "".join(out)


LABEL_STYLE = FontFace(fill_color=(236, 236, 236))  # a label cell of a two-column table
HEADING_STYLE = FontFace(emphasis="", fill_color=(236, 236, 236))  # a table's heading row


def _draw(pdf: FPDF, ticket: TicketDoc, t: Text) -> None:
    pdf.set_font(CJK_FAMILY, size=24)
    pdf.cell(w=0, h=14, text=t("准考证"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=14)
    pdf.multi_cell(w=0, h=8, text=t(ticket.exam_name), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    pdf.set_font(size=12)
    top = pdf.get_y()
    photo_w, photo_h = TICKET_PHOTO_MM
    draw_photo(pdf, ticket.photo, t, x=pdf.w - pdf.r_margin - photo_w, y=top, size_mm=TICKET_PHOTO_MM)
    fields = (
        ("姓名", ticket.name),
        ("证件号码", mask_id_number(ticket.id_number)),
        ("准考证号", ticket.ticket_no),
        ("考点", ticket.site_name),
        ("考点地址", ticket.site_address),
        ("考场", f"第{ticket.room}考场"),
        ("座位号", str(ticket.seat_no)),
    )
    # Beside the photo, as on a printed 准考证.
    with pdf.table(width=pdf.epw - photo_w - 5, align="LEFT", col_widths=(30, 110), text_align=("CENTER", "LEFT"),
                   first_row_as_headings=False, line_height=8, padding=(1, 2)) as table:
        for label, value in fields:
            row = table.row()
            row.cell(t(label), style=LABEL_STYLE)
            row.cell(t(value))
    pdf.set_y(max(pdf.get_y(), top + photo_h))
    pdf.ln(6)

    pdf.cell(w=0, h=8, text=t("考试科目"), new_x="LMARGIN", new_y="NEXT")
    with pdf.table(col_widths=(70, 100), text_align=("LEFT", "CENTER"), headings_style=HEADING_STYLE,
                   line_height=8, padding=(1, 2)) as table:
        heading = table.row()
        heading.cell(t("科目"))
        heading.cell(t("考试时间（北京时间）"))
        for subject in ticket.subjects:
            row = table.row()
            row.cell(t(f"{subject.code} {subject.name}"))
            row.cell(t(format_exam_time(subject.starts_at, subject.ends_at)))
    pdf.ln(6)

    pdf.cell(w=0, h=8, text=t("考生须知"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=10.5)
    for number, line in enumerate(NOTICE, start=1):
        pdf.multi_cell(w=0, h=6.5, text=t(f"{number}. {line}"), new_x="LMARGIN", new_y="NEXT")

    bottom = pdf.h - pdf.b_margin - 10
    if pdf.get_y() < bottom:
        pdf.set_y(bottom)
    pdf.set_font(size=12)
    pdf.cell(w=0, h=10, text=t(f"准考证号：{ticket.ticket_no}"), align="C")


# ---------------------------------------------------------------- the font, parsed once per path


class _FreshGlyphs(dict):
    """A glyf table's glyphs, each made on first access from cached bytes.

    The subsetter edits the glyphs it keeps (component renumbering, trimming), so each document
    needs its own Glyph objects — but only for the few dozen glyphs it uses, not all 49k.
    """

    def __init__(self, raw: dict[str, bytes]) -> None:
        super().__init__()
        self._raw = raw

    def __missing__(self, name: str) -> Glyph:
        glyph = self[name] = Glyph(self._raw[name])
        return glyph

    def __contains__(self, name: object) -> bool:
        return name in self._raw


class _ParsedFont:
    """One font file parsed once; ``add_to`` gives a document its own cheap copy."""

    def __init__(self, path: str, *, allow_fast: bool = True) -> None:
        self._path = Path(path)
        if self._path.suffix.lower() not in _FONT_SUFFIXES:
            raise ValueError(f"expected a font file ({', '.join(_FONT_SUFFIXES)})")
        data = self._path.read_bytes()
        # Parsed from memory: a file that is not a font then leaves no open file behind.
        proto = TTFFont(FPDF(), io.BytesIO(data), CJK_FAMILY, "")  # type: ignore[arg-type]
        proto.ttffile = self._path
        tt = proto.ttfont
        self._fast = allow_fast and (
            self._path.suffix.lower() == ".ttf" and "glyf" in tt and not proto.is_cff and proto.color_font is None
        )
        if not self._fast:
            proto.close()
            return
        glyf = tt["glyf"]
        self._data = data
        self._glyph_order = list(tt.getGlyphOrder())
        self._raw = {name: g.data if hasattr(g, "data") else g.compile(glyf) for name, g in glyf.glyphs.items()}
        self._metrics = {tag: dict(tt[tag].metrics) for tag in ("hmtx", "vmtx") if tag in tt}
        cmap = tt["cmap"]
        for sub in cmap.tables:
            sub.ensureDecompiled()
        self._cmap_version = cmap.tableVersion
        self._cmap_tables = list(cmap.tables)
        proto.close()
        proto.ttfont = None  # the cached parts above are all a document needs
        self._proto = proto

    def add_to(self, pdf: FPDF, family: str) -> None:
        """Make the font available to ``pdf`` as ``family``, like ``pdf.add_font`` would."""
        if not self._fast:
            pdf.add_font(family, fname=str(self._path))
            return
        font = copy.copy(self._proto)
        font.i = len(pdf.fonts) + 1
        font.fontkey = family
        font.desc = copy.copy(self._proto.desc)  # output() stores per-document objects on it
        font.ttfont = self._fresh_ttfont()
        font.missing_glyphs = []
        font.biggest_size_pt = 0
        font.subset = SubsetMap(font)
        pdf.fonts[family] = font

    def _fresh_ttfont(self) -> ttLib.TTFont:
        """A TTFont the subsetter may edit: small tables from the bytes, large ones from the cache."""
        # recalcBBoxes=False: the glyphs keep the bounding boxes stored in the font instead of being
        # decoded and re-encoded on output (~15 ms); only the subset's head/maxp totals stay the full font's.
        tt = ttLib.TTFont(io.BytesIO(self._data), lazy=True, recalcTimestamp=False, recalcBBoxes=False)
        tt.setGlyphOrder(list(self._glyph_order))
        for tag in _LAYOUT_TABLES:  # fpdf2's subsetter drops them too, after decompiling them (~7 ms)
            if tag in tt:
                del tt[tag]
        glyf = ttLib.newTable("glyf")
        glyf.glyphs = _FreshGlyphs(self._raw)
        glyf.setGlyphOrder(tt.getGlyphOrder())
        tt["glyf"] = glyf
        for tag, metrics in self._metrics.items():
            table = ttLib.newTable(tag)
            table.metrics = dict(metrics)
            tt[tag] = table
        cmap = ttLib.newTable("cmap")
        cmap.tableVersion = self._cmap_version
        cmap.tables = [copy.copy(sub) for sub in self._cmap_tables]  # the subsetter replaces .cmap on each
        tt["cmap"] = cmap
        return tt


_FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_LAYOUT_TABLES = ("GDEF", "GPOS", "GSUB")
_cache: dict[tuple[str, int, int], _ParsedFont] = {}
_cache_lock = threading.Lock()


def _font_file(path: str) -> os.stat_result:
    try:
        info = os.stat(path)
    except OSError:
        raise TicketFontMissing(path) from None
    if not stat.S_ISREG(info.st_mode):
        raise TicketFontMissing(path)
    return info


def _parsed_font(path: str) -> _ParsedFont:
    info = _font_file(path)
    key = (path, info.st_mtime_ns, info.st_size)  # a replaced file is parsed again
    font = _cache.get(key)
    if font is not None:
        return font
    with _cache_lock:
        font = _cache.get(key)
        if font is None:
            try:
                font = _ParsedFont(path)
            except Exception as exc:  # fontTools raises many types for a file that is not a font
                raise TicketFontInvalid(path, f"{type(exc).__name__}: {exc}") from exc
            for stale in [k for k in _cache if k[0] == path]:
                del _cache[stale]
            _cache[key] = font
    return font
