"""Candidates and an operator in headless Chromium, against the running gateway, worker and payment simulator.

- A candidate on a phone registers (the phone proven by the code it received; first with mistakes, shown
  next to the inputs), signs in
  (the proof-of-work solved in the background), enrols and lands on the registration's status page,
  which asks for a photo; uploads one on the photo page (previewed first, approved and locked), reads
  the exam's notice and signs its commitment (我已阅知并同意), is approved by the automatic
  review, waits in the waiting room behind others, holds a seat with the keyboard, pays at the
  simulator's cashier page and comes back to "paid" and the ticket number, looks the admission
  ticket up and downloads its PDF, and finally asks to give the registration up (a request to the
  exam authority once paid).
- Another candidate looks a score up (a wrong name first, then by id number and by ticket number).
- A candidate whose account took wrong passwords is asked for an image captcha on the sign-in page
  and signs in with it.
- An operator signs in to the console, sees the live figures, lowers a throttle (a bad value is
  named next to its input first), and the candidate's page then shows the 429 message with when to
  retry; a stale edit gets the 412 message; a maintenance switch shows on the candidate page as a 503.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from captcha import keys as captcha_keys
from core import db
from core.timeutil import utcnow
from gateway.liveconfig import DEFAULT
from tests.browser.checks import check_page, delivered_code, photo_file, publish_documents, register_account
from tests.browser.conftest import DESKTOP, PHONE, Shots, Stack, in_ci, run_async
from tests.factories import make_exam
from tests.gateway.candidate_http import PASSWORD, phone, resident_id
from tests.gateway.seat_stack import make_candidates, make_registrations, make_sessions

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(150)

QUEUE_AHEAD = 8


def invalid_check_digit(id_number: str) -> str:
    """The same resident id with a wrong last character."""
    return id_number[:-1] + ("1" if id_number[-1] != "1" else "2")


async def open_exam_with_print_window(dsn: str, name: str) -> tuple[int, dict[str, int]]:
    """An exam open for registration whose ticket print window is open too; (exam id, site name → id)."""
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 3), ("11", 40), ("37", 10)])
        now = utcnow()
        await conn.execute("UPDATE exams SET name = $2, ticket_print_opens_at = $3, ticket_print_closes_at = $4 "
                           "WHERE id = $1", exam_id, name, now - timedelta(hours=1), now + timedelta(days=1))
        rows = await conn.fetch("SELECT id, name FROM exam_sites WHERE exam_id = $1", exam_id)
        return exam_id, {row["name"]: row["id"] for row in rows}
    finally:
        await conn.close()


async def waiting_candidates(dsn: str, redis_url: str, count: int) -> list[str]:
    """Session tokens of ``count`` other candidates."""
    conn = await db.connect(dsn)
    try:
        ids = await make_candidates(conn, count)
    finally:
        await conn.close()
    return await make_sessions(redis_url, ids)


async def ticket_of(dsn: str, registration_id: int) -> str | None:
    """The admission ticket number PostgreSQL allocated to the registration."""
    conn = await db.connect(dsn)
    try:
        return await conn.fetchval("SELECT ticket_no FROM admission_tickets WHERE registration_id = $1",
                                   registration_id)
    finally:
        await conn.close()


async def scored_exam(dsn: str, count: int = 6) -> tuple[int, list[dict[str, Any]]]:
    """An exam in its print window with scores released.

    ``count`` ticketed candidates, scoring 55 + 1 × index in 101 and 72.5 in 102.
    """
    conn = await db.connect(dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 30)])
        now = utcnow()
        await conn.execute("UPDATE exams SET ticket_print_opens_at = $2, ticket_print_closes_at = $3, "
                           "score_release_at = $4 WHERE id = $1", exam_id, now - timedelta(hours=1),
                           now + timedelta(days=1), now - timedelta(minutes=1))
        site_id = await conn.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
        candidates = await make_candidates(conn, count)
        registrations = await make_registrations(conn, exam_id, candidates)
        await conn.execute("UPDATE registrations SET status = 'paid', site_id = $2, subjects = '{101,102}' "
                           "WHERE id = ANY($1::bigint[])", registrations, site_id)
        people = []
        for index, (candidate, registration) in enumerate(zip(candidates, registrations, strict=True)):
            ticket_no = f"{exam_id:04d}11{site_id:06d}{index + 1:05d}"
            await conn.execute("INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, "
                               "seat_no) VALUES ($1, $2, $3, $4, 1, $5)", ticket_no, registration, exam_id, site_id,
                               index + 1)
            await conn.execute("INSERT INTO scores (registration_id, exam_id, subject_code, score) "
                               "VALUES ($1, $2, '101', $3), ($1, $2, '102', 72.5)", registration, exam_id, 55 + index)
            row = await conn.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", candidate)
            people.append({"name": row["name"], "id_number": row["id_number"], "ticket_no": ticket_no})
        return exam_id, people
    finally:
        await conn.close()


# --- 1. the candidate's journey ----------------------------------------------------------------------------

def test_a_candidate_registers_signs_the_commitment_queues_holds_a_seat_pays_and_downloads_the_ticket(
        stack: Stack, context_factory: Any, shots: Shots, tmp_path: Path) -> None:
    exam_name = f"2026 年度经济专业技术资格考试（{secrets.token_hex(2)}）"
    exam_id, sites = run_async(open_exam_with_print_window(stack.dsn, exam_name))
    stack.wait_exam(exam_id)
    publish_documents(stack, exam_id)
    # The server asks for the proof-of-work on the account routes; the queue admits one every two seconds.
    stack.set_live({"captcha": {"routes": {"accounts.create": "pow", "sessions.create": "pow",
                                           "sms_codes.create": "pow"}},
                    "queue": {"exams": {str(exam_id): {"enabled": True, "admit_per_s": 0.5}}}})
    others = run_async(waiting_candidates(stack.dsn, stack.redis_url, QUEUE_AHEAD))
    page = shots.watch(context_factory(PHONE).new_page())

    # Register: the phone gets its code; a wrong check digit and a short password are named next to their inputs.
    username = "k" + secrets.token_hex(5)
    id_number = resident_id()
    mobile = phone()
    page.goto(stack.url + "/register")
    page.get_by_label("用户名", exact=True).fill(username)
    page.get_by_label("密码", exact=True).fill("abc")
    page.get_by_label("确认密码", exact=True).fill("abc")
    page.get_by_label("姓名", exact=True).fill("李晓明")
    page.get_by_label("请再次输入姓名").fill("李晓明")
    page.get_by_label("证件类型").select_option("resident_id")
    page.get_by_label("证件号码", exact=True).fill(invalid_check_digit(id_number))
    page.get_by_label("请再次输入证件号码").fill(invalid_check_digit(id_number))
    page.get_by_label("手机号码").fill(mobile)
    page.get_by_role("button", name="获取验证码").click()
    expect(page.locator("[data-code-status]")).to_contain_text(f"验证码已发送至 {mobile[:3]}****{mobile[7:]}")
    page.get_by_label("短信验证码").fill(delivered_code(stack, mobile, after=0))
    page.get_by_label("电子邮箱").fill("lixiaoming@example.com")
    page.get_by_label("问题", exact=True).fill("我的小学校名？")
    page.get_by_label("答案", exact=True).fill("实验小学")
    page.get_by_label("学历证书编号").fill("10001120120600123")
    page.get_by_label("毕业学校").fill("北京大学")
    page.get_by_label("毕业年月").fill("2012-06")
    page.get_by_label("所学专业").fill("经济学")
    expect(page.locator('[data-captcha="accounts.create"] [data-pow-state]')).to_have_text("✓ 安全验证已完成",
                                                                                         timeout=20_000)
    check_page(page)
    page.get_by_role("button", name="注册").click()
    expect(page.get_by_role("alert")).to_contain_text("填写的信息有误")
    expect(page.locator("#id_number-error")).to_have_text("证件号码校验位不正确，请核对")
    expect(page.locator("#password-error")).to_have_text("密码至少 8 位")
    expect(page.get_by_label("证件号码", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("证件号码", exact=True)).to_have_attribute("aria-describedby", "id_number-error")
    expect(page.get_by_label("手机号码")).not_to_have_attribute("aria-invalid", "true")
    shots.take(page, "register-errors")
    page.get_by_label("证件号码", exact=True).fill(id_number)
    page.get_by_label("请再次输入证件号码").fill(id_number)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_label("确认密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="注册").click()

    # Sign in: the proof-of-work is solved in the background; the page only waits for it.
    page.wait_for_url(f"{stack.url}/login?registered={username}")
    expect(page.get_by_role("status").first).to_have_text("注册成功，请登录。")
    expect(page.get_by_label("用户名")).to_have_value(username)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    check_page(page)
    shots.take(page, "login")
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(stack.url + "/")
    expect(page.get_by_text(username)).to_be_visible()
    enrol = page.get_by_role("link", name=f"网上报名：{exam_name}")
    expect(enrol).to_be_visible()
    check_page(page)
    shots.take(page, "home")
    enrol.click()

    # Enrol: a draft, and the registration's status page says what comes next.
    page.wait_for_url(f"{stack.url}/exams/{exam_id}/enrol")
    page.get_by_label("报考省份").select_option("11")
    page.get_by_label("工作所在城市").fill("北京市")
    page.get_by_label("经济基础知识（101）").check()
    page.get_by_label("金融专业知识和实务（102）").check()
    page.get_by_label("从事相关工作年限（年）").fill("6")
    expect(page.get_by_label("资格审核点")).to_be_hidden()  # the province has no review point
    check_page(page)
    shots.take(page, "enrol")
    page.get_by_role("button", name="提交报名信息").click()
    page.wait_for_url(re.compile(r".*/registrations/\d+\?from=enrol$"))
    registration_id = int(page.url.split("/registrations/")[1].split("?")[0])
    expect(page.get_by_role("heading", name="当前状态：待确认")).to_be_visible()
    expect(page.locator("[data-notice]")).to_contain_text("报名信息已保存")
    flow = page.get_by_role("list", name="报名流程")
    expect(flow.locator("li")).to_have_count(6)
    expect(flow.locator("li[aria-current=step]")).to_contain_text("阅读告知/签署承诺")
    expect(page.locator("[data-details]")).to_contain_text("经济基础知识、金融专业知识和实务")
    photo_box = page.locator("[data-photo-box]")
    expect(photo_box).to_contain_text("尚未上传报名照片")
    check_page(page)
    shots.take(page, "status-draft")

    # The photo page: the rules, the chosen file previewed in the page, the upload approved and locked.
    photo_box.get_by_role("link", name="上传照片").click()
    page.wait_for_url(f"{stack.url}/photo?registration={registration_id}")
    expect(page.get_by_role("heading", name="照片要求")).to_be_visible()
    expect(page.locator("[data-none]")).to_have_text("您尚未上传报名照片。")
    page.get_by_label("选择照片文件（JPG，不超过 2 MB）").set_input_files(photo_file(tmp_path))
    expect(page.get_by_role("img", name="待上传照片预览")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("[data-preview-caption]")).to_contain_text("413×578 像素")
    check_page(page)
    shots.take(page, "photo-preview")
    page.get_by_role("button", name="上传照片").click()
    expect(page.locator("[data-notice]")).to_contain_text("系统检测通过，照片已锁定")
    current = page.locator("[data-current-details]")
    expect(current).to_contain_text("审核通过")
    expect(current).to_contain_text("已锁定")
    expect(page.locator("[data-upload]")).to_be_hidden()
    check_page(page)
    shots.take(page, "photo-approved")
    page.get_by_role("link", name="返回报名状态").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}")
    expect(page.get_by_role("heading", name="当前状态：待确认")).to_be_visible()
    expect(photo_box).to_be_hidden()

    # The notice, the commitment, 我已阅知并同意: signed, confirmed, approved by the automatic review.
    page.get_by_role("link", name="确认报名信息").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/commitment")
    expect(page.get_by_role("heading", name="报名须知", exact=True)).to_be_visible()
    expect(page.locator("[data-notice-text]")).to_contain_text("报名信息确认后即进行资格审核")
    expect(page.get_by_role("heading", name="告知承诺书")).to_be_visible()
    expect(page.locator("[data-commitment-text] p")).to_have_count(2)
    expect(page.get_by_role("link", name="暂不提交")).to_have_attribute("href", f"/registrations/{registration_id}")
    check_page(page)
    shots.take(page, "commitment")
    page.get_by_role("button", name="我已阅知并同意").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=confirm")
    expect(page.get_by_role("heading", name="当前状态：审核通过")).to_be_visible()
    expect(page.locator("[data-notice]")).to_have_text("报名信息已确认，资格审核已通过。")
    expect(flow.locator("li[aria-current=step]")).to_contain_text("选择考点")
    expect(page.locator("[data-details]")).to_contain_text("已签署（第 1 版")
    expect(page.locator("[data-history]")).to_contain_text("签署告知承诺书")
    check_page(page)
    shots.take(page, "status-approved")

    # Others take their places in the waiting room just before the candidate goes on to the seats.
    for token in others:
        status, _ = stack.call("POST", f"/api/v1/exams/{exam_id}/queue", headers={"Authorization": f"Bearer {token}"})
        assert status == 202
    page.get_by_role("link", name="选择考点").click()

    # The waiting room: position, people ahead and ETA update by themselves, then on to the seats.
    page.wait_for_url(f"{stack.url}/exams/{exam_id}/queue?registration={registration_id}")
    expect(page.locator("[data-ahead]")).to_have_text(re.compile(r"^[1-9][0-9]* 人$"), timeout=10_000)
    expect(page.get_by_role("status")).to_contain_text("您前面还有")
    expect(page.locator("[data-eta]")).to_have_text(re.compile(r"秒"))
    check_page(page)
    shots.take(page, "queue")
    # The operator opens the gate wider; the page notices by itself at its next poll.
    stack.set_live({"queue": {"exams": {str(exam_id): {"admit_per_s": 50}}}})
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/seat", timeout=30_000)

    # Seats with live availability, chosen with the keyboard; the hold counts down.
    second = page.get_by_label("第2考点")
    expect(second).to_be_visible()
    expect(page.locator("label.site", has_text="第2考点")).to_contain_text("余座 40 / 40")
    page.get_by_label("第1考点").focus()
    page.keyboard.press("ArrowDown")
    expect(second).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="座位已保留")).to_be_visible()
    expect(page.get_by_role("timer")).to_have_text(re.compile(r"分 \d\d 秒"))
    expect(page.locator("label.site", has_text="第2考点")).to_contain_text("余座 39 / 40", timeout=12_000)
    check_page(page)
    shots.take(page, "seat-held")
    page.get_by_role("button", name="去缴费").click()

    # Pay: to the simulator's cashier page and back.
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/pay")
    expect(page.locator("[data-amount]")).to_have_text("¥112.00")
    expect(page.get_by_label("支付宝")).to_be_checked()
    check_page(page)
    shots.take(page, "pay")
    page.get_by_role("button", name="去支付").click()
    page.wait_for_url(re.compile(re.escape(stack.paysim.url) + r"/pay/.+return_url=.+"))
    shots.take(page, "cashier")
    page.get_by_role("button", name="支付").click()
    expect(page.get_by_text("支付成功")).to_be_visible()
    page.get_by_role("link", name="返回商户").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/pay?returned=1")
    expect(page.get_by_role("heading", name="缴费成功")).to_be_visible(timeout=30_000)
    ticket_no = run_async(ticket_of(stack.dsn, registration_id))
    assert ticket_no is not None and re.fullmatch(r"[0-9]{17}", ticket_no)  # exam 4, province 2, site 6, sequence 5
    expect(page.locator("[data-ticket-no]")).to_have_text(ticket_no)
    assert ticket_no[6:12] == f"{sites['第2考点']:06d}"
    check_page(page)
    shots.take(page, "paid")

    # The admission ticket and its PDF.
    page.get_by_role("link", name="前往准考证打印").click()
    page.wait_for_url(f"{stack.url}/tickets?exam={exam_id}")
    expect(page.get_by_label("考试")).to_have_value(str(exam_id))
    page.get_by_label("姓名").fill("李晓明")
    page.get_by_label("证件号码").fill(id_number)
    page.get_by_role("button", name="查询准考证").click()
    result = page.locator("[data-result]")
    expect(result).to_be_visible(timeout=20_000)
    expect(result).to_contain_text(ticket_no)
    expect(result).to_contain_text("第2考点")
    expect(result.get_by_role("row")).to_have_count(3)  # the header and two subjects
    check_page(page)
    shots.take(page, "ticket")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="下载准考证（PDF）").click()
    download = download_info.value
    pdf = shots.directory / "ticket.pdf"
    download.save_as(pdf)
    assert download.suggested_filename == f"ticket-{ticket_no}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert ticket_no in text

    # 放弃报名 after payment: asked first, then a request the exam authority decides.
    page.goto(f"{stack.url}/registrations/{registration_id}")
    expect(page.get_by_role("heading", name="当前状态：已缴费")).to_be_visible()
    expect(page.locator("[data-details]")).to_contain_text(ticket_no)
    page.get_by_role("button", name="申请放弃报名").click()
    dialog = page.get_by_role("dialog", name="申请放弃报名")
    expect(dialog).to_contain_text("提交考试机构审核")
    check_page(page)
    shots.take(page, "cancel-request-dialog")
    dialog.get_by_role("button", name="提交放弃报名申请").click()
    expect(page.locator("[data-notice]")).to_have_text("放弃报名申请已提交，等待考试机构审核。")
    expect(page.get_by_role("heading", name="当前状态：已缴费")).to_be_visible()
    expect(page.locator("[data-status-text]")).to_contain_text("等待考试机构审核")
    expect(page.get_by_role("button", name="申请放弃报名")).to_have_count(0)
    expect(page.locator("[data-history]")).to_contain_text("申请放弃报名")
    shots.take(page, "cancel-requested")


# --- 2. a score lookup ------------------------------------------------------------------------------------

def test_a_candidate_looks_up_scores(stack: Stack, context_factory: Any, shots: Shots) -> None:
    exam_id, people = run_async(scored_exam(stack.dsn))
    stack.wait_exam(exam_id)
    person = people[5]  # 60 in 101 (the pass mark), 72.5 in 102
    page = shots.watch(context_factory(DESKTOP).new_page())
    page.goto(f"{stack.url}/scores?exam={exam_id}")
    expect(page.get_by_label("考试")).to_have_value(str(exam_id))

    # The image captcha is there too ("either"): shown, refreshed, and left for the proof-of-work.
    page.get_by_role("button", name="验证较慢？改用图片验证码").click()
    image = page.get_by_role("img", name="图片验证码：请输入图中的 5 位数字")
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=15_000)
    first_src = image.get_attribute("src")
    page.get_by_role("button", name="换一张").click()
    expect(image).not_to_have_attribute("src", first_src or "", timeout=10_000)
    expect(page.get_by_label("请输入图中的 5 位数字")).to_be_visible()
    check_page(page)
    shots.take(page, "scores-image-captcha")
    page.get_by_role("button", name="改用自动验证").click()

    # A missing name is named next to its input (the captcha is not spent on it).
    page.get_by_label("证件号码", exact=True).fill(person["id_number"])
    page.get_by_role("button", name="查询成绩").click()
    expect(page.locator("#name-error")).to_have_text("此项必填")
    expect(page.get_by_label("姓名")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("姓名")).to_be_focused()

    # A wrong name: the one 404, in Chinese; submitted with the keyboard.
    page.get_by_label("姓名").fill("王不存在")
    page.get_by_label("证件号码", exact=True).press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("未查询到相关记录", timeout=20_000)
    shots.take(page, "scores-not-found")

    page.get_by_label("姓名").fill(person["name"])
    page.get_by_label("证件号码", exact=True).press("Enter")
    table = page.locator("[data-result]")
    expect(table).to_be_visible(timeout=20_000)
    expect(table).to_contain_text(person["ticket_no"])
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("经济基础知识")
    expect(rows.nth(0)).to_contain_text("60")
    expect(rows.nth(1)).to_contain_text("72.5")
    expect(table).to_contain_text("全部科目合格")
    check_page(page)
    shots.take(page, "scores")

    # By ticket number instead.
    page.get_by_label("按准考证号").check()
    expect(page.get_by_label("证件号码", exact=True)).to_be_hidden()
    page.get_by_label("准考证号", exact=True).fill(people[0]["ticket_no"])
    page.get_by_label("姓名").fill(people[0]["name"])
    page.get_by_role("button", name="查询成绩").click()
    expect(table).to_contain_text("有科目未达到合格标准", timeout=20_000)
    expect(rows.nth(0).locator(".fail")).to_have_text("不合格")


def test_wrong_passwords_make_the_sign_in_page_ask_for_an_image(stack: Stack, context_factory: Any,
                                                                 shots: Shots) -> None:
    admin = {"Authorization": f"Bearer {stack.admin_token()}"}
    status, issued = stack.call("POST", "/admin/api/v1/loadtest-tokens", {"ttl_s": 300}, headers=admin)
    assert status == 201
    skip_captcha = {"X-Loadtest-Token": issued["token"]}
    account = register_account(stack, skip_captcha)
    for _ in range(5):  # the default login-account burst, spent by someone guessing
        status, _ = stack.call("POST", "/api/v1/sessions", {"username": account["username"], "password": "Wrong#pass1"},
                               headers=skip_captcha)
        assert status == 401

    page = shots.watch(context_factory(PHONE).new_page())
    page.goto(stack.url + "/login")
    page.get_by_label("用户名").fill(account["username"])
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    expect(page.locator("[data-pow-state]")).to_have_text("✓ 安全验证已完成", timeout=20_000)
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("alert")).to_have_text("为保护账号安全，请完成图片验证码后重试。")
    expect(page.get_by_label("请输入图中的 5 位数字")).to_be_focused()
    image = page.get_by_role("img", name="图片验证码：请输入图中的 5 位数字")
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=15_000)
    expect(page.locator("[data-captcha-switch]")).to_have_count(0)  # the image, not the proof-of-work, from now on
    check_page(page)
    shots.take(page, "login-image-required")

    image_id = page.evaluate("() => document.querySelector('[data-captcha]')._captcha.imageId")
    with redis.Redis.from_url(stack.redis_url) as client:
        answer = client.get(captcha_keys.answer_key(image_id))
    assert answer is not None
    page.get_by_label("请输入图中的 5 位数字").fill(answer.decode())
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(stack.url + "/")
    expect(page.get_by_text(account["username"])).to_be_visible()


# --- 3. the operators' console ------------------------------------------------------------------------------

def test_an_operator_lowers_a_throttle_and_the_candidate_page_shows_the_429(
        stack: Stack, context_factory: Any, shots: Shots) -> None:
    exam_id, people = run_async(scored_exam(stack.dsn))
    stack.wait_exam(exam_id)
    person = people[1]
    console = shots.watch(context_factory(DESKTOP).new_page())
    try:
        console.goto(stack.url + "/console")
        console.get_by_label("管理令牌").fill("not-a-token")
        console.get_by_role("button", name="进入控制台").click()
        expect(console.locator("#token-error")).to_have_text("管理令牌无效，请核对后重试。")
        console.get_by_label("管理令牌").fill(stack.admin_token())
        console.get_by_label("管理令牌").press("Enter")
        expect(console.locator("[data-updated]")).to_contain_text("更新于", timeout=10_000)
        expect(console.locator('[data-figure="requests_per_s"]')).to_have_text(re.compile(r"^\d+(\.\d)?$"))
        expect(console.locator("[data-routes] tr").first).to_be_visible()
        expect(console.locator("[data-totals]")).to_have_attribute("aria-live", "polite")
        expect(console.locator("[data-process]")).to_contain_text("密码哈希池")
        check_page(console)
        shots.take(console, "console")

        # A bad value is named next to its input, and nothing is applied.
        rule = console.get_by_role("form", name="lookup-ip")
        rule.get_by_label("速率（次/周期）").fill("0")
        rule.get_by_role("button", name="保存规则 lookup-ip").click()
        expect(rule.locator("[data-error-for$='.rate']")).to_contain_text("须在 1 到")
        expect(rule.get_by_label("速率（次/周期）")).to_have_attribute("aria-invalid", "true")
        expect(console.get_by_role("alert")).to_contain_text("配置无效，未作任何更改")
        shots.take(console, "console-invalid")

        # Lower the lookup throttle to one a minute.
        rule.get_by_label("速率（次/周期）").fill("1")
        rule.get_by_label("突发").fill("1")
        rule.get_by_role("button", name="保存规则 lookup-ip").click()
        expect(console.locator("[data-notice]")).to_contain_text("限流规则 lookup-ip 已保存")
        audit = console.locator("[data-audit] tr").first
        expect(audit).to_contain_text("rate：60 → 1")
        expect(audit).to_contain_text("burst：20 → 1")
        version = int(console.locator("[data-config-version]").inner_text())
        shots.take(console, "console-throttle-lowered")
        stack.wait_config(version)

        # The candidate's page shows the 429 in Chinese, with when to retry.
        candidate = shots.watch(context_factory(PHONE).new_page())
        candidate.goto(f"{stack.url}/scores?exam={exam_id}")
        candidate.get_by_label("姓名").fill(person["name"])
        candidate.get_by_label("证件号码", exact=True).fill(person["id_number"])
        alert = candidate.get_by_role("alert")
        for _ in range(3):
            candidate.get_by_role("button", name="查询成绩").click()
            answered = candidate.locator("[data-result]:not([hidden]), [data-alert]:not([hidden])")
            expect(answered).to_have_count(1, timeout=20_000)
            if alert.is_visible():
                break
            expect(candidate.get_by_role("button", name="查询成绩")).to_be_enabled()
        expect(alert).to_contain_text("操作过于频繁，请稍后再试")
        expect(alert).to_contain_text(re.compile(r"请在 (\d+ 秒|1 分 00 秒)后（\d\d:\d\d:\d\d 之后）重试。"))
        expect(candidate.get_by_role("button", name="查询成绩")).to_be_disabled()
        check_page(candidate)
        shots.take(candidate, "candidate-429")

        # A change made meanwhile elsewhere: the console's save is refused (412) and it reloads.
        stack.set_live({"seats": {"hold_ttl_s": 1700}})
        console.locator("[data-others-form]").get_by_role("button", name="保存").click()
        expect(console.get_by_role("alert")).to_contain_text("配置已被其他操作员修改")
        expect(console.get_by_label("座位保留时长（秒）")).to_have_value("1700")
        shots.take(console, "console-stale-edit")

        # A maintenance switch: the candidate page shows the operator's message as a 503 with when to retry.
        console.get_by_label("接口名").fill("scores.lookup")
        console.get_by_label("提示信息").fill("成绩查询系统维护中，请稍后再试")
        console.get_by_role("button", name="开启维护").click()
        expect(console.locator("[data-maintenance-list]")).to_contain_text("成绩查询系统维护中")
        stack.wait_config(int(console.locator("[data-config-version]").inner_text()))
        candidate.reload()
        candidate.get_by_label("姓名").fill(person["name"])
        candidate.get_by_label("证件号码", exact=True).fill(person["id_number"])
        candidate.get_by_role("button", name="查询成绩").click()
        expect(alert).to_contain_text("成绩查询系统维护中，请稍后再试", timeout=20_000)
        expect(alert).to_contain_text("请在 1 分 00 秒后")
        shots.take(candidate, "candidate-maintenance-503")
        console.get_by_role("button", name="解除 scores.lookup").click()
        expect(console.locator("[data-maintenance-list]")).to_contain_text("当前没有维护中的接口")
        shots.take(console, "console-audit")
    finally:
        stack.set_live({"ratelimit": {"rules": DEFAULT["ratelimit"]["rules"]}, "maintenance": {"scores.lookup": None}})
