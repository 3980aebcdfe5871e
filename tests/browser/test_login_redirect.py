"""The login page's ``?next=`` in headless Chromium: after signing in the candidate stays on this site.

A gateway of its own (one process) serves the page; the candidate is registered through the API
(with the code the gateway queued for the phone, read from the SMS outbox) and signs in for real.
Any attempt to send the browser elsewhere after the login — by a path the browser reads as another
host once it drops tabs and newlines, a scheme-relative or absolute URL, a backslash, a
``javascript:`` URL — lands on the home page of this site instead.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from core import db
from loadtest.processes import Process, start_gateway
from tests.browser.conftest import DESKTOP, in_ci, run_async
from tests.conftest import TEST_REDIS_URL
from tests.gateway.candidate_http import FAST_ARGON, PASSWORD, code_in_outbox, registration

if not in_ci():  # under CI a missing Playwright is a failure, as a missing browser is
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright for Python is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.timeout(120)

EVIL_HOST = "evil.example.com"
ELSEWHERE = ["/\t/evil.example.com", "/\n/evil.example.com", "//evil.example.com", "https://evil.example.com",
             "/\\evil.example.com", "/\t\\evil.example.com", "javascript:alert(1)"]


def _call(gateway: Process, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(gateway.url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


async def _code_queued(dsn: str, phone: str) -> str:
    conn = await db.connect(dsn)
    try:
        return await code_in_outbox(conn, phone)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def signed_up(pg_dsn: str, browser: Any) -> Iterator[tuple[Process, str]]:
    """A gateway whose sign-in needs no captcha, and the username of a registered candidate."""
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, **FAST_ARGON)
    try:
        # No captcha to solve; and a busy test machine's event-loop lag sheds none of the page's assets.
        gateway.patch_config({"captcha": {"routes": {"sessions.create": "off"}}, "shedding": {"max_loop_lag_ms": 0}})
        admin = {"Authorization": f"Bearer {gateway.admin_token()}"}
        token = _call(gateway, "POST", "/admin/api/v1/loadtest-tokens", {"ttl_s": 600}, admin)["token"]
        body = registration()
        _call(gateway, "POST", "/api/v1/sms-codes", {"phone": body["phone"], "purpose": "register"},
              {"X-Loadtest-Token": token})
        body["sms_code"] = run_async(_code_queued(pg_dsn, body["phone"]))  # no worker: the code waits in the outbox
        _call(gateway, "POST", "/api/v1/accounts", body, {"X-Loadtest-Token": token})
        yield gateway, body["username"]
    finally:
        assert gateway.stop() == 0, gateway.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()


def _sign_in(context_factory: Any, gateway: Process, username: str, next_: str) -> tuple[str, list[str]]:
    """Sign in on ``/login?next=…``; the URL the browser ends on, and what went wrong (the other host asked, a
    dialog shown, a failed response)."""
    context = context_factory(DESKTOP)
    elsewhere: list[str] = []

    def other_host(route: Any) -> None:
        elsewhere.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>elsewhere</h1>")

    context.route(f"**://{EVIL_HOST}/**", other_host)
    page = context.new_page()
    page.on("response", lambda response: elsewhere.append(f"{response.status} {response.url} {response.text()[:200]}")
            if response.status >= 400 else None)
    page.on("dialog", lambda dialog: (elsewhere.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(f"{gateway.url}/login?next={urllib.parse.quote(next_, safe='')}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():  # the sign-in answers, then the page goes on
        page.click("[data-submit]")
    page.wait_for_load_state()
    return page.url, elsewhere


@pytest.mark.parametrize("next_", ELSEWHERE, ids=repr)
def test_next_never_leaves_the_site(context_factory: Any, signed_up: tuple[Process, str], next_: str) -> None:
    gateway, username = signed_up
    url, elsewhere = _sign_in(context_factory, gateway, username, next_)
    assert elsewhere == []
    assert url == gateway.url + "/"


def test_next_within_the_site_is_followed(context_factory: Any, signed_up: tuple[Process, str]) -> None:
    gateway, username = signed_up
    url, elsewhere = _sign_in(context_factory, gateway, username, "/tickets?exam=7#lookup")
    assert (url, elsewhere) == (gateway.url + "/tickets?exam=7#lookup", [])
