"""The console's 放弃报名申请 section in a real browser: a paid candidate's request approved into a refund."""

from __future__ import annotations

from typing import Any

import pytest

from core import db
from core.timeutil import utcnow
from payments.orders import new_order_no
from tests.browser.conftest import DESKTOP, Shots, Stack, in_ci, run_async
from tests.factories import make_exam
from tests.gateway.seat_stack import make_candidates, make_registrations

if not in_ci():
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import expect

from tests.browser.test_console_operators import sign_in
from tests.browser.test_e2e import check_page

pytestmark = pytest.mark.timeout(120)


async def a_paid_request(dsn: str) -> int:
    """A paid registration whose candidate asked to give it up; its id."""
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 10)])
        site = await conn.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", exam_id)
        (registration,) = await make_registrations(conn, exam_id, await make_candidates(conn, 1))
        await conn.execute("UPDATE registrations SET status = 'paid', site_id = $2 WHERE id = $1", registration, site)
        await conn.execute(
            "INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status, paid_at,"
            " provider_trade_no) VALUES ($1, $2, 'alipay', 11200, now(), 'paid', now(), $3)",
            new_order_no(utcnow()), registration, "2026120222001000000000000077")
        await conn.execute("INSERT INTO cancellation_requests (registration_id) VALUES ($1)", registration)
        return int(registration)
    finally:
        await conn.close()


def test_a_cancellation_approved_in_the_console(stack: Stack, context_factory: Any, shots: Shots) -> None:
    registration = run_async(a_paid_request(stack.dsn))
    page = shots.watch(context_factory(DESKTOP).new_page())
    sign_in(page, stack, stack.admin_token())
    section = page.locator("#cancellations")
    expect(section).to_be_visible()
    expect(page.get_by_role("link", name="放弃报名")).to_be_visible()
    row = section.locator(f'[data-cancellation="{registration}"]')
    expect(row).to_contain_text("待处理")
    check_page(page)
    shots.take(page, "console-cancellations")
    row.get_by_role("button", name=f"批准放弃报名并退费：报名 {registration}").click()
    expect(page.locator("[data-notice]")).to_contain_text(f"报名 {registration} 已取消，退款 RF")
    expect(row).to_have_count(0)  # no longer pending
    section.get_by_label("状态").select_option("approved")
    expect(section.locator(f'[data-cancellation="{registration}"]')).to_contain_text("已批准并退费")
    shots.take(page, "console-cancellation-approved")
