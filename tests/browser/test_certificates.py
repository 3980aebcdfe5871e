"""证书查询 in headless Chromium: a certificate verified from its QR code's link (the number filled in, the name
asked for, the captcha solved by the page's proof-of-work), a wrong name answered as an unknown number, the signed
electronic certificate downloaded, and its signature checked on the same page — then a tampered copy refused.

A gateway of its own (one process, default live config: the captcha is on) serves the page; the certificates are
written to PostgreSQL first and found through the PostgreSQL fallback, then from Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core import db
from loadtest.processes import Process, free_port, start_gateway
from tests.browser.checks import check_page
from tests.browser.conftest import DESKTOP, PHONE, in_ci, run_async
from tests.conftest import TEST_REDIS_URL
from tests.factories import make_exam
from tests.gateway.candidate_http import FAST_ARGON

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")

from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(120)
HOLDER = "欧阳明月"


async def _certificate(dsn: str) -> str:
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn)
        number = "ZG" + secrets.token_hex(5).upper()
        await conn.execute(
            "INSERT INTO certificates (cert_no, name, id_number, exam_id, level_code, approved_on, management_no) "
            "VALUES ($1, $2, '110105198803040017', $3, 'mid', DATE '2026-05-01', 'GL-2026-0042')",
            number, HOLDER, exam_id)
        return number
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_dsn: str, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    """A certificate, then a gateway that knows its own URL (the QR code's) with a signing key of its own."""
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    number = run_async(_certificate(pg_dsn))
    port = free_port()
    gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, port=port,
                            EXAMGATE_KEYS_DIR=str(tmp_path_factory.mktemp("cert-keys") / "keys"),
                            EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", **FAST_ARGON)
    try:
        gateway.patch_config({"shedding": {"max_loop_lag_ms": 0}})  # a busy machine sheds none of the assets
        yield gateway, number
    finally:
        assert gateway.stop() == 0, gateway.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()


def test_a_certificate_verified_from_its_qr_link_downloads_signed(served: tuple[Process, str], context_factory: Any,
                                                                  shots: Any, tmp_path: Path) -> None:
    gateway, number = served
    page = shots.watch(context_factory(PHONE).new_page())
    page.goto(f"{gateway.url}/certificates?cert_no={number}")  # what the QR code holds
    expect(page.get_by_label("证书编号")).to_have_value(number)
    expect(page.get_by_label("持证人姓名")).to_be_focused()
    assert page.locator('nav a[href="/certificates"]').count() == 1
    check_page(page)
    shots.take(page, "from-qr-link")

    # A wrong name: the one 404, worded for certificates.
    page.get_by_label("持证人姓名").fill("欧阳明日")
    page.get_by_role("button", name="查询证书").click()
    expect(page.get_by_role("alert").first).to_contain_text("未查询到证书信息", timeout=30_000)
    shots.take(page, "wrong-name")

    page.get_by_label("持证人姓名").fill(HOLDER)
    page.get_by_label("持证人姓名").press("Enter")
    result = page.locator("[data-result]")
    expect(result).to_be_visible(timeout=30_000)
    expect(result).to_contain_text("经核验，该证书真实有效")
    for shown in (number, HOLDER, "中级", "2026-05-01", "GL-2026-0042"):
        expect(result).to_contain_text(shown)
    expect(result).not_to_contain_text("110105198803040017")
    check_page(page)
    shots.take(page, "verified")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="下载电子证书（PDF）").click()
    saved = tmp_path / "certificate.pdf"
    download_info.value.save_as(saved)
    signed = saved.read_bytes()
    assert signed.startswith(b"%PDF-") and b"%EXAMGATE-SIGNATURE ed25519 " in signed

    # The downloaded file checks; a copy with one byte changed does not.
    page.get_by_label("电子证书文件").set_input_files(str(saved))
    page.get_by_role("button", name="核验签名").click()
    verdict = page.locator("[data-verdict]")
    expect(verdict).to_contain_text(f"验签通过：该文件是证书编号 {number} 的电子证书", timeout=15_000)
    shots.take(page, "signature-valid")

    altered = bytearray(signed)
    altered[len(signed) // 2] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(altered))
    page.get_by_label("电子证书文件").set_input_files(str(tampered))
    page.get_by_role("button", name="核验签名").click()
    expect(verdict).to_contain_text("验签未通过：签名与文件内容不符：文件已被修改", timeout=15_000)
    shots.take(page, "signature-invalid")


def test_the_page_on_a_desktop_asks_for_both_fields_and_says_a_lapsed_link(
        served: tuple[Process, str], context_factory: Any, shots: Any) -> None:
    gateway, number = served
    page = shots.watch(context_factory(DESKTOP).new_page())
    page.goto(f"{gateway.url}/certificates")
    expect(page.get_by_label("证书编号")).to_have_value("")
    page.get_by_label("证书编号").fill("ZG-12")
    page.get_by_role("button", name="查询证书").click()
    expect(page.locator("#cert_no-error")).to_have_text("证书编号为 6 至 32 位字母或数字", timeout=30_000)
    expect(page.locator("#name-error")).to_have_text("此项必填")
    check_page(page)
    shots.take(page, "desktop-invalid")
    page.get_by_label("证书编号").fill(number)
    page.get_by_label("持证人姓名").fill(HOLDER)
    page.get_by_role("button", name="查询证书").click()
    expect(page.locator("[data-result]")).to_be_visible(timeout=30_000)
    shots.take(page, "desktop-verified")
    # A link that lapsed while the page was open is not followed (it would download the API's 403): said instead.
    page.evaluate("document.querySelector('[data-pdf]').dataset.expiresAt = '1'")
    page.get_by_role("link", name="下载电子证书（PDF）").click()
    expect(page.get_by_role("alert").first).to_contain_text("下载链接已过期，请重新查询证书")
    expect(page.locator("[data-result]")).to_be_hidden()
    shots.take(page, "desktop-link-expired")
