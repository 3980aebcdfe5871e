"""The registration lifecycle in headless Chromium: a person's review in the console, and the commitment's refusals.

- A candidate enrols in a province whose exam authority reviews every registration online, signs the
  commitment and confirms; an operator, on the console's review page, finds the registration by exam,
  province and review point, reads the candidate's education and rejects it with a listed reason and
  words of their own. The candidate sees both reasons on the status page, edits the registration
  (another review point, more work years) and confirms again; the operator approves it. Meanwhile a
  decision on a page someone else already decided is refused as stale (412, "已被他人处理，请刷新"),
  and the rest of the queue is approved in bulk.
- A candidate in the integrity archive may not sign the commitment: the page says so and offers the
  general procedure; their major is outside the level's lists, so the page shows the allowed majors and
  asks for an acknowledgement; the registration goes to a person's review. The candidate then withdraws
  the confirmation and gives the registration up, each asked first in a dialog.

The exams' texts, review rules, eligibility rules and the archive are set through the admin API, the
review points in SQL (before the gateways load the exam).
"""

from __future__ import annotations

import re
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from core import db
from core.timeutil import utcnow
from tests.browser.checks import admin, check_page, give_photo, publish_documents, register_account, skip_captcha
from tests.browser.conftest import DESKTOP, PHONE, Shots, Stack, in_ci, run_async
from tests.factories import make_exam
from tests.gateway.candidate_http import PASSWORD
from tests.gateway.seat_stack import make_candidates, make_registrations

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(150)

REVIEW_POINTS = [("37", "济南市", "济南市人事考试中心审核点", "经十路 1 号"),
                 ("37", "青岛市", "青岛市人事考试中心审核点", "香港中路 2 号")]


async def exam_with_review_points(dsn: str) -> tuple[int, dict[str, int]]:
    """An open exam with sites in provinces 11 and 37 and two review points in 37; (exam id, point name → id)."""
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 10), ("37", 10)])
        points = {}
        for province, city, name, address in REVIEW_POINTS:
            points[name] = await conn.fetchval(
                "INSERT INTO review_points (exam_id, province, city, name, address) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING id", exam_id, province, city, name, address)
        return exam_id, points
    finally:
        await conn.close()


async def others_under_review(dsn: str, exam_id: int, count: int) -> list[int]:
    """``count`` other candidates' registrations in province 37 waiting for an online review."""
    conn = await db.connect(dsn)
    try:
        ids = await make_registrations(conn, exam_id, await make_candidates(conn, count), province="37",
                                       status="under_review")
        await conn.execute(
            """UPDATE registrations SET review_mode = 'online', submitted_at = now(),
                      reasons = '[{"code": "manual_review", "message": "本地区实行人工资格审核"}]'::jsonb
                WHERE id = ANY($1::bigint[])""", ids)
        return ids
    finally:
        await conn.close()


def signed_in_candidate(stack: Stack, page: Page, *, photo: bool = True, **changes: Any) -> dict[str, Any]:
    """A candidate registered and signed in through the API (the sign-in page has its own tests), the
    session handed to ``page`` as the sign-in page would keep it; the account's body. With ``photo`` the
    candidate has an approved photo (confirming needs one; the photo page has its own tests)."""
    no_captcha = skip_captcha(stack)
    account = register_account(stack, no_captcha, **changes)
    if photo:
        give_photo(stack, account["username"])
    status, session = stack.call("POST", "/api/v1/sessions", {"username": account["username"], "password": PASSWORD},
                                 headers=no_captcha)
    assert status == 201, session
    page.goto(stack.url + "/")
    page.evaluate("([token, username]) => { sessionStorage.setItem('eg.session.token', token); "
                  "sessionStorage.setItem('eg.session.username', username); }", [session["token"], account["username"]])
    account["token"] = session["token"]
    return account


def review_version(stack: Stack, registration_id: int) -> str:
    """The registration's ETag as the operators' API gives it."""
    request = urllib.request.Request(f"{stack.url}/admin/api/v1/registrations/{registration_id}",
                                     headers=admin(stack))
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.headers["ETag"])


# --- a person's review -------------------------------------------------------------------------------------

