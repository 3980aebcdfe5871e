"""Registration photos in headless Chromium: the candidate's photo page, the status page and the console's photo review.

- A candidate whose registration has no photo is told so on the status page, and confirming is refused
  (409 photo_required) with a link to the photo page. The photo page (a proof-of-work captcha in the
  X-Captcha header) takes a photo on a grey background: kept, 待人工审核, with the checks' reason. An
  operator on /console/photos sees it with the candidate's name and masked id, and rejects it with a
  listed reason; the candidate reads that reason, uploads a good photo (approved and locked at once),
  confirms the registration and downloads the registration form (报名表), a PDF.
- A candidate with a locked photo asks to change it; the operator grants the request on the console;
  the one upload it allows goes to review; a second one replaces it before the operator decides, so the
  operator's approval of the first is refused (photo_superseded), and an approval someone made meanwhile
  is refused too (already_reviewed); the photo ends approved and locked, and another upload is 409.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.browser.checks import admin, check_page, give_photo, photo_file, publish_documents
from tests.browser.conftest import DESKTOP, PHONE, Shots, Stack, in_ci, run_async
from tests.browser.test_lifecycle import exam_with_review_points, signed_in_candidate

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(150)

GREY = (160, 160, 160)  # a background the checks cannot call light and even: kept, for a person to look at
FILE_LABEL = "选择照片文件（JPG，不超过 2 MB）"


def console_photos(stack: Stack, page: Page) -> None:
    """Sign ``page`` in to the console's photo review with the operators' token."""
    page.goto(stack.url + "/console/photos")
    page.get_by_label("管理令牌").fill(stack.admin_token())
    page.get_by_role("button", name="进入照片审核").click()
    expect(page.locator("[data-whoami]")).to_contain_text("审核范围：全国")


def draft(stack: Stack, account: dict[str, Any], exam_id: int) -> int:
    """A draft registration of ``account`` in province 11, made through the API; its id."""
    status, created = stack.call("POST", "/api/v1/registrations", {
        "exam_id": exam_id, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin",
        "subjects": ["101", "102"], "work_years": 6}, headers={"Authorization": f"Bearer {account['token']}"})
    assert status == 201, created
    return int(created["registration_id"])


def loaded(page: Page, selector: str) -> None:
    """The image at ``selector`` has been loaded (its signed link answered a JPEG)."""
    page.wait_for_function("s => { const img = document.querySelector(s); return img && img.complete && "
                           "img.naturalWidth === 295; }", arg=selector)


def test_a_photo_rejected_by_an_operator_is_replaced_and_the_registration_confirmed_with_its_form(
        stack: Stack, context_factory: Any, shots: Shots, tmp_path: Path) -> None:
    exam_id, _ = run_async(exam_with_review_points(stack.dsn))
    stack.wait_exam(exam_id)
    publish_documents(stack, exam_id)
    stack.set_live({"captcha": {"routes": {"photos.put": "pow"}}})
    page = shots.watch(context_factory(PHONE).new_page())
    account = signed_in_candidate(stack, page, photo=False, name="张照片")
    registration_id = draft(stack, account, exam_id)

    # The status page says the photo is missing; confirming anyway is refused with a way to the photo page.
    page.goto(f"{stack.url}/registrations/{registration_id}")
    photo_box = page.locator("[data-photo-box]")
    expect(photo_box).to_contain_text("尚未上传报名照片。照片审核通过后才能确认报名信息。")
    expect(page.locator("[data-details]")).to_contain_text("未上传")
    expect(page.locator(".flow__step").first).to_contain_text("缺少审核通过的照片")
    check_page(page)
    shots.take(page, "status-photo-missing")
    page.get_by_role("link", name="确认报名信息").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}/commitment")
    page.get_by_role("button", name="我已阅知并同意").click()
    refused = page.get_by_role("alert")
    expect(refused).to_contain_text("请先上传本人证件照，照片审核通过后才能确认报名信息")
    expect(page.get_by_role("button", name="确认报名信息并提交审核")).to_be_visible()  # the signature is kept
    check_page(page)
    shots.take(page, "confirm-photo-required")
    refused.get_by_role("link", name="上传报名照片").click()

    # The photo page: the rules; a grey background is previewed, uploaded with the proof-of-work, kept for review.
    page.wait_for_url(f"{stack.url}/photo?registration={registration_id}")
    rules = page.locator(".photo-rules")
    for rule in ("JPG 格式", "295×413", "约 10 KB", "浅色纯色背景", "面部清晰", "锁定，不能自行更换"):
        expect(rules).to_contain_text(rule)
    expect(page.locator("[data-pow-state]")).to_have_text("✓ 安全验证已完成", timeout=20_000)
    page.get_by_label(FILE_LABEL).set_input_files(photo_file(tmp_path, "grey.jpg", background=GREY))
    expect(page.get_by_role("img", name="待上传照片预览")).to_have_attribute("src", re.compile(r"^blob:"))
    check_page(page)
    shots.take(page, "photo-preview")
    page.get_by_role("button", name="上传照片").click()
    notice = page.locator("[data-notice]")
    expect(notice).to_contain_text("照片已上传，待人工审核：照片背景不够均匀，待人工审核")
    current = page.locator("[data-current]")
    expect(current.locator("[data-current-details]")).to_contain_text("待人工审核")
    expect(current.locator("[data-current-problems]")).to_contain_text("照片背景不够均匀")
    loaded(page, "[data-current-image]")
    expect(page.locator("[data-upload-title]")).to_have_text("更换照片")  # not locked: may be replaced
    expect(page.locator("[data-change]")).to_be_hidden()
    check_page(page)
    shots.take(page, "photo-needs-review")
    page.goto(f"{stack.url}/registrations/{registration_id}")
    expect(photo_box).to_contain_text("正在人工审核中")

    # The operator: the queue shows the photo, the name and the masked id; a rejection needs a reason.
    console = shots.watch(context_factory(DESKTOP).new_page())
    console_photos(stack, console)
    card = console.locator(".photo-card", has_text="张照片")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading")).to_have_text(re.compile(r"^张照片（\d{4}\*{10}\d{3}[\dX]）$"))
    expect(card).to_contain_text("照片背景不够均匀，待人工审核")
    loaded(console, ".photo-card img")
    card.get_by_role("button", name="驳回：张照片 的照片").click()
    expect(card.locator("[data-error-for=reason]")).to_have_text("请选择或填写驳回原因")
    card.get_by_label("驳回原因").select_option(label="背景不是浅色纯色背景")
    check_page(console)
    shots.take(console, "console-photo-queue")
    card.get_by_role("button", name="驳回：张照片 的照片").click()
    expect(console.locator("[data-notice]")).to_contain_text("的照片已驳回，原因已告知考生：背景不是浅色纯色背景")
    expect(card).to_have_count(0)
    console.get_by_label("队列", exact=True).select_option("rejected")
    console.get_by_role("button", name="查询照片").click()
    expect(card).to_contain_text("背景不是浅色纯色背景")
    expect(card).to_contain_text("已由人工审核，无需再审。")
    shots.take(console, "console-photo-rejected")

    # The candidate reads the reason, and a good photo is approved and locked at once.
    page.reload()
    expect(photo_box).to_contain_text("报名照片审核未通过")
    expect(photo_box).to_contain_text("未通过原因：背景不是浅色纯色背景")
    photo_box.get_by_role("link", name="重新上传照片").click()
    page.wait_for_url(f"{stack.url}/photo?registration={registration_id}")
    details = page.locator("[data-current-details]")
    expect(details).to_contain_text("审核未通过")
    expect(details).to_contain_text("背景不是浅色纯色背景")
    expect(page.locator("[data-upload-title]")).to_have_text("重新上传照片")
    shots.take(page, "photo-rejected")
    expect(page.locator("[data-pow-state]")).to_have_text("✓ 安全验证已完成", timeout=20_000)
    page.get_by_label(FILE_LABEL).set_input_files(photo_file(tmp_path, "good.jpg"))
    page.get_by_role("button", name="上传照片").click()
    expect(notice).to_contain_text("照片已上传，系统检测通过，照片已锁定。现在可以返回报名状态页面确认报名信息。")
    expect(details).to_contain_text("已锁定（不能自行更换）")
    expect(page.locator("[data-upload]")).to_be_hidden()
    expect(page.locator("[data-change]")).to_be_visible()
    check_page(page)
    shots.take(page, "photo-approved")

    # Confirmed (the commitment was signed before), approved; the registration form downloads as a PDF.
    page.get_by_role("link", name="返回报名状态").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}")
    expect(photo_box).to_be_hidden()
    expect(page.locator("[data-details]")).to_contain_text("审核通过")
    page.get_by_role("link", name="确认报名信息").click()
    page.get_by_role("button", name="确认报名信息并提交审核").click()
    page.wait_for_url(f"{stack.url}/registrations/{registration_id}?from=confirm")
    expect(page.get_by_role("heading", name="当前状态：审核通过")).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="下载报名表").click()
    download = download_info.value
    saved = shots.directory / "registration-form.pdf"
    download.save_as(saved)
    assert download.suggested_filename == f"registration-form-{registration_id}.pdf"
    assert saved.read_bytes().startswith(b"%PDF")
    link = page.get_by_role("link", name="下载报名表（PDF）")
    expect(link).to_be_visible()
    href = link.get_attribute("href")
    assert href is not None and href.startswith(f"/api/v1/registrations/{registration_id}/form.pdf?")
    with urllib.request.urlopen(stack.url + href, timeout=20) as resp:
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.read().startswith(b"%PDF")
    check_page(page)
    shots.take(page, "status-form")
    stack.set_live({"captcha": {"routes": {"photos.put": None}}})


def test_a_locked_photo_is_changed_once_after_an_operator_grants_the_request(
        stack: Stack, context_factory: Any, shots: Shots, tmp_path: Path) -> None:
    page = shots.watch(context_factory(PHONE).new_page())
    account = signed_in_candidate(stack, page, photo=False, name="李更换")
    give_photo(stack, account["username"])
    bearer = {"Authorization": f"Bearer {account['token']}"}

    # Locked: no upload, a change request instead (a reason is needed).
    page.goto(f"{stack.url}/photo")
    details = page.locator("[data-current-details]")
    expect(details).to_contain_text("已锁定（不能自行更换）")
    expect(page.locator("[data-upload]")).to_be_hidden()
    change = page.locator("[data-change]")
    expect(change).to_contain_text("照片已锁定。如确需更换")
    change.get_by_role("button", name="提交更换申请").click()
    expect(page.locator("#reason-error")).to_have_text("请填写更换照片的原因")
    page.get_by_label("更换原因").fill("照片已超过六个月，需要更换近期照片")
    check_page(page)
    shots.take(page, "change-request")
    change.get_by_role("button", name="提交更换申请").click()
    expect(page.locator("[data-notice]")).to_have_text("更换申请已提交，请等待考试机构审核。")
    expect(change).to_contain_text("正在等待考试机构审核")
    expect(change.locator("[data-change-details]")).to_contain_text("照片已超过六个月")
    expect(page.locator("[data-change-form]")).to_be_hidden()
    shots.take(page, "change-requested")

    # The operator: refusing needs a reason; granted with a note.
    console = shots.watch(context_factory(DESKTOP).new_page())
    console_photos(stack, console)
    row = console.locator("[data-changes] tr", has_text="李更换")
    expect(row).to_contain_text("照片已超过六个月")
    expect(row).to_contain_text("待处理")
    row.get_by_role("button", name=re.compile(r"^不同意：申请 \d+（李更换）$")).click()
    expect(row).to_contain_text("不同意更换时请填写原因")
    row.get_by_label(re.compile(r"^处理意见：申请 \d+（李更换）$")).fill("同意更换一次")
    check_page(console)
    shots.take(console, "console-change-requests")
    row.get_by_role("button", name=re.compile(r"^同意更换：申请 \d+（李更换）$")).click()
    expect(console.locator("[data-notice]")).to_contain_text("已同意：考生可重新上传一次照片。")
    expect(row).to_have_count(0)
    console.get_by_label("状态", exact=True).select_option("granted")
    console.get_by_role("button", name="查询申请").click()
    expect(row).to_contain_text("同意更换一次")

    # The one upload: a grey photo, kept for review (no longer locked), and replaced by another before review.
    page.reload()
    expect(change).to_contain_text("考试机构已同意您的更换申请")
    expect(page.locator("[data-upload-title]")).to_have_text("重新上传照片（更换申请已同意，限一次）")
    page.get_by_label(FILE_LABEL).set_input_files(photo_file(tmp_path, "grey.jpg", background=GREY))
    page.get_by_role("button", name="上传照片").click()
    expect(page.locator("[data-notice]")).to_contain_text("待人工审核")
    expect(details).to_contain_text("未锁定（可重新上传）")
    shots.take(page, "granted-upload")
    console.get_by_role("button", name="查询照片").click()
    card = console.locator(".photo-card", has_text="李更换")
    expect(card).to_have_count(1)
    first_photo = card.get_attribute("data-photo")
    page.get_by_label(FILE_LABEL).set_input_files(photo_file(tmp_path, "grey2.jpg", background=(165, 165, 165)))
    page.get_by_role("button", name="上传照片").click()
    expect(page.locator("[data-notice]")).to_contain_text("待人工审核")

    # The operator's approval of the replaced photo is refused and the queue reloaded with the new one.
    card.get_by_role("button", name="通过：李更换 的照片").click()
    alert = console.locator("[data-photos] > [data-alert]")
    expect(alert).to_contain_text("考生已上传新照片，请审核新照片，列表已刷新。")
    expect(card).not_to_have_attribute("data-photo", first_photo or "")
    expect(card).to_have_count(1)
    shots.take(console, "console-superseded")
    # Someone else approves the new one meanwhile: this page's approval is refused as already reviewed.
    status, body = stack.call("POST", f"/admin/api/v1/photos/{card.get_attribute('data-photo')}/review",
                              {"decision": "approve"}, headers=admin(stack))
    assert status == 200, body
    card.get_by_role("button", name="通过：李更换 的照片").click()
    expect(alert).to_contain_text("该照片已审核，列表已刷新。")
    expect(card).to_have_count(0)
    check_page(console)
    shots.take(console, "console-already-reviewed")

    # The candidate: approved by a person and locked again; the request used; another upload is 409.
    page.reload()
    expect(details).to_contain_text("人工审核通过")
    expect(details).to_contain_text("已锁定（不能自行更换）")
    expect(change.locator("[data-change-details]")).to_contain_text("已使用")
    expect(page.locator("[data-change-form]")).to_be_visible()
    check_page(page)
    shots.take(page, "approved-again")
    request = urllib.request.Request(stack.url + "/api/v1/me/photo", data=photo_file(tmp_path).read_bytes(),
                                     method="PUT", headers={**bearer, "Content-Type": "image/jpeg"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 409
    assert b"photo_locked" in refused.value.read()
