"""Accounts in headless Chromium: registration with an SMS code, the agreement, 注册维护 and recovery.

- A candidate on a phone reads the registration notice and the service agreement and accepts them, asks for
  a code (the button counts down; asked again from a reloaded page, the 429 says when to try again), types
  the name a second time differently (422 mismatch, next to the field), then a wrong code (400, next to the
  code), then the code the phone received (from the SMS simulator, where the worker delivered it), with a
  degree added (and a second added and removed), and is registered with the agreement's version. A newer
  agreement is published: signing in leads to it, accepted before going on. On 注册维护 the candidate sees
  each record's verification status (an operator verified the education: it cannot be deleted), adds an
  education and deletes it, changes the phone with a code to the current and to the new number (a wrong
  one first, marked on both), stays signed in with the new session, and finally finds the username again
  on 找回用户名 with a code sent to the new number.
- A signed-in candidate enrolling once a newer agreement is published is taken to it (409
  agreement_required), accepts it, and enrols.
- A candidate who forgot the password resets it on 找回密码 by the security question (a wrong answer
  first) and signs in with it, then resets it again with a code sent to the phone.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from tests.browser.checks import (
    admin,
    check_page,
    delivered,
    delivered_code,
    forget_sends,
    register_account,
    skip_captcha,
)
from tests.browser.conftest import DESKTOP, PHONE, Shots, Stack, in_ci, run_async
from tests.browser.test_lifecycle import exam_with_review_points, signed_in_candidate
from tests.gateway.candidate_http import ANSWER, PASSWORD, phone, resident_id

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(240)

NOTICE = ("注册须知", "一、每位报考人员只能注册一个账号。\n二、证件号码注册后不能修改，请认真核对。")
AGREEMENT = ("网上报名协议", "一、报考人员应如实填写个人信息。\n二、账号和密码由报考人员妥善保管。")
AGREEMENT_V2 = ("网上报名协议", AGREEMENT[1] + "\n三、报考人员同意考试机构核验其学历、学位信息。")
NEW_PASSWORD = "Xin#2026pass"


def publish(stack: Stack, kind: str, title: str, text: str) -> int:
    """Publish an account text (agreement or notice) through the admin API; its version."""
    status, made = stack.call("POST", f"/admin/api/v1/documents/{kind}", {"title": title, "text": text},
                              headers=admin(stack))
    assert status == 201, made
    return int(made["version"])


def other_code(code: str) -> str:
    """A six-digit code that is not ``code``."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def session_token(page: Page) -> str:
    return str(page.evaluate("() => sessionStorage.getItem('eg.session.token')"))


def accept_texts(page: Page) -> None:
    """On /register: tick the acceptance of the texts and go on to the form."""
    page.get_by_label(re.compile("并同意《网上报名协议》")).check()
    page.get_by_role("button", name="同意并继续注册").click()
    expect(page.locator("[data-form]")).to_be_visible()


def code_button(page: Page) -> Any:
    return page.locator("[data-send-code]")


# --- registration, the agreement, 注册维护, the username -----------------------------------------------------

