"""What the browser tests share beyond the stack: the page checks every screen passes, and an exam's texts."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Stack

# Every visible control has an accessible name (a label, aria-label or aria-labelledby, or its text).
UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(el => el.type !== 'hidden' && el.getClientRects().length > 0)
  .filter(el => el.tagName === 'BUTTON'
    ? !(el.textContent.trim() || el.getAttribute('aria-label'))
    : !((el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')))
  .map(el => el.outerHTML.slice(0, 160))"""
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"

NOTICE = ("报名须知", "一、报考人员应如实填写报名信息。\n二、报名信息确认后即进行资格审核。")
COMMITMENT = ("告知承诺书", "本人已阅知报考条件，承诺所填信息真实、准确。\n如有虚假，自愿承担相应责任。")


def check_page(page: Any) -> None:
    """Every control labelled, and nothing wider than the screen."""
    assert page.evaluate(UNLABELLED) == [], page.url
    assert page.evaluate(OVERFLOW) <= 0, f"{page.url} scrolls sideways"


def admin(stack: Stack) -> dict[str, str]:
    """The operators' Authorization header."""
    return {"Authorization": f"Bearer {stack.admin_token()}"}


def publish_documents(stack: Stack, exam_id: int) -> None:
    """The exam's notice and commitment texts, published through the admin API."""
    for kind, (title, text) in (("notice", NOTICE), ("commitment", COMMITMENT)):
        status, body = stack.call("POST", f"/admin/api/v1/exams/{exam_id}/documents/{kind}",
                                  {"title": title, "text": text}, headers=admin(stack))
        assert status == 201, body
