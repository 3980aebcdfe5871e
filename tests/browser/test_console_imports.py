"""The console's imports page in headless Chromium: a scores file checked (every bad row with its line and
reason, nothing applied), a good one checked and imported as a batch, the batch listed, the corrected score
answered by the score lookup at once; the same batch again changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from core import db
from core.imports.kinds import KINDS
from tests.browser.conftest import DESKTOP, Shots, Stack, in_ci, run_async
from tests.gateway.test_lookup_routes import SCORES, make_results

if not in_ci():
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import Page, expect

from tests.browser.test_e2e import check_page

pytestmark = pytest.mark.timeout(120)

HEADER = "exam_code,ticket_no,id_number,subject_code,score\n"


async def scored_exam(dsn: str) -> tuple[int, str, list[dict[str, Any]]]:
    """A released exam with three scored candidates: its id, code and people."""
    conn = await db.connect(dsn)
    try:
        exam_id, people = await make_results(conn, 3)
        return exam_id, await conn.fetchval("SELECT code FROM exams WHERE id = $1", exam_id), people
    finally:
        await conn.close()


def choose(page: Page, name: str, text: str, batch_id: str) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode()}])
    page.get_by_label("批次号").fill(batch_id)


def score_of(stack: Stack, exam_id: int, person: dict[str, Any]) -> float:
    status, answer = stack.call("POST", SCORES, {"exam_id": exam_id, "name": person["name"],
                                                 "id_number": person["id_number"]})
    assert status == 200, answer
    return float(next(s["score"] for s in answer["subjects"] if s["code"] == "101"))


def test_a_scores_file_checked_and_imported_in_the_console(stack: Stack, context_factory: Any, shots: Shots) -> None:
    exam_id, code, people = run_async(scored_exam(stack.dsn))
    stack.wait_exam(exam_id)
    stack.set_live({"captcha": {"routes": {"scores.lookup": "off"}}, "ratelimit": {"rules": []}})
    person = people[1]
    page = shots.watch(context_factory(DESKTOP).new_page())
    page.goto(stack.url + "/console/imports")
    page.get_by_label("管理令牌").fill(stack.admin_token())
    page.get_by_role("button", name="进入数据导入").click()
    expect(page.locator("[data-whoami]")).to_contain_text("当前登录：operator")
    expect(page.get_by_role("link", name="数据导入")).to_have_attribute("aria-current", "page")

    # Each kind's header row is the one the import expects.
    for kind, spec in KINDS.items():
        page.locator("#kind").select_option(kind)
        expect(page.locator("[data-columns]")).to_have_text(",".join(spec.column_names))
    page.locator("#kind").select_option("scores")

    # A file with bad rows: every one reported with its line, nothing applied, importing not offered.
    bad = (HEADER + f"{code},{person['ticket_no']},{person['id_number']},101,abc\n"
           f"{code},NO-SUCH-TICKET,{person['id_number']},101,70\n"
           f"{code},{person['ticket_no']},{person['id_number']},101,88\n"
           f"{code},{person['ticket_no']},{person['id_number']},102,999\n")
    choose(page, "bad.csv", bad, "fix-bad-1")
    page.get_by_role("button", name="校验").click()
    report = page.locator("[data-report]")
    expect(report).to_contain_text("有 3 行有误，未导入任何数据")
    expect(report.locator('[data-line="2"]')).to_contain_text("不是有效的数值")
    expect(report.locator('[data-line="3"]')).to_contain_text("准考证号 NO-SUCH-TICKET 不存在")
    expect(report.locator('[data-line="5"]')).to_contain_text("超过科目 102 的满分")
    expect(report.locator('[data-line="4"]')).to_have_count(0)
    expect(page.get_by_role("button", name="导入", exact=True)).to_be_disabled()
    check_page(page)
    shots.take(page, "console-imports-rejected")
    assert score_of(stack, exam_id, person) == person["score_101"]

    # The corrected file: checked, then imported; the lookup answers the new score at once.
    good = HEADER + f"{code},{person['ticket_no']},{person['id_number']},101,88.5\n"
    choose(page, "fix.csv", good, "fix-2026-1")
    page.get_by_role("button", name="校验").click()
    expect(report).to_contain_text("校验通过")
    expect(report).to_contain_text("共 1 行")
    page.get_by_role("button", name="导入", exact=True).click()
    expect(page.locator("[data-notice]")).to_contain_text("批次 fix-2026-1 已导入：共 1 行，其中 1 行有更改")
    batch = page.locator('[data-batch="fix-2026-1"]')
    expect(batch).to_contain_text("成绩")
    expect(batch).to_contain_text("operator")
    expect(page.get_by_role("button", name="导入", exact=True)).to_be_disabled()
    assert score_of(stack, exam_id, person) == 88.5
    check_page(page)
    shots.take(page, "console-imports-applied")

    # The same batch again: the check says it was imported before.
    choose(page, "fix.csv", good, "fix-2026-1")
    page.get_by_role("button", name="校验").click()
    expect(report).to_contain_text("批次 fix-2026-1 此前已导入")
    expect(page.get_by_role("button", name="导入", exact=True)).to_be_disabled()
