"""What the browser tests share beyond the stack: the page checks every screen passes, and an exam's texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import db
from tests import photo_images
from tests.browser.conftest import Stack, run_async
from tests.factories import give_approved_photos

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


async def _give_photo(dsn: str, username: str) -> None:
    conn = await db.connect(dsn)
    try:
        candidate_id = await conn.fetchval("SELECT id FROM candidates WHERE username = $1", username.lower())
        assert candidate_id is not None, username
        await give_approved_photos(conn, [candidate_id])
    finally:
        await conn.close()


def give_photo(stack: Stack, username: str) -> None:
    """The candidate ``username`` gets a current, approved (locked) photo, as after an upload the checks approved."""
    run_async(_give_photo(stack.dsn, username))


def photo_file(directory: Path, name: str = "photo.jpg", **portrait: Any) -> Path:
    """A portrait JPEG (``tests.photo_images.portrait`` with ``portrait``) written to ``directory/name``."""
    path = directory / name
    path.write_bytes(photo_images.portrait(**portrait))
    return path
