"""The ticket PDF: Chinese text pdftotext can read back, a masked id number, the photo embedded as stored,
deterministic bytes and content keys, clear font errors."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core import photos
from lookups import pdf
from lookups.pdf import (
    PdfError,
    TicketDoc,
    TicketFontInvalid,
    TicketFontMissing,
    TicketSubject,
    content_key,
    format_exam_time,
    mask_id_number,
    render_ticket,
)
from tests import photo_images

BJ = timezone(timedelta(hours=8))
ID_NUMBER = "11010519900307123X"
TICKET = TicketDoc(
    ticket_no="202612010100123",
    name="欧阳娜娜",
    id_number=ID_NUMBER,
    exam_name="2026年全国硕士研究生招生考试",
    site_name="北京市海淀区第一中学",
    site_address="北京市海淀区中关村大街123号（东门入）",
    room=12,
    seat_no=8,
    subjects=(
        TicketSubject("101", "思想政治理论", datetime(2026, 12, 20, 8, 30, tzinfo=BJ),
                      datetime(2026, 12, 20, 11, 30, tzinfo=BJ)),
        # given in UTC: printed in Beijing time
        TicketSubject("201", "英语（一）", datetime(2026, 12, 20, 6, 0, tzinfo=UTC),
                      datetime(2026, 12, 20, 9, 0, tzinfo=UTC)),
    ),
)


def pdftotext(data: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (Debian package poppler-utils; scripts/system-deps.sh installs it)")
    path = tmp_path / "ticket.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, timeout=30)
    return done.stdout.decode()


def normalised_photo(**portrait: object) -> photos.Processed:
    """A photo as the upload stores it: a test portrait through the checks and the normalisation (295 × 413)."""
    return photos.process(photo_images.portrait(**portrait))  # type: ignore[arg-type]


def embedded_images(data: bytes, tmp_path: Path) -> list[tuple[int, int, str, bytes]]:
    """Every image of the PDF: (width, height, encoding, the stream as stored), with pdfimages."""
    if shutil.which("pdfimages") is None:
        pytest.skip("pdfimages is not installed (Debian package poppler-utils; scripts/system-deps.sh installs it)")
    path = tmp_path / "images.pdf"
    path.write_bytes(data)
    listed = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, check=True, timeout=30)
    rows = [line.split() for line in listed.stdout.decode().splitlines()[2:]]
    out = tmp_path / "extracted"
    out.mkdir(exist_ok=True)
    subprocess.run(["pdfimages", "-all", str(path), str(out / "img")], capture_output=True, check=True, timeout=30)
    files = sorted(out.iterdir())
    assert len(files) == len(rows)
    return [(int(row[3]), int(row[4]), row[8], file.read_bytes()) for row, file in zip(rows, files, strict=True)]


def pixels(data: bytes, tmp_path: Path, name: str) -> bytes:
    """The first page rasterised in grey: compares what a reader sees."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed (Debian package poppler-utils; scripts/system-deps.sh installs it)")
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftoppm", "-r", "100", "-gray", "-f", "1", "-l", "1", str(path)],
                          capture_output=True, check=True, timeout=30)
    return done.stdout


def test_text_can_be_extracted(font_path: str, tmp_path: Path) -> None:
    data = render_ticket(TICKET, font_path=font_path)

    assert data.startswith(b"%PDF-")
    text = pdftotext(data, tmp_path)
    for expected in ("准考证", TICKET.exam_name, TICKET.name, TICKET.ticket_no, TICKET.site_name,
                     TICKET.site_address, "第12考场", "思想政治理论", "考生须知",
                     "2026年12月20日 08:30–11:30", "2026年12月20日 14:00–17:00"):
        assert expected in text, expected
    assert text.rstrip().endswith(f"准考证号：{TICKET.ticket_no}")


def test_id_number_is_printed_masked(font_path: str, tmp_path: Path) -> None:
    text = pdftotext(render_ticket(TICKET, font_path=font_path), tmp_path)

    assert "110105********123X" in text
    assert ID_NUMBER not in text
    assert "19900307" not in text


def test_the_photo_is_embedded_as_stored(font_path: str, tmp_path: Path) -> None:
    photo = normalised_photo()
    assert (photo.width, photo.height) == (295, 413)
    data = render_ticket(replace(TICKET, photo=photo.jpeg), font_path=font_path)

    [(width, height, encoding, stored)] = embedded_images(data, tmp_path)
    assert (width, height, encoding) == (295, 413, "jpeg")
    assert stored == photo.jpeg  # the JPEG itself (DCTDecode), not decoded and encoded again
    text = pdftotext(data, tmp_path)
    assert "照片" not in text
    assert TICKET.name in text and text.rstrip().endswith(f"准考证号：{TICKET.ticket_no}")


def test_without_a_photo_the_box_says_so(font_path: str, tmp_path: Path) -> None:
    data = render_ticket(TICKET, font_path=font_path)

    assert embedded_images(data, tmp_path) == []
    assert "照片" in pdftotext(data, tmp_path)


def test_content_key_names_everything_printed() -> None:
    photo_sha = normalised_photo().sha256
    key = content_key(TICKET, photo_sha)

    assert content_key(replace(TICKET, photo=b"bytes are named by their hash"), photo_sha) == key
    assert len(key) == 64 and content_key(TICKET, photo_sha) == key
    changed = [content_key(TICKET, None), content_key(TICKET, "0" * 64),
               content_key(replace(TICKET, seat_no=9), photo_sha),
               content_key(replace(TICKET, subjects=TICKET.subjects[:1]), photo_sha),
               content_key(replace(TICKET, site_address="另一个地址"), photo_sha)]
    assert len({key, *changed}) == 1 + len(changed)


