"""The console's refunds section in headless Chromium: the list with each failure's reason, and executing a
refund again (the worker then sends it to the payment simulator, whose answer the row shows)."""

from __future__ import annotations

from datetime import timedelta
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

FAILED_ID = "RF202606010800000000000011"
DONE_ID = "RF202606010800000000000012"


async def two_refunds(dsn: str) -> None:
    """A refund that gave up after its attempts and one that succeeded, of two closed orders paid late."""
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 10)])
        registrations = await make_registrations(conn, exam_id, await make_candidates(conn, 2), status="approved")
        now = utcnow()
        orders = [new_order_no(now) for _ in registrations]
        await conn.executemany(
            "INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status,"
            " provider_trade_no) VALUES ($1, $2, $3, 11200, $4, 'refund_pending', $5)",
            [(o, r, p, now - timedelta(hours=1), t) for o, r, p, t in zip(
                orders, registrations, ("alipay", "wechat"), ("2026060122001000000000000001", "4200000000202606"),
                strict=True)])
        await conn.execute(
            "INSERT INTO refunds (refund_id, order_no, provider, provider_trade_no, amount_fen, reason, status,"
            " attempts, last_error, requested_by) VALUES ($1, $2, 'alipay', '2026060122001000000000000001', 11200,"
            " 'order_expired', 'failed', 5, 'ACQ.SELLER_BALANCE_NOT_ENOUGH: 卖家余额不足', 'system')",
            FAILED_ID, orders[0])
        await conn.execute(
            "INSERT INTO refunds (refund_id, order_no, provider, provider_trade_no, amount_fen, reason, status,"
            " attempts, requested_by, finished_at, provider_refund_no) VALUES ($1, $2, 'wechat', '4200000000202606',"
            " 11200, 'second_payment', 'succeeded', 1, 'system', now(), '50300000000000000000000000001')",
            DONE_ID, orders[1])
    finally:
        await conn.close()


def test_refunds_in_the_console(stack: Stack, context_factory: Any, shots: Shots) -> None:
    run_async(two_refunds(stack.dsn))
    page = shots.watch(context_factory(DESKTOP).new_page())
    sign_in(page, stack, stack.admin_token())
    section = page.locator("#refunds")
    expect(section).to_be_visible()
    expect(page.get_by_role("link", name="退款")).to_be_visible()
    failed = section.locator(f'[data-refund="{FAILED_ID}"]')
    expect(failed).to_contain_text("失败")
    expect(failed).to_contain_text("支付宝 ¥112.00")
    expect(failed).to_contain_text("已发起 5 次")
    expect(failed).to_contain_text("订单过期后付款")
    expect(failed).to_contain_text("ACQ.SELLER_BALANCE_NOT_ENOUGH: 卖家余额不足")
    expect(failed).to_contain_text("已停止重试，需人工执行")
    expect(section.locator("[data-refunds-summary]")).to_contain_text("1 笔退款重试用尽仍失败")
    done = section.locator(f'[data-refund="{DONE_ID}"]')
    expect(done).to_contain_text("已退款")
    expect(done).to_contain_text("重复付款")
    expect(done.get_by_role("button")).to_have_count(0)
    check_page(page)
    shots.take(page, "console-refunds")

    section.get_by_label("状态").select_option("failed")
    expect(done).to_have_count(0)
    page.get_by_role("button", name=f"重新执行退款 {FAILED_ID}").click()
    expect(page.locator("[data-notice]")).to_contain_text(f"退款 {FAILED_ID} 已排队")
    # The worker sends it: the simulator knows no such trade, and the row says so after a refresh.
    for _ in range(20):
        section.get_by_role("button", name="刷新").click()
        if "ACQ.TRADE_NOT_EXIST" in failed.inner_text():
            break
        page.wait_for_timeout(500)
    expect(failed).to_contain_text("ACQ.TRADE_NOT_EXIST")
    expect(failed).to_contain_text("已发起 6 次")
    shots.take(page, "console-refund-executed")