def test_a_candidate_registers_with_a_code_changes_the_phone_and_finds_the_username(
        stack: Stack, context_factory: Any, shots: Shots) -> None:
    assert publish(stack, "notice", *NOTICE) == 1
    assert publish(stack, "agreement", *AGREEMENT) == 1
    stack.set_live({"captcha": {"routes": dict.fromkeys(
        ("accounts.create", "sessions.create", "sms_codes.create", "username_recoveries.create"), "pow")}})
    page = shots.watch(context_factory(PHONE).new_page())
    username = "r" + secrets.token_hex(5)
    id_number = resident_id()
    mobile = phone()

    # The texts first: going on without ticking is refused, next to the box.
    page.goto(stack.url + "/register")
    documents = page.locator("[data-documents]")
    expect(documents.get_by_role("heading", name="注册须知", exact=True)).to_be_visible()
    agreement = documents.get_by_role("region", name="网上报名协议", exact=True)
    expect(agreement).to_contain_text("账号和密码由报考人员妥善保管")
    expect(documents.locator('[data-doc="agreement"] [data-doc-version]')).to_have_text("第 1 版")
    expect(page.locator("[data-form]")).to_be_hidden()
    page.get_by_role("button", name="同意并继续注册").click()
    expect(page.locator("#accept-error")).to_have_text("请阅读以上内容，勾选同意后再继续")
    check_page(page)
    shots.take(page, "register-texts")

    # A code for the phone; the page counts down. From a reloaded page (no countdown) the server says 429.
    accept_texts(page)
    page.get_by_label("手机号码").fill(mobile)
    code_button(page).click()
    expect(page.locator("[data-code-status]")).to_have_text(
        f"验证码已发送至 {mobile[:3]}****{mobile[7:]}，5 分钟内有效，请注意查收。")
    expect(code_button(page)).to_have_text(re.compile(r"^重新获取（\d+ 秒）$"))
    expect(code_button(page)).to_be_disabled()
    code = delivered_code(stack, mobile, after=0)
    page.reload()
    accept_texts(page)
    expect(page.locator("[data-accepted-text]")).to_have_text(
        "您已阅读并同意《网上报名协议》（第 1 版），已阅读《注册须知》。")
    page.get_by_label("手机号码").fill(mobile)
    code_button(page).click()
    refused = page.locator("#phone-error")
    expect(refused).to_contain_text("该手机号码获取验证码过于频繁（每分钟 1 次，每小时最多 5 次）")
    expect(refused).to_contain_text(re.compile(r"请在 (\d+ 秒|1 分 00 秒)后（\d\d:\d\d:\d\d 之后）重试。"))
    expect(code_button(page)).to_be_disabled()
    page.get_by_text("验证码收不到怎么办？").click()
    expect(page.get_by_text("同一手机号码每分钟最多获取 1 次、每小时最多 5 次验证码")).to_be_visible()
    check_page(page)
    shots.take(page, "register-code-429")
    assert len(delivered(stack, mobile)) == 1  # the refused request sent nothing; the first code stands

    # The form: the name typed again differently, a degree (a second added and removed), a wrong code.
    page.get_by_label("用户名", exact=True).fill(username)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_label("确认密码", exact=True).fill(PASSWORD)
    page.get_by_label("姓名", exact=True).fill("李晓红")
    page.get_by_label("请再次输入姓名").fill("李小红")
    page.get_by_label("证件号码", exact=True).fill(id_number)
    page.get_by_label("请再次输入证件号码").fill(id_number)
    page.get_by_label("短信验证码").fill(other_code(code))
    page.get_by_label("电子邮箱").fill("lixiaohong@example.com")
    page.get_by_label("问题", exact=True).fill("我的小学校名？")
    page.get_by_label("答案", exact=True).fill(ANSWER)
    page.get_by_label("学历证书编号").fill("10001120120600123")
    page.get_by_label("毕业学校").fill("北京大学")
    page.get_by_label("毕业年月").fill("2012-06")
    page.get_by_label("所学专业").fill("经济学")
    page.get_by_role("button", name="添加学位").click()
    page.get_by_label("学位证书编号（学位 1）").fill("1000142012001234")
    page.get_by_label("学位授予单位（学位 1）").fill("北京大学")
    page.get_by_label("获得学位年月（学位 1）").fill("2012-07")
    page.get_by_label("学位专业（学位 1）").fill("经济学")
    page.get_by_role("button", name="添加学位").click()
    expect(page.get_by_label("学位证书编号（学位 2）")).to_be_focused()
    page.get_by_role("button", name="删除学位 2").click()
    expect(page.locator("[data-degree]")).to_have_count(1)
    expect(page.get_by_label("学位证书编号（学位 1）")).to_have_value("1000142012001234")
    expect(page.locator('[data-captcha="accounts.create"] [data-pow-state]')).to_have_text("✓ 安全验证已完成",
                                                                                         timeout=20_000)
    page.get_by_role("button", name="注册").click()
    expect(page.locator("#name_again-error")).to_have_text("两次输入的姓名不一致")
    expect(page.get_by_label("请再次输入姓名")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("请再次输入姓名")).to_be_focused()
    expect(page.locator("#id_number_again-error")).to_have_text("")
    check_page(page)
    shots.take(page, "register-mismatch")
    page.get_by_label("请再次输入姓名").fill("李晓红")
    page.get_by_role("button", name="注册").click()
    expect(page.locator("#sms_code-error")).to_have_text("短信验证码错误或已失效", timeout=20_000)
    expect(page.locator("[data-form] [data-alert]")).to_contain_text("请核对后重新输入，或重新获取验证码")
    expect(page.get_by_label("短信验证码")).to_be_focused()
    shots.take(page, "register-wrong-code")
    page.get_by_label("短信验证码").fill(code)
    page.get_by_role("button", name="注册").click()
    page.wait_for_url(f"{stack.url}/login?registered={username}", timeout=20_000)

    # A newer agreement: the sign-in goes to it first, and on once it is accepted.
    assert publish(stack, "agreement", *AGREEMENT_V2) == 2
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{stack.url}/agreement?next=%2F")
    expect(page.locator("[data-lead]")).to_contain_text("已更新（您此前同意的是第 1 版）")
    expect(page.locator("[data-agreement-version]")).to_have_text("第 2 版")
    expect(page.locator("[data-agreement-text]")).to_contain_text("同意考试机构核验其学历、学位信息")
    page.get_by_role("button", name="同意并继续").click()
    expect(page.locator("#accept-error")).to_have_text("请阅读协议，勾选同意后再继续")
    check_page(page)
    shots.take(page, "agreement-v2")
    page.get_by_label("我已阅读并同意《网上报名协议》（第 2 版）").check()
    page.get_by_role("button", name="同意并继续").click()
    page.wait_for_url(stack.url + "/")
    bearer = {"Authorization": f"Bearer {session_token(page)}"}
    status, me = stack.call("GET", "/api/v1/me", headers=bearer)
    assert status == 200, me
    assert me["agreement"]["accepted_version"] == 2 and not me["agreement"]["required"]
    assert [d["cert_no"] for d in me["degrees"]] == ["1000142012001234"]

    # An operator verifies the education and sends the degree to a person's check.
    candidate_id = me["candidate_id"]
    for kind, record, verdict in (("educations", me["educations"][0]["education_id"], "verified"),
                                  ("degrees", me["degrees"][0]["degree_id"], "needs_manual")):
        status, body = stack.call("PUT", f"/admin/api/v1/candidates/{candidate_id}/{kind}/{record}/status",
                                  {"status": verdict}, headers=admin(stack))
        assert status == 200, body

    # 注册维护: the records with their status; an education added, then deleted (not the verified one).
    page.get_by_role("link", name="注册维护").click()
    page.wait_for_url(stack.url + "/account")
    profile = page.locator("[data-profile]")
    expect(profile).to_contain_text(username)
    expect(profile).to_contain_text(mobile)
    expect(profile).to_contain_text(f"{id_number[:10]}****{id_number[14:]}")
    expect(profile).to_contain_text("已同意第 2 版")
    educations = page.locator('[data-records="educations"] [data-record-list]')
    degrees = page.locator('[data-records="degrees"] [data-record-list]')
    expect(educations.locator(".badge")).to_have_text(["已核验"])
    expect(educations).to_contain_text("已核验，不能删除")
    expect(educations.get_by_role("button")).to_have_count(0)
    expect(degrees.locator(".badge")).to_have_text(["需人工核验"])
    expect(degrees.get_by_role("button", name="删除学位 1")).to_be_visible()
    add = page.locator('[data-records="educations"] [data-add-form]')
    add.get_by_label("学历证书编号").fill("10001120150600456")
    add.get_by_label("毕业学校").fill("北京大学")
    add.get_by_label("毕业年月").fill("2015-06")
    add.get_by_label("所学专业").fill("金融学")
    add.get_by_label("学历层次").select_option("master")
    add.get_by_role("button", name="添加学历").click()
    expect(page.locator("[data-notice]")).to_have_text("已添加学历信息（证书编号 10001120150600456），状态：未核验。")
    expect(educations.locator(".badge")).to_have_text(["已核验", "未核验"])
    expect(educations).to_contain_text("硕士研究生")
    check_page(page)
    shots.take(page, "account-records")
    educations.get_by_role("button", name="删除学历 2").click()
    dialog = page.get_by_role("dialog", name="删除学历 2")
    expect(dialog).to_contain_text("证书编号 10001120150600456")
    dialog.get_by_role("button", name="确定删除").click()
    expect(page.locator("[data-notice]")).to_have_text("已删除学历 2（证书编号 10001120150600456）。")
    expect(educations.locator(".record-card")).to_have_count(1)

    # The phone: a code to the current number and one to the new; a wrong one first, marked on both.
    new_mobile = phone()
    form = page.locator("[data-phone-form]")
    expect(form.get_by_text(f"当前号码 {mobile[:3]}****{mobile[7:]} 收到的验证码")).to_be_visible()
    forget_sends(stack, mobile)  # the registration's minute has passed
    form.get_by_role("button", name="获取当前号码的验证码").click()
    expect(form.locator("[data-old-status]")).to_contain_text("验证码已发送至当前号码")
    old_code = delivered_code(stack, mobile, after=1)
    form.locator("#old_code").fill(old_code)
    form.get_by_label("新手机号码").fill(new_mobile)
    form.get_by_role("button", name="获取新号码的验证码").click()
    expect(form.locator("[data-new-status]")).to_contain_text(f"验证码已发送至新号码 {new_mobile[:3]}****")
    new_code = delivered_code(stack, new_mobile, after=0)
    form.locator("#new_code").fill(other_code(new_code))
    form.get_by_role("button", name="确认更换手机号码").click()
    expect(form.get_by_role("alert")).to_contain_text("两个验证码中至少有一个不正确")
    expect(form.locator("#old_code")).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#new_code")).to_have_attribute("aria-invalid", "true")
    check_page(page)
    shots.take(page, "account-phone-wrong-code")
    form.locator("#new_code").fill(new_code)
    form.get_by_role("button", name="确认更换手机号码").click()
    expect(page.locator("[data-notice]")).to_contain_text(f"手机号码已更换为 {new_mobile}")
    expect(profile).to_contain_text(new_mobile)
    assert session_token(page) != bearer["Authorization"].removeprefix("Bearer ")  # every session ended, a new one
    assert stack.call("GET", "/api/v1/me", headers=bearer)[0] == 401
    shots.take(page, "account-phone-changed")
    page.reload()  # the page's new session goes on working
    expect(page.locator("[data-profile]")).to_contain_text(new_mobile)

    # 找回用户名, from the sign-in page, with a code sent to the number now bound.
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(stack.url + "/")
    page.get_by_role("link", name="登录", exact=True).click()
    page.get_by_role("link", name="忘记用户名？").click()
    page.wait_for_url(stack.url + "/recover/username")
    page.get_by_label("姓名").fill("李晓红")
    page.get_by_label("证件号码").fill(id_number)
    page.get_by_label("绑定的手机号码").fill(new_mobile)
    forget_sends(stack, new_mobile)
    code_button(page).click()
    expect(page.locator("[data-code-status]")).to_contain_text("如该号码已绑定账号，验证码已发送至")
    page.get_by_label("短信验证码").fill(delivered_code(stack, new_mobile, after=1))
    page.get_by_role("button", name="找回用户名").click()
    result = page.locator("[data-result]")
    expect(result).to_contain_text(f"您的用户名是：{username}", timeout=20_000)
    check_page(page)
    shots.take(page, "username-recovered")
    result.get_by_role("link", name="用此用户名登录").click()
    page.wait_for_url(re.compile(r".*/login\?username="))
    expect(page.get_by_label("用户名")).to_have_value(username)


