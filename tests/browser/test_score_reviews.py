"""成绩复核 in headless Chromium: a candidate chooses a subject from their scores and asks for a review; an
operator signs in on the console's 成绩复核 page, corrects the score with a reason; the candidate sees the answer.

A gateway of its own (one process) serves the pages; the exam, its tickets, scores and open review window are
written to PostgreSQL first, the session straight into Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from benchmarks.import_data import make_exam_with_tickets
from core import db
from loadtest.processes import Process, start_gateway
from tests.browser.conftest import DESKTOP, in_ci, run_async
from tests.conftest import TEST_REDIS_URL
from tests.gateway.candidate_http import FAST_ARGON
from tests.gateway.seat_stack import make_sessions

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(120)


async def _data(dsn: str) -> dict[str, Any]:
    conn = await db.connect(dsn)
    try:
        exam = await make_exam_with_tickets(conn, 1)
        await conn.execute("""INSERT INTO scores (registration_id, exam_id, subject_code, score)
                              SELECT r.id, r.exam_id, s.code, CASE s.code WHEN '101' THEN 71.5 ELSE 58 END
                                FROM registrations r CROSS JOIN (VALUES ('101'), ('102')) AS s(code)
                               WHERE r.exam_id = $1""", exam.exam_id)
        await conn.execute("""UPDATE exams SET score_release_at = now() - interval '2 days',
                                     score_review_opens_at = now() - interval '1 day',
                                     score_review_closes_at = now() + interval '5 days' WHERE id = $1""",
                           exam.exam_id)
        row = await conn.fetchrow("SELECT c.id, c.username FROM registrations r JOIN candidates c "
                                  "ON c.id = r.candidate_id WHERE r.exam_id = $1", exam.exam_id)
        return {"exam_id": exam.exam_id, "exam_code": exam.code, "candidate": row["id"], "username": row["username"]}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_dsn: str, browser: Any) -> Iterator[tuple[Process, dict[str, Any]]]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    data = run_async(_data(pg_dsn))
    [data["token"]] = run_async(make_sessions(TEST_REDIS_URL, [data["candidate"]]))
    gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, **FAST_ARGON)
    try:
        gateway.patch_config({"shedding": {"max_loop_lag_ms": 0}})  # a busy machine sheds none of the assets
        yield gateway, data
    finally:
        assert gateway.stop() == 0, gateway.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()


def test_a_review_asked_corrected_and_seen(served: tuple[Process, dict[str, Any]], context_factory: Any,
                                           shots: Any) -> None:
    gateway, data = served
    context = context_factory(DESKTOP)
    context.add_init_script(f"sessionStorage.setItem('eg.session.token', {json.dumps(data['token'])});"
                            f"sessionStorage.setItem('eg.session.username', {json.dumps(data['username'])});")
    page = shots.watch(context.new_page())
    page.goto(f"{gateway.url}/score-reviews")
    expect(page.locator("[data-window]")).to_contain_text("复核申请期")
    assert page.locator('nav a[href="/score-reviews"]').count() == 1
    boxes = page.locator('input[name="subject"]')
    expect(boxes).to_have_count(2)
    page.get_by_role("button", name="提交复核申请").click()
    expect(page.locator("#subjects-error")).to_have_text("请至少选择一个科目")
    page.get_by_label("金融专业知识和实务（102）：58 分").check()
    shots.take(page, "score-reviews-choose")
    page.get_by_role("button", name="提交复核申请").click()
    expect(page.locator("[data-notice]")).to_contain_text("已提交 1 个科目的复核申请")
    expect(page.locator("[data-reviews] tr")).to_have_count(1)
    expect(page.locator("[data-reviews] tr")).to_contain_text("复核中")
    expect(page.get_by_label("金融专业知识和实务（102）：58 分（已申请）")).to_be_disabled()

    console = shots.watch(context_factory(DESKTOP).new_page())
    console.goto(f"{gateway.url}/console")
    console.get_by_label("管理令牌").fill(gateway.admin_token())
    console.get_by_role("button", name="进入控制台").click()
    console.get_by_role("link", name="成绩复核（考生的成绩复核申请）").click()  # signed in here too: one token
    expect(console.locator("[data-score-reviews] [data-whoami]")).to_contain_text("当前登录")
    row = console.locator("[data-queue] tr", has_text=data["exam_code"])  # the database may hold others' requests
    expect(row).to_have_count(1)
    expect(row).to_contain_text("金融专业知识和实务")
    row.get_by_role("button", name="处理").click()
    console.get_by_label("更正成绩").check()
    console.get_by_label("更正后的成绩").fill("61.5")
    console.get_by_label("复核说明（将告知考生）").fill("第 3 题漏评，加 3.5 分")
    shots.take(console, "console-score-reviews")
    console.get_by_role("button", name="提交复核结果").click()
    expect(console.locator("[data-notice]")).to_contain_text("成绩已更正为 61.5")
    expect(row).to_have_count(0)  # no longer pending

    page.reload()
    answer = page.locator("[data-reviews] tr")
    expect(answer).to_contain_text("成绩已更正")
    expect(answer).to_contain_text("61.5")
    expect(answer).to_contain_text("第 3 题漏评，加 3.5 分")
    shots.take(page, "score-reviews-answered")
