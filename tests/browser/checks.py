"""What the browser tests share beyond the stack: the page checks every screen passes, an exam's texts, the SMS
codes phones received, and accounts registered through the API with a real code."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import redis

from core import db, phone_codes
from tests import photo_images
from tests.browser.conftest import Stack, run_async
from tests.factories import give_approved_photos
from tests.gateway.candidate_http import registration

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


# --- SMS codes and accounts ------------------------------------------------------------------------------------

def delivered(stack: Stack, phone: str) -> list[dict[str, Any]]:
    """The messages the SMS simulator delivered to ``phone``, newest first."""
    query = urllib.parse.urlencode({"phone": phone})
    with urllib.request.urlopen(f"{stack.smssim.url}/sim/messages?{query}", timeout=10) as resp:
        return list(json.loads(resp.read())["messages"])


def delivered_code(stack: Stack, phone: str, *, after: int, timeout_s: float = 20) -> str:
    """The code in the newest message to ``phone`` once more than ``after`` were delivered to it (the worker
    sends the outbox to the simulator within a moment)."""
    deadline = time.monotonic() + timeout_s
    while len(messages := delivered(stack, phone)) <= after:
        assert time.monotonic() < deadline, f"no new SMS to {phone} within {timeout_s} s"
        time.sleep(0.1)
    return str(messages[0]["params"]["code"])


def forget_sends(stack: Stack, phone: str) -> None:
    """Forget the codes sent to ``phone`` lately, as if its minute had passed (its per-phone limit starts again)."""
    with redis.Redis.from_url(stack.redis_url) as client:
        client.delete(phone_codes.sent_key(phone))


def skip_captcha(stack: Stack) -> dict[str, str]:
    """A load-test token's header: the API routes take no captcha from its bearer."""
    status, issued = stack.call("POST", "/admin/api/v1/loadtest-tokens", {"ttl_s": 600}, headers=admin(stack))
    assert status == 201, issued
    return {"X-Loadtest-Token": issued["token"]}


def sms_code(stack: Stack, phone: str, purpose: str = "register", headers: dict[str, str] | None = None) -> str:
    """Ask the gateway for a code to ``phone`` (``headers``: a load-test token) and read it where the phone got it."""
    before = len(delivered(stack, phone))
    status, body = stack.call("POST", "/api/v1/sms-codes", {"phone": phone, "purpose": purpose},
                              headers=headers or skip_captcha(stack))
    assert status == 202, body
    return delivered_code(stack, phone, after=before)


def register_account(stack: Stack, headers: dict[str, str] | None = None, **changes: Any) -> dict[str, Any]:
    """An account registered through the API with the code its phone received, accepting the agreement in force
    as the register page does (``changes`` as in ``registration``; ``headers``: a load-test token, made when not
    given); the body, with ``candidate_id``."""
    headers = headers or skip_captcha(stack)
    account = registration(**changes)
    status, agreement = stack.call("GET", "/api/v1/documents/agreement")
    if status == 200:
        account.setdefault("agreement_version", agreement["version"])
    account["sms_code"] = sms_code(stack, account["phone"], headers=headers)
    status, created = stack.call("POST", "/api/v1/accounts", account, headers=headers)
    assert status == 201, created
    account["candidate_id"] = created["candidate_id"]
    return account