def test_same_ticket_gives_the_same_bytes(font_path: str) -> None:
    first = render_ticket(TICKET, font_path=font_path)

    assert render_ticket(TICKET, font_path=font_path) == first
    assert render_ticket(replace(TICKET, seat_no=9), font_path=font_path) != first
    created = datetime(2026, 11, 1, 9, 0, tzinfo=BJ)
    assert render_ticket(TICKET, font_path=font_path, created_at=created) != first
    assert render_ticket(TICKET, font_path=font_path, created_at=created) == render_ticket(
        TICKET, font_path=font_path, created_at=created)
    jpeg = normalised_photo().jpeg
    with_photo = render_ticket(replace(TICKET, photo=jpeg), font_path=font_path)
    assert with_photo != first
    assert render_ticket(replace(TICKET, photo=jpeg), font_path=font_path) == with_photo


def test_cached_font_looks_exactly_like_fpdf2_add_font(font_path: str, tmp_path: Path) -> None:
    # The cached path rebuilds fpdf2/fontTools state by hand; what a reader sees must not change.
    busy = replace(TICKET, name="阿依古丽·买买提", site_address="新疆维吾尔自治区乌鲁木齐市天山区解放南路88号")
    cached = pdf._ParsedFont(font_path)
    assert cached._fast, "the configured font should take the cached path"
    fast = pdf._render(busy, cached, pdf.FIXED_CREATED_AT)
    plain = pdf._render(busy, pdf._ParsedFont(font_path, allow_fast=False), pdf.FIXED_CREATED_AT)

    assert pdftotext(fast, tmp_path) == pdftotext(plain, tmp_path)
    assert pixels(fast, tmp_path, "fast") == pixels(plain, tmp_path, "plain")


def test_concurrent_renders_do_not_disturb_each_other(font_path: str) -> None:
    tickets = [replace(TICKET, ticket_no=f"2026120101{n:05d}", name=name, seat_no=n)
               for n, name in enumerate(["张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄婷"], start=1)]
    expected = [render_ticket(t, font_path=font_path) for t in tickets]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda t: render_ticket(t, font_path=font_path), tickets * 2))

    assert got == expected * 2


def test_many_subjects_flow_onto_a_second_page(font_path: str, tmp_path: Path) -> None:
    start = datetime(2026, 12, 20, 8, 0, tzinfo=BJ)
    subjects = tuple(TicketSubject(f"{n:03d}", f"科目{n}", start + timedelta(hours=n),
                                   start + timedelta(hours=n, minutes=90))
                     for n in range(30))
    text = pdftotext(render_ticket(replace(TICKET, subjects=subjects), font_path=font_path), tmp_path)

    assert text.count("\f") == 2
    assert "科目29" in text
    assert text.rstrip().endswith(f"准考证号：{TICKET.ticket_no}")


def test_a_character_in_neither_font_still_renders(font_path: str, tmp_path: Path) -> None:
    text = pdftotext(render_ticket(replace(TICKET, name="李𠀀明"), font_path=font_path), tmp_path)
    assert TICKET.ticket_no in text


def test_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    for path in (str(tmp_path / "nope.ttf"), str(tmp_path)):
        with pytest.raises(TicketFontMissing) as caught:
            render_ticket(TICKET, font_path=path)
        assert caught.value.path == path
        assert "EXAMGATE_TICKET_FONT" in str(caught.value)
    assert issubclass(TicketFontMissing, PdfError) and not issubclass(PdfError, LookupError)


@pytest.mark.parametrize(("name", "content"), [("broken.ttf", b"not a font at all"), ("font.txt", b"")])
def test_a_file_that_is_not_a_font_is_a_clear_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TicketFontInvalid) as caught:
        pdf.load_ticket_font(str(path))
    assert caught.value.path == str(path)


@pytest.mark.parametrize(("id_number", "masked"), [
    ("11010519900307123X", "110105********123X"),
    ("110105900307123", "110105*****7123"),  # 15-digit first-generation card
    ("E12345678", "E1*****78"),  # passport
    ("AB", "**"),
    ("", ""),
])
def test_mask_id_number(id_number: str, masked: str) -> None:
    assert mask_id_number(id_number) == masked


def test_format_exam_time() -> None:
    assert format_exam_time(datetime(2026, 12, 20, 9, 0, tzinfo=BJ),
                            datetime(2026, 12, 20, 11, 30, tzinfo=BJ)) == "2026年12月20日 09:00–11:30"
    assert format_exam_time(datetime(2027, 1, 5, 1, 0, tzinfo=UTC),
                            datetime(2027, 1, 5, 3, 0, tzinfo=UTC)) == "2027年1月5日 09:00–11:00"
    assert format_exam_time(datetime(2026, 12, 20, 23, 0, tzinfo=BJ),
                            datetime(2026, 12, 21, 1, 0, tzinfo=BJ)) == "2026年12月20日 23:00–2026年12月21日 01:00"
    with pytest.raises(ValueError):
        format_exam_time(datetime(2026, 12, 20, 9, 0), datetime(2026, 12, 20, 11, 0))