# --- enrolling under a newer agreement ----------------------------------------------------------------------------

def test_enrolling_under_a_newer_agreement_leads_to_it_and_back(stack: Stack, context_factory: Any,
                                                                shots: Shots) -> None:
    exam_id, _ = run_async(exam_with_review_points(stack.dsn))
    stack.wait_exam(exam_id)
    page = shots.watch(context_factory(DESKTOP).new_page())
    signed_in_candidate(stack, page)  # accepted the agreement in force, if any
    version = publish(stack, "agreement", "网上报名协议", AGREEMENT[1] + f"\n（修订 {secrets.token_hex(3)}）")
    page.goto(f"{stack.url}/exams/{exam_id}/enrol")
    page.get_by_label("报考省份").select_option("11")
    page.get_by_label("工作所在城市").fill("北京市")
    page.get_by_label("经济基础知识（101）").check()
    page.get_by_label("从事相关工作年限（年）").fill("6")
    page.get_by_role("button", name="提交报名信息").click()
    page.wait_for_url(f"{stack.url}/agreement?next=%2Fexams%2F{exam_id}%2Fenrol")
    expect(page.locator("[data-agreement-version]")).to_have_text(f"第 {version} 版")
    check_page(page)
    shots.take(page, "agreement-before-enrolling")
    page.get_by_label(f"我已阅读并同意《网上报名协议》（第 {version} 版）").check()
    page.get_by_role("button", name="同意并继续").click()
    page.wait_for_url(f"{stack.url}/exams/{exam_id}/enrol")
    page.get_by_label("报考省份").select_option("11")
    page.get_by_label("工作所在城市").fill("北京市")
    page.get_by_label("经济基础知识（101）").check()
    page.get_by_label("从事相关工作年限（年）").fill("6")
    page.get_by_role("button", name="提交报名信息").click()
    page.wait_for_url(re.compile(r".*/registrations/\d+\?from=enrol$"))


