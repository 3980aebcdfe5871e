"""Certificates apart from the stores: the name match, numbers, links, the PDF and its signature."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import date
from pathlib import Path

import pytest

from lookups import cert_pdf, cert_signature, certificates
from lookups.certificates import Certificate

pytestmark = pytest.mark.unit

RECORD = Certificate("ZG2026000123", "阿依古丽·买买提", "11010519491231002X", 7, "2026年度经济专业技术资格考试", "mid",
                     "中级", "2026-05-01", "GL-2026-0001")
KEY = b"k" * 32


def _doc(**changes: object) -> cert_pdf.CertificateDoc:
    fields: dict[str, object] = {
        "cert_no": RECORD.cert_no, "name": RECORD.name, "id_number": RECORD.id_number, "exam_name": RECORD.exam_name,
        "level_name": RECORD.level_name, "approved_on": date(2026, 5, 1), "management_no": RECORD.management_no,
        "verify_url": cert_pdf.verification_url("https://exam.example.cn/", RECORD.cert_no)}
    fields.update(changes)
    return cert_pdf.CertificateDoc(**fields)  # type: ignore[arg-type]


def test_the_holder_matches_in_any_spelling_registration_accepts() -> None:
    from core.identity import normalise_name

    for spelling in ("阿依古丽·买买提", " 阿依古丽•买买提 ", "阿依古丽・买买提"):
        assert certificates.match(RECORD, normalise_name(spelling)) is RECORD


def test_another_name_and_no_record_are_the_same_refusal() -> None:
    with pytest.raises(certificates.NoCertificate):
        certificates.match(RECORD, "李四")
    with pytest.raises(certificates.NoCertificate):
        certificates.match(None, "李四")
    with pytest.raises(certificates.NoCertificate):
        certificates.match(None, "\u3007" * 4)  # the stand-in compared against is never a match


def test_numbers_are_normalised_or_refused() -> None:
    assert certificates.normalise_cert_no(" ＺＧ２０２６ 000123 ") == "ZG2026000123"
    assert certificates.normalise_cert_no("zg2026000123") == "zg2026000123"  # stored as issued
    for bad in ("", "12345", "ZG-2026-000123", "1" * 33, "证书2026000123"):
        assert certificates.normalise_cert_no(bad) is None


def test_records_decode_what_postgresql_writes() -> None:
    raw = ('["ZG2026000123", "阿依古丽·买买提", "11010519491231002X", 7, "2026年度经济专业技术资格考试", "mid", '
           '"中级", "2026-05-01", "GL-2026-0001"]')
    assert certificates.decode(raw) == RECORD
    assert certificates.answer(RECORD, "/x") == {
        "cert_no": "ZG2026000123", "name": "阿依古丽·买买提", "exam": {"id": 7, "name": "2026年度经济专业技术资格考试"},
        "level": {"code": "mid", "name": "中级"}, "approved_on": "2026-05-01", "management_no": "GL-2026-0001",
        "pdf_url": "/x"}
    assert certificates.bucket_key("ZG2026000123").startswith("eg:cert:")


def test_a_link_is_signed_and_expires() -> None:
    url = certificates.sign_pdf_link(KEY, RECORD.cert_no, ttl_s=600, now=1_000_000)
    path, query = url.split("?")
    assert path == "/api/v1/certificates/ZG2026000123.pdf"
    params = dict(part.split("=") for part in query.split("&"))
    assert certificates.verify_pdf_link(KEY, RECORD.cert_no, params["exp"], params["sig"], now=1_000_599) == 1_000_600
    with pytest.raises(certificates.LinkInvalid, match="expired"):
        certificates.verify_pdf_link(KEY, RECORD.cert_no, params["exp"], params["sig"], now=1_000_600)
    with pytest.raises(certificates.LinkInvalid, match="bad signature"):
        certificates.verify_pdf_link(KEY, "ZG2026000124", params["exp"], params["sig"], now=1_000_000)
    with pytest.raises(certificates.LinkInvalid, match="bad signature"):
        certificates.verify_pdf_link(KEY, RECORD.cert_no, "1000700", params["sig"], now=1_000_000)
    with pytest.raises(certificates.LinkInvalid, match="bad signature"):
        certificates.verify_pdf_link(b"x" * 32, RECORD.cert_no, params["exp"], params["sig"], now=1_000_000)
    with pytest.raises(certificates.LinkInvalid, match="malformed"):
        certificates.verify_pdf_link(KEY, RECORD.cert_no, params["exp"], params["sig"][:-1], now=1_000_000)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> cert_signature.Signer:
    return cert_signature.ensure_key(tmp_path_factory.mktemp("cert-keys") / "keys")


@pytest.fixture(scope="module")
def rendered(font_path: str) -> bytes:
    return cert_pdf.render_certificate(_doc(), font_path=font_path)


def test_the_pdf_prints_the_certificate_with_the_id_number_masked(rendered: bytes, tmp_path: Path) -> None:
    assert rendered.startswith(b"%PDF-")
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: run scripts/system-deps.sh (or make test)")
    path = tmp_path / "cert.pdf"
    path.write_bytes(rendered)
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    for printed in ("专业技术人员职业资格证书", "阿依古丽·买买提", "110105********002X", "2026年度经济专业技术资格考试",
                    "中级", "2026年5月1日", "ZG2026000123", "GL-2026-0001", "证书专用章",
                    "https://exam.example.cn/certificates?cert_no=ZG2026000123"):
        assert printed in text, printed
    assert "11010519491231002X" not in text


def test_the_same_certificate_gives_the_same_bytes(rendered: bytes, font_path: str) -> None:
    assert cert_pdf.render_certificate(_doc(), font_path=font_path) == rendered
    assert cert_pdf.render_certificate(_doc(management_no="GL-2026-0002"), font_path=font_path) != rendered


def test_the_qr_code_holds_the_verification_address() -> None:
    import segno

    url = cert_pdf.verification_url("https://exam.example.cn", "ZG2026000123")
    assert url == "https://exam.example.cn/certificates?cert_no=ZG2026000123"
    drawn: list[tuple[float, float, float, float]] = []

    class Canvas:
        def set_fill_color(self, *_: object) -> None:
            pass

        def rect(self, x: float, y: float, w: float, h: float, style: str) -> None:
            drawn.append((x, y, w, h))

    cert_pdf._draw_qr(Canvas(), url, x=0, y=0, size=37.0)  # type: ignore[arg-type]
    matrix = segno.make(url, error="m", micro=False).matrix
    module = 37.0 / (len(matrix) + 4)
    dark = {(round(x / module) - 2 + step, round(y / module) - 2)
            for x, y, w, _ in drawn for step in range(round(w / module))}
    assert dark == {(col, row) for row, line in enumerate(matrix) for col, on in enumerate(line) if on}


def test_a_signed_pdf_checks_and_any_altered_byte_fails(rendered: bytes, signer: cert_signature.Signer) -> None:
    signed = signer.sign(rendered, RECORD.cert_no)
    assert signed.startswith(rendered)
    assert signer.check(signed) == cert_signature.Checked(RECORD.cert_no, signer.key_id)
    # a byte in the body, in the middle, at the end of the document, in the signed number, in the signature
    number_at = signed.rindex(RECORD.cert_no.encode())
    for at in (200, len(rendered) // 2, len(rendered) - 3, number_at + 3, len(signed) - 10):
        altered = bytearray(signed)
        altered[at] ^= 0x01
        with pytest.raises(cert_signature.SignatureInvalid) as refused:
            signer.check(bytes(altered))
        assert refused.value.reason in ("mismatch", "malformed"), at
    with pytest.raises(cert_signature.SignatureInvalid, match="unsigned"):
        signer.check(rendered)
    with pytest.raises(cert_signature.SignatureInvalid, match="malformed"):
        signer.check(signed + b"% appended\n")
    with pytest.raises(cert_signature.SignatureInvalid, match="not_pdf"):
        signer.check(b"GIF89a" + signed)


def test_another_key_is_unknown(rendered: bytes, signer: cert_signature.Signer, tmp_path: Path) -> None:
    other = cert_signature.ensure_key(tmp_path / "other")
    with pytest.raises(cert_signature.SignatureInvalid, match="unknown_key"):
        signer.check(other.sign(rendered, RECORD.cert_no))


def test_the_key_is_made_once_and_private(tmp_path: Path) -> None:
    first = cert_signature.ensure_key(tmp_path / "keys")
    again = cert_signature.ensure_key(tmp_path / "keys")
    assert first.key_id == again.key_id
    key_file = tmp_path / "keys" / cert_signature.SIGNING_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        cert_signature.generate_key(tmp_path / "keys")
    cert_signature.generate_key(tmp_path / "keys", force=True)
    assert cert_signature.load_key(tmp_path / "keys").key_id != first.key_id
