"""The console's who-am-I line, what each role sees, and the operators section, in headless Chromium.

- The settings' admin signs in: the line says who (管理员, 全国), the operators section lists it; it adds
  a reviewer for two provinces (a bad name first, named next to its input), issues it a token (shown
  once) and later revokes it.
- The reviewer signs in with that token: its line names its provinces, and the live figures, config
  controls, audit and operators are neither shown nor in the navigation.
- An operator sees the live figures and the config, not the operators section.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.checks import check_page
from tests.browser.conftest import DESKTOP, Shots, Stack, in_ci

if not in_ci():
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(150)


def sign_in(page: Page, stack: Stack, token: str) -> None:
    page.goto(stack.url + "/console")
    page.get_by_label("管理令牌").fill(token)
    page.get_by_role("button", name="进入控制台").click()
    expect(page.locator("[data-whoami]")).to_be_visible()


def test_operators_and_roles_in_the_console(stack: Stack, context_factory: Any, shots: Shots) -> None:
    admin = shots.watch(context_factory(DESKTOP).new_page())
    sign_in(admin, stack, stack.admin_token())
    expect(admin.locator("[data-whoami]")).to_have_text(
        "当前登录：operator · 管理员 · 范围：全国 · 配置文件中的管理令牌")
    section = admin.locator("#operators")
    expect(section).to_be_visible()
    expect(admin.get_by_role("link", name="操作员")).to_be_visible()
    expect(section.locator('[data-operator="operator"]')).to_contain_text("EXAMGATE_ADMIN_TOKENS 中配置")

    add = admin.locator("[data-operator-add]")
    add.get_by_label("账号名").fill("Li Shen")
    add.get_by_role("button", name="新增操作员").click()
    expect(admin.locator("#operator-name-error")).to_contain_text("小写字母开头")
    add.get_by_label("账号名").fill("li.shenhe")
    add.get_by_label("显示名（可留空）").fill("李审核")
    add.get_by_label("角色").select_option("reviewer")
    add.get_by_label("范围（省份代码）").fill("11, 99")
    add.get_by_role("button", name="新增操作员").click()
    expect(admin.locator("#operator-provinces-error")).to_contain_text("两位省份代码")
    add.get_by_label("范围（省份代码）").fill("11, 31")
    add.get_by_role("button", name="新增操作员").click()
    row = section.locator('[data-operator="li.shenhe"]')
    expect(row).to_contain_text("李审核（li.shenhe）")
    expect(row).to_contain_text("北京、上海")
    expect(row).to_contain_text("没有令牌")
    add.get_by_label("账号名").fill("li.shenhe")
    add.get_by_role("button", name="新增操作员").click()
    expect(add.get_by_role("alert")).to_contain_text("该操作员名称已被使用")

    issue = admin.locator("[data-token-issue]")
    issue.get_by_label("操作员").select_option("li.shenhe")
    issue.get_by_label("用途（可留空）").fill("笔记本")
    issue.get_by_label("有效期").select_option(label="30 天")
    issue.get_by_role("button", name="签发令牌").click()
    expect(admin.locator("[data-issued]")).to_be_visible()
    token = admin.locator("[data-issued-token]").inner_text()
    assert re.fullmatch(r"egop_[A-Za-z0-9_-]{43}", token)
    expect(row).to_contain_text("笔记本")
    token_id = re.search(r"令牌 #(\d+)", admin.locator("[data-issued-text]").inner_text())[1]  # type: ignore[index]
    check_page(admin)
    shots.take(admin, "console-operators")
    admin.get_by_role("button", name="已妥善保存，隐藏令牌").click()
    expect(admin.locator("[data-issued]")).to_be_hidden()

    reviewer = shots.watch(context_factory(DESKTOP).new_page())
    sign_in(reviewer, stack, token)
    expect(reviewer.locator("[data-whoami]")).to_have_text(
        re.compile(r"^当前登录：李审核（li\.shenhe） · 审核员 · 范围：北京、上海 · 令牌有效期至 \d{4}-\d{2}-\d{2}"))
    for hidden in ("#figures", "#throttles", "#queues", "#captcha", "#maintenance", "#others", "#audit", "#operators"):
        expect(reviewer.locator(hidden)).to_be_hidden()
    for link in ("实时数据", "限流", "变更记录", "操作员"):
        expect(reviewer.get_by_role("link", name=link)).to_be_hidden()
    check_page(reviewer)
    shots.take(reviewer, "console-reviewer")

    status, _ = stack.call("POST", "/admin/api/v1/operators", {"name": "ops.zhang", "role": "operator"},
                           {"Authorization": f"Bearer {stack.admin_token()}"})
    assert status == 201
    status, issued = stack.call("POST", "/admin/api/v1/operators/ops.zhang/tokens", {},
                                {"Authorization": f"Bearer {stack.admin_token()}"})
    assert status == 201
    operator = shots.watch(context_factory(DESKTOP).new_page())
    sign_in(operator, stack, issued["token"])
    expect(operator.locator("[data-whoami]")).to_contain_text("ops.zhang · 运维人员 · 范围：全国")
    expect(operator.locator("[data-updated]")).to_contain_text("更新于", timeout=10_000)
    expect(operator.locator("#throttles")).to_be_visible()
    expect(operator.locator("#operators")).to_be_hidden()
    shots.take(operator, "console-operator")

    admin.get_by_role("button", name=f"撤销 li.shenhe 的令牌 #{token_id}").click()
    expect(admin.locator("[data-notice]")).to_contain_text(f"已撤销 li.shenhe 的令牌 #{token_id}")
    expect(row).to_contain_text("没有令牌")
    admin.get_by_role("button", name="停用 li.shenhe").click()
    expect(row).to_contain_text("已停用")