def test_an_operator_rejects_the_candidate_edits_and_confirms_again_and_the_operator_approves(
        stack: Stack, context_factory: Any, shots: Shots) -> None:
    exam_id, points = run_async(exam_with_review_points(stack.dsn))
    stale, *bulk = run_async(others_under_review(stack.dsn, exam_id, 3))
    stack.wait_exam(exam_id)
    publish_documents(stack, exam_id)
    status, _ = stack.call("PUT", f"/admin/api/v1/exams/{exam_id}/review-rules/37", {"review_mode": "online"},
                           headers=admin(stack))
    assert status == 200
    page = shots.watch(context_factory(PHONE).new_page())
    signed_in_candidate(stack, page, name="王审核")

    # Enrol in province 37, choosing a review point; sign the commitment and confirm: an online review.
    page.goto(f"{stack.url}/exams/{exam_id}/enrol")
    point = page.get_by_label("资格审核点")
    expect(point).to_be_hidden()
    page.get_by_label("报考省份").select_option("37")
    expect(point).to_be_visible()
    point.select_option(str(points["济南市人事考试中心审核点"]))
    page.get_by_label("工作所在城市").fill("济南市")
    page.get_by_label("经济基础知识（101）").check()
    page.get_by_label("从事相关工作年限（年）").fill("1")
    page.get_by_role("button", name="提交报名信息").click()
    page.wait_for_url(re.compile(r".*/registrations/\d+\?from=enrol$"))
    registration_id = int(page.url.split("/registrations/")[1].split("?")[0])
    expect(page.locator("[data-details]")).to_contain_text("济南市人事考试中心审核点（济南市 · 经十路 1 号）")
    page.get_by_role("link", name="确认报名信息").click()
    page.get_by_role("button", name="我已阅知并同意").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=confirm")
    expect(page.get_by_role("heading", name="当前状态：网上审核中")).to_be_visible()
    expect(page.locator("[data-notice]")).to_have_text("报名信息已确认，已提交考试机构网上审核。")
    expect(page.locator("[data-reasons]")).to_contain_text("本地区实行人工资格审核")
    expect(page.get_by_role("list", name="报名流程").locator("li[aria-current=step]")).to_contain_text("资格审核")
    expect(page.get_by_role("button", name="撤回确认")).to_be_visible()
    check_page(page)
    shots.take(page, "status-under-review")

    # The operator signs in to the console, and its link opens the review page already signed in.
    console = shots.watch(context_factory(DESKTOP).new_page())
    console.goto(stack.url + "/console")
    console.get_by_label("管理令牌").fill(stack.admin_token())
    console.get_by_role("button", name="进入控制台").click()
    console.get_by_role("link", name="资格审核（报名审核队列）").click()
    console.wait_for_url(stack.url + "/console/reviews")
    expect(console.locator("[data-whoami]")).to_contain_text("审核范围：全国")
    console.get_by_label("考试").select_option(str(exam_id))
    console.get_by_label("省份").select_option("37")
    console.get_by_role("button", name="查询").click()
    queue = console.locator("[data-queue] tr")
    expect(queue).to_have_count(4)
    console.get_by_label("审核点").select_option(str(points["济南市人事考试中心审核点"]))
    console.get_by_role("button", name="查询").click()
    expect(queue).to_have_count(1)
    expect(queue.first).to_contain_text("王审核")
    check_page(console)
    shots.take(console, "reviews-queue-by-point")

    # The details show the candidate's education; a rejection needs a reason; rejected with two.
    console.get_by_role("button", name=f"查看报名 {registration_id}（王审核）").click()
    details = console.locator("[data-detail]")
    expect(details).to_contain_text("经济学")
    expect(details).to_contain_text("北京大学")
    expect(details.locator("[data-educations]")).to_contain_text("本科")
    expect(details).to_contain_text("已签署（第 1 版")
    console.get_by_role("button", name="审核不通过").click()
    expect(console.locator("#reasons-error")).to_have_text("请至少选择或填写一条不通过原因")
    console.get_by_label("证明材料不全或不清晰").check()
    console.get_by_label("其他原因（每行一条，将告知考生）").fill("请补充相关工作年限证明")
    check_page(console)
    shots.take(console, "reviews-details")
    console.get_by_role("button", name="审核不通过").click()
    expect(console.locator("[data-notice]")).to_have_text(f"报名 {registration_id} 审核不通过，原因已告知考生。")
    expect(details).to_contain_text("无需审核")
    expect(queue).to_have_count(1)
    expect(queue.first).to_contain_text("没有符合条件的报名")

    # The candidate reads both reasons, edits the registration and confirms again.
    page.goto(f"{stack.url}/registrations/{registration_id}")
    expect(page.get_by_role("heading", name="当前状态：审核未通过")).to_be_visible()
    reasons = page.locator("[data-reasons]")
    expect(reasons).to_contain_text("审核未通过的原因")
    expect(reasons).to_contain_text("证明材料不全或不清晰")
    expect(reasons).to_contain_text("请补充相关工作年限证明")
    expect(page.locator(".flow__step--failed")).to_contain_text("资格审核")
    check_page(page)
    shots.take(page, "status-rejected")
    page.get_by_role("link", name="修改报名信息").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/edit")
    expect(page.get_by_role("heading", name="修改报名信息")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("请补充相关工作年限证明")
    expect(page.get_by_label("报考省份")).to_be_disabled()
    expect(page.get_by_label("报考省份")).to_have_value("37")
    expect(page.get_by_label("工作所在城市")).to_have_value("济南市")
    expect(page.get_by_label("经济基础知识（101）")).to_be_checked()
    expect(page.get_by_label("资格审核点")).to_have_value(str(points["济南市人事考试中心审核点"]))
    page.get_by_label("从事相关工作年限（年）").fill("")
    page.get_by_role("button", name="保存修改").click()
    expect(page.locator("#work_years-error")).to_have_text("此项必填")
    page.get_by_label("从事相关工作年限（年）").fill("6")
    page.get_by_label("资格审核点").select_option(str(points["青岛市人事考试中心审核点"]))
    check_page(page)
    shots.take(page, "edit")
    page.get_by_role("button", name="保存修改").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=edit")
    expect(page.get_by_role("heading", name="当前状态：待确认")).to_be_visible()
    expect(page.locator("[data-details]")).to_contain_text("6 年")
    expect(page.locator("[data-details]")).to_contain_text("青岛市人事考试中心审核点")
    page.get_by_role("link", name="确认报名信息").click()
    expect(page.locator("[data-signed]")).to_contain_text("签署本告知承诺书")
    page.get_by_role("button", name="确认报名信息并提交审核").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=confirm")
    expect(page.get_by_role("heading", name="当前状态：网上审核中")).to_be_visible()

    # A decision on a registration someone else decided meanwhile: 412, said plainly, and refreshed.
    console.get_by_label("审核点").select_option("")
    console.get_by_role("button", name="查询").click()
    expect(queue).to_have_count(4)
    console.get_by_role("button", name=re.compile(rf"^查看报名 {stale}（")).click()
    expect(console.locator("[data-detail-title]")).to_contain_text(f"报名号 {stale}")
    status, body = stack.call("POST", f"/admin/api/v1/registrations/{stale}/review", {"decision": "approve"},
                              headers={**admin(stack), "If-Match": review_version(stack, stale)})
    assert status == 200, body
    console.get_by_role("button", name="审核通过").click()
    decision_alert = console.locator("[data-decision] [data-alert]")
    expect(decision_alert).to_contain_text("已被他人处理，请刷新。")
    shots.take(console, "reviews-stale")
    console.get_by_role("button", name="刷新").click()
    expect(details).to_contain_text("该报名当前状态为“审核通过”，无需审核。")
    expect(decision_alert).to_be_hidden()
    expect(queue).to_have_count(3)

    # The candidate's registration approved on its own; the other two in bulk.
    console.get_by_role("button", name=f"查看报名 {registration_id}（王审核）").click()
    expect(details).to_contain_text("青岛市人事考试中心审核点")
    expect(details.locator("[data-detail-history]")).to_contain_text("审核决定 → 审核未通过")
    console.get_by_role("button", name="审核通过").click()
    expect(console.locator("[data-notice]")).to_have_text(f"报名 {registration_id} 已审核通过。")
    expect(queue).to_have_count(2)
    bulk_button = console.get_by_role("button", name=re.compile("^批量通过所选"))
    expect(bulk_button).to_be_disabled()
    console.get_by_label("全选本页待审核的报名").check()
    expect(bulk_button).to_have_text("批量通过所选（2 条）")
    check_page(console)
    shots.take(console, "reviews-bulk")
    bulk_button.click()
    expect(console.locator("[data-notice]")).to_have_text("已批量审核通过 2 条报名。")
    expect(queue.first).to_contain_text("没有符合条件的报名")
    for other in bulk:
        _, found = stack.call("GET", f"/admin/api/v1/registrations/{other}", headers=admin(stack))
        assert found["status"] == "approved"

    # The candidate is approved and goes on to the seats.
    page.goto(f"{stack.url}/registrations/{registration_id}")
    expect(page.get_by_role("heading", name="当前状态：审核通过")).to_be_visible()
    expect(page.get_by_role("link", name="选择考点")).to_have_attribute(
        "href", f"/exams/{exam_id}/queue?registration={registration_id}")
    expect(page.locator("[data-history]")).to_contain_text("资格审核")
    shots.take(page, "status-approved-by-operator")


# --- the commitment refused, the major acknowledged ----------------------------------------------------------

def test_an_archived_candidate_confirms_by_the_general_procedure_and_acknowledges_the_major(
        stack: Stack, context_factory: Any, shots: Shots) -> None:
    exam_id, _ = run_async(exam_with_review_points(stack.dsn))
    stack.wait_exam(exam_id)
    publish_documents(stack, exam_id)
    status, body = stack.call("PUT", f"/admin/api/v1/exams/{exam_id}/eligibility/mid", {
        "paths": [{"education": "bachelor"}], "majors_same": ["金融学", "金融工程"],
        "majors_related": ["国际经济与贸易"]}, headers=admin(stack))
    assert status == 200, body
    page = shots.watch(context_factory(PHONE).new_page())
    account = signed_in_candidate(stack, page)  # studied 经济学: outside both lists
    today = utcnow().date()
    status, body = stack.call("POST", "/admin/api/v1/integrity-records", {"records": [{
        "id_number": account["id_number"], "violation": "2024 年考试违纪", "starts_on": str(today - timedelta(days=30)),
        "ends_on": str(today + timedelta(days=365))}]}, headers=admin(stack))
    assert status == 201, body
    status, created = stack.call("POST", "/api/v1/registrations", {
        "exam_id": exam_id, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin",
        "subjects": ["101", "102"], "work_years": 3}, headers={"Authorization": f"Bearer {account['token']}"})
    assert status == 201, created
    registration_id = created["registration_id"]

    # Signing is refused with the archive's reason, and the general procedure offered.
    page.goto(f"{stack.url}/registrations/{registration_id}/commitment")
    page.get_by_role("button", name="我已阅知并同意").click()
    refusal = page.locator("[data-refusal]")
    expect(refusal).to_be_visible()
    expect(refusal.get_by_role("heading", name="不能使用告知承诺制")).to_be_visible()
    expect(refusal).to_contain_text("您在诚信档案库记录期内，不能使用告知承诺制")
    expect(refusal).to_contain_text(f"诚信档案记录期至 {today + timedelta(days=365)}")
    expect(page.get_by_role("button", name="我已阅知并同意")).to_be_hidden()
    check_page(page)
    shots.take(page, "commitment-refused")
    page.get_by_role("button", name="按一般程序提交资格审核").click()

    # The major outside the lists: the allowed majors shown, an acknowledgement asked for.
    mismatch = page.locator("[data-mismatch]")
    expect(mismatch).to_be_visible()
    expect(mismatch).to_contain_text("所学专业“经济学”不在该级别的专业目录内")
    expect(mismatch).to_contain_text("金融学、金融工程")
    expect(mismatch).to_contain_text("国际经济与贸易")
    expect(refusal).to_be_hidden()
    mismatch.get_by_role("button", name="确认报名信息并提交审核").click()
    expect(page.locator("#acknowledge-error")).to_have_text("请勾选此项以确认继续报名")
    expect(page.get_by_label("我已知晓所学专业不在该级别的专业目录内")).to_be_focused()
    check_page(page)
    shots.take(page, "major-mismatch")
    page.get_by_label("我已知晓所学专业不在该级别的专业目录内").check()
    mismatch.get_by_role("button", name="确认报名信息并提交审核").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=confirm")
    expect(page.get_by_role("heading", name="当前状态：网上审核中")).to_be_visible()
    reasons = page.locator("[data-reasons]")
    expect(reasons).to_contain_text("需人工审核的原因")
    expect(reasons).to_contain_text("其他专业")
    expect(reasons).to_contain_text("在诚信档案库记录期内")
    expect(page.locator("[data-details]")).to_contain_text("未签署")
    shots.take(page, "status-manual-review")

    # Withdraw the confirmation (asked first), then give the registration up (kept the first time).
    page.get_by_role("button", name="撤回确认").click()
    dialog = page.get_by_role("dialog", name="撤回确认")
    expect(dialog).to_contain_text("已保留的考点座位将释放")
    expect(dialog.get_by_role("button", name="取消")).to_be_focused()
    dialog.get_by_role("button", name="确定撤回").click()
    expect(page.locator("[data-notice]")).to_have_text("已撤回确认，报名信息可以修改，修改后请重新确认。")
    expect(page.get_by_role("heading", name="当前状态：待确认")).to_be_visible()
    page.get_by_role("button", name="放弃报名").click()
    dialog = page.get_by_role("dialog", name="放弃报名")
    expect(dialog).to_contain_text("不能恢复")
    check_page(page)
    shots.take(page, "cancel-dialog")
    dialog.get_by_role("button", name="取消").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", name="当前状态：待确认")).to_be_visible()
    page.get_by_role("button", name="放弃报名").click()
    dialog.get_by_role("button", name="确定放弃报名").click()
    expect(page.get_by_role("heading", name="当前状态：已放弃报名")).to_be_visible()
    expect(page.locator("[data-notice]")).to_have_text("您已放弃本次报名。")
    expect(page.get_by_role("link", name="返回首页")).to_be_visible()
    expect(page.locator("[data-history]")).to_contain_text("放弃报名")
    shots.take(page, "cancelled")

    # A cancelled registration's other pages send the candidate back to its status.
    page.goto(f"{stack.url}/registrations/{registration_id}/seat")
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/seat")
    expect(page.get_by_role("alert")).to_contain_text("该报名已取消，不能选择考点。")
    page.goto(f"{stack.url}/registrations/{registration_id}/commitment")
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}")
