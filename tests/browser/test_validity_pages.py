"""合格标准 and rolling validity in headless Chromium: the pass marks page lists an exam's published pass marks with
its validity period; an old candidate's enrol page shows the subjects passed last year and still valid, with the
archive number, offers them no more, and enrols in the rest.

A gateway of its own (one process) serves the pages; the exams, the candidate and last year's scores are written
to PostgreSQL first, the session straight into Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from core import db
from loadtest.processes import Process, start_gateway
from tests.browser.conftest import DESKTOP, PHONE, in_ci, run_async
from tests.conftest import TEST_REDIS_URL
from tests.core.validity_data import THIS_YEAR, family_code, make_candidate, make_family_exam, set_validity, sit
from tests.gateway.candidate_http import FAST_ARGON
from tests.gateway.seat_stack import make_sessions

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.timeout(120)


async def _data(dsn: str) -> dict[str, Any]:
    conn = await db.connect(dsn)
    try:
        family = family_code()
        await set_validity(conn, family, 2)
        last = await make_family_exam(conn, family, THIS_YEAR - 1)
        this = await make_family_exam(conn, family, THIS_YEAR)
        for exam_id in (last, this):
            await conn.execute("INSERT INTO pass_marks (exam_id, level_code, subject_code, pass_mark) "
                               "VALUES ($1, 'mid', '101', 60), ($1, 'mid', '102', 60), ($1, 'mid', '103', 66), "
                               "($1, 'mid', '104', 57.5)", exam_id)
        candidate = await make_candidate(conn)
        await sit(conn, candidate, last, {"101": 75, "102": 61, "103": 40, "104": 50})
        username = await conn.fetchval("SELECT username FROM candidates WHERE id = $1", candidate)
        # Another candidate passed two subjects last year and the other two this year: complete within the period.
        finisher = await make_candidate(conn)
        await sit(conn, finisher, last, {"101": 80, "102": 70})
        await sit(conn, finisher, this, {"103": 70, "104": 58})
        person = await conn.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", finisher)
        return {"family": family, "last": last, "this": this, "candidate": candidate, "username": username,
                "finisher": dict(person)}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_dsn: str, browser: Any) -> Iterator[tuple[Process, dict[str, Any]]]:
    """The data, then a gateway that loads it into its catalogue, and the candidate's session token."""
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    data = run_async(_data(pg_dsn))
    [data["token"]] = run_async(make_sessions(TEST_REDIS_URL, [data["candidate"]]))
    gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, **FAST_ARGON)
    try:
        # A busy machine sheds none of the assets; the score lookup asks no captcha here.
        gateway.patch_config({"shedding": {"max_loop_lag_ms": 0}, "captcha": {"routes": {"scores.lookup": "off"}}})
        yield gateway, data
    finally:
        assert gateway.stop() == 0, gateway.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()


def test_the_pass_marks_page_lists_an_exams_pass_marks_and_validity(served: tuple[Process, dict[str, Any]],
                                                                     context_factory: Any, shots: Any) -> None:
    gateway, data = served
    page = shots.watch(context_factory(PHONE).new_page())
    page.goto(f"{gateway.url}/pass-marks?exam={data['this']}")
    rows = page.locator("[data-marks] tr")
    rows.first.wait_for()
    assert rows.count() == 4
    assert rows.nth(2).inner_text().split("\t")[:3] == ["中级", "财务会计", "66"]
    validity = page.locator("[data-validity]").inner_text()
    assert "2 年为一个周期" in validity and f"{THIS_YEAR + 1} 年（含）以前" in validity
    shots.take(page, "pass-marks")
    assert page.locator('nav a[href="/pass-marks"]').count() == 1


def test_the_enrol_page_shows_carried_subjects_and_enrols_in_the_rest(served: tuple[Process, dict[str, Any]],
                                                                      pg_dsn: str, context_factory: Any,
                                                                      shots: Any) -> None:
    gateway, data = served
    context = context_factory(DESKTOP)
    context.add_init_script(f"sessionStorage.setItem('eg.session.token', {json.dumps(data['token'])});"
                            f"sessionStorage.setItem('eg.session.username', {json.dumps(data['username'])});")
    page = shots.watch(context.new_page())
    page.goto(f"{gateway.url}/exams/{data['this']}/enrol")
    panel = page.locator("[data-carried]")
    panel.wait_for()
    items = page.locator("[data-carried-list] li").all_inner_texts()
    assert items == [f"经济基础知识（101）：{THIS_YEAR - 1} 年合格，成绩 75，有效至 {THIS_YEAR} 年",
                     f"金融专业知识和实务（102）：{THIS_YEAR - 1} 年合格，成绩 61，有效至 {THIS_YEAR} 年"]
    assert page.locator("[data-qualified]").is_hidden()
    boxes = page.locator('input[name="subject"]')
    assert [boxes.nth(i).is_disabled() for i in range(4)] == [True, True, False, False]
    assert "无需报考" in page.locator("[data-subjects] label").first.inner_text()
    shots.take(page, "enrol-carried")

    page.fill("#city", "北京市")
    page.fill("#work_years", "6")
    page.check('input[name="subject"][value="103"]')
    page.check('input[name="subject"][value="104"]')
    page.click("[data-submit]")
    page.wait_for_url("**/registrations/*?from=enrol")
    shots.take(page, "enrolled")

    archive_no = run_async(_archive_no(pg_dsn, data["candidate"]))
    assert archive_no.startswith(f"{data['family']}{THIS_YEAR}")
    page.goto(f"{gateway.url}/exams/{data['this']}/enrol")
    page.locator("[data-archive-no]").wait_for()
    page.wait_for_function("document.querySelector('[data-archive-no]').textContent.length > 0")
    assert page.locator("[data-archive-no]").inner_text() == f"网报档案号：{archive_no}"
    shots.take(page, "enrol-archive-no")


async def _archive_no(dsn: str, candidate: int) -> str:
    conn = await db.connect(dsn)
    try:
        found: str = await conn.fetchval("SELECT archive_no FROM archive_numbers WHERE candidate_id = $1", candidate)
        return found
    finally:
        await conn.close()


def test_the_scores_page_shows_years_validity_and_the_qualification(served: tuple[Process, dict[str, Any]],
                                                                   context_factory: Any, shots: Any) -> None:
    gateway, data = served
    page = shots.watch(context_factory(PHONE).new_page())
    page.goto(f"{gateway.url}/scores?exam={data['this']}")
    page.fill("#name", data["finisher"]["name"])
    page.fill("#id_number", data["finisher"]["id_number"])
    page.click("[data-submit]")
    rows = page.locator("[data-scores] tr")
    rows.first.wait_for()
    # 104: 58 passes the level's published 57.5 (the subject's own mark is 60).
    assert [rows.nth(i).inner_text().split("\t") for i in range(rows.count())] == [
        ["财务会计", "70", "66", "合格", str(THIS_YEAR), f"{THIS_YEAR + 1} 年"],
        ["职业道德", "58", "57.5", "合格", str(THIS_YEAR), f"{THIS_YEAR + 1} 年"]]
    # The lookup reads this exam's record only: whether last year's passes complete the level is told
    # to the signed-in candidate, and the page says where.
    qualification = page.locator("[data-qualification]").inner_text()
    assert qualification.startswith("本次报考科目均已合格") and "请登录后在报名页查看往年有效成绩" in qualification
    shots.take(page, "scores-all-taken-passed")