# --- the password -------------------------------------------------------------------------------------------------

def test_a_candidate_resets_the_password_by_the_question_and_by_sms(stack: Stack, context_factory: Any,
                                                                    shots: Shots) -> None:
    stack.set_live({"captcha": {"routes": dict.fromkeys(
        ("sessions.create", "password_resets.question.start", "password_resets.sms.start"), "pow")}})
    account = register_account(stack, skip_captcha(stack), name="王小明")
    page = shots.watch(context_factory(PHONE).new_page())
    page.goto(stack.url + "/login")
    page.get_by_role("link", name="忘记密码？").click()
    page.wait_for_url(stack.url + "/recover/password")

    # By the question: a wrong answer is named next to it; the right one sets the new password.
    page.locator("#q_name").fill("王小明")
    page.locator("#q_id_number").fill(account["id_number"])
    page.get_by_role("button", name="下一步").click()
    finish = page.locator("[data-question-finish]")
    expect(finish.locator("[data-question]")).to_have_text("我的小学校名？", timeout=20_000)
    finish.get_by_label("答案").fill("不是这个")
    finish.get_by_label("新密码", exact=True).fill(NEW_PASSWORD)
    finish.get_by_label("确认新密码").fill(NEW_PASSWORD)
    finish.get_by_role("button", name="重新设置密码").click()
    expect(page.locator("#q_answer-error")).to_have_text("找回密码请求无效、已过期或答案错误")
    check_page(page)
    shots.take(page, "reset-wrong-answer")
    finish.get_by_label("答案").fill(ANSWER)
    finish.get_by_role("button", name="重新设置密码").click()
    page.wait_for_url(stack.url + "/login?reset=1")
    expect(page.locator("[data-notice]")).to_have_text("密码已重新设置，请使用新密码登录。")
    page.get_by_label("用户名").fill(account["username"])
    page.get_by_label("密码", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(stack.url + "/")
    with page.expect_navigation():  # signed out, back on the home page
        page.get_by_role("button", name="退出登录").click()

    # By SMS: the code the phone received and another new password.
    page.goto(stack.url + "/recover/password")
    page.get_by_role("radio", name="通过手机短信验证码").check()
    page.locator("#s_name").fill("王小明")
    page.locator("#s_id_number").fill(account["id_number"])
    page.locator("#s_phone").fill(account["phone"])
    forget_sends(stack, account["phone"])  # the registration's minute has passed
    page.get_by_role("button", name="发送验证码").click()
    sent = page.locator("[data-sms-sent]")
    expect(sent).to_contain_text("如果姓名、证件号码和手机号码与账号一致，验证码已发送至", timeout=20_000)
    expect(page.get_by_role("button", name=re.compile(r"^重新获取（\d+ 秒）$"))).to_be_disabled()
    page.locator("#s_code").fill(delivered_code(stack, account["phone"], after=1))
    page.locator("#s_new_password").fill(PASSWORD)
    page.locator("#s_new_password_again").fill(PASSWORD)
    check_page(page)
    shots.take(page, "reset-by-sms")
    page.get_by_role("button", name="重新设置密码").click()
    page.wait_for_url(stack.url + "/login?reset=1")
    status, _ = stack.call("POST", "/api/v1/sessions", {"username": account["username"], "password": PASSWORD},
                           headers=skip_captcha(stack))
    assert status == 201
