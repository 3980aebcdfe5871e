"""The pages over HTTP, in-process: shells served from memory (no PostgreSQL), versioned assets cached for a year."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import routing
from gateway.app import create_app
from gateway.liveconfig import DEFAULT, merge_patch, validate
from gateway.routes import pages
from gateway.routes.console import CONSOLE
from gateway.web.assets import IMMUTABLE, STATIC_DIR, AssetStore
from gateway.web.shells import ShellRenderer
from tests.gateway.test_app import make_settings

# Nothing listens on port 1: a page that touched PostgreSQL would fail or hang.
NO_POSTGRES = "postgresql://postgres@127.0.0.1:1/examgate_nowhere"
PAGE_PATHS = {
    "home": "/", "register": "/register", "login": "/login", "enrol": "/exams/7/enrol", "queue": "/exams/7/queue",
    "seat": "/registrations/12/seat", "pay": "/registrations/12/pay", "tickets": "/tickets", "scores": "/scores",
    "console": "/console", "registration": "/registrations/12", "commitment": "/registrations/12/commitment",
    "registration_edit": "/registrations/12/edit", "reviews": "/console/reviews", "photo": "/photo",
    "photo_review": "/console/photos", "agreement": "/agreement", "account": "/account",
    "recover_password": "/recover/password", "recover_username": "/recover/username", "pass_marks": "/pass-marks",
    "certificates": "/certificates", "imports": "/console/imports",
}
ASSET_URL = re.compile(r'(?:src|href|data-pow-worker)="(/static/[^"]+)"')


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str, tmp_path: Path) -> TestClient:
    """A gateway whose PostgreSQL does not exist (Redis is the test database, not flushed)."""
    app = create_app(make_settings(NO_POSTGRES, redis_url, tmp_path))
    return await aiohttp_client(app)


async def test_every_page_is_a_shell_served_without_postgresql(client: TestClient) -> None:
    assert (await client.get("/readyz")).status == 503  # PostgreSQL really is missing
    for name, path in PAGE_PATHS.items():
        resp = await client.get(path)
        assert resp.status == 200, (path, await resp.text())
        assert resp.content_type == "text/html" and resp.charset == "utf-8"
        text = await resp.text()
        assert '<html lang="zh-CN">' in text
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
        assert f'data-page="{name}"' in text
        assert "<script>" not in text and "style=" not in text  # the CSP forbids inline code
        assert resp.headers["Cache-Control"] == "no-cache"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Request-Id"]
        assert resp.headers["ETag"]
        again = await client.get(path, headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304


async def test_the_lifecycle_pages_have_their_shells(client: TestClient) -> None:
    async def shell(path: str) -> str:
        resp = await client.get(path)
        assert resp.status == 200, path
        return await resp.text()

    # The candidate's pages: the candidate header, the lifecycle helpers and the page's own script.
    status = await shell("/registrations/12")
    assert 'class="site-header"' in status and "data-sign-out" in status
    assert re.search(r'src="/static/[0-9a-f]{12}/js/lifecycle\.js"', status)
    assert re.search(r'src="/static/[0-9a-f]{12}/js/pages/registration\.js"', status)
    assert 'aria-label="报名流程" data-flow' in status and "<dialog" in status
    commitment = await shell("/registrations/12/commitment")
    assert re.search(r'src="/static/[0-9a-f]{12}/js/pages/commitment\.js"', commitment)
    for marker in ("data-notice-section", "data-commitment-section", "data-refusal", "data-mismatch",
                   "我已阅知并同意", "暂不提交", "放弃报名"):
        assert marker in commitment, marker
    # Editing is the enrolment form in edit mode: the same template and script, its own page name.
    edit = await shell("/registrations/12/edit")
    assert 'data-page="registration_edit"' in edit and 'id="review_point"' in edit
    assert re.search(r'src="/static/[0-9a-f]{12}/js/pages/enrol\.js"', edit)
    assert 'id="review_point"' in await shell("/exams/7/enrol")
    # The review console: the console's header style, not the candidate's navigation; its own script.
    reviews = await shell("/console/reviews")
    assert "site-header--console" in reviews and "data-sign-out" not in reviews
    assert 'href="/console/reviews" aria-current="page"' in reviews
    assert re.search(r'src="/static/[0-9a-f]{12}/js/console-reviews\.js"', reviews)
    assert "js/console.js" not in reviews
    assert 'href="/console/reviews"' in await shell("/console")  # the console links to it
    for path in ("/registrations/12a", "/registrations/12/commitment/x", "/console/reviews/1"):
        assert (await client.get(path)).status == 404, path


async def test_the_photo_pages_have_their_shells(client: TestClient) -> None:
    # The candidate's photo page: its script, the upload's captcha (live mode, default off), a JPEG picker;
    # the policy lets the page preview the chosen file (an object URL) and nothing inline.
    resp = await client.get("/photo")
    photo = await resp.text()
    assert re.search(r'src="/static/[0-9a-f]{12}/js/pages/photo\.js"', photo)
    assert 'data-captcha="photos.put"' in photo and "&quot;photos.put&quot;:&quot;off&quot;" in photo
    assert 'type="file" accept="image/jpeg,.jpg,.jpeg"' in photo
    assert "img-src 'self' data: blob:;" in resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in resp.headers["Content-Security-Policy"]
    for page in ("/", "/registrations/12"):  # the candidate header links it
        assert '<a href="/photo">报名照片</a>' in await (await client.get(page)).text()
    # The console's photo review: the console's header, its own script; the console and the review page link it.
    review = await (await client.get("/console/photos")).text()
    assert "site-header--console" in review and "data-sign-out" not in review
    assert 'href="/console/photos" aria-current="page"' in review
    assert re.search(r'src="/static/[0-9a-f]{12}/js/console-photos\.js"', review)
    for page in ("/console", "/console/reviews"):
        assert 'href="/console/photos"' in await (await client.get(page)).text(), page
    assert (await client.get("/console/photos/1")).status == 404


async def test_the_account_pages_have_their_shells(client: TestClient) -> None:
    async def shell(path: str) -> str:
        resp = await client.get(path)
        assert resp.status == 200, path
        return await resp.text()

    def scripts(text: str) -> list[str]:
        return re.findall(r'src="/static/[0-9a-f]{12}/(js/[^"]+)"', text)

    # Registration: the texts and their acceptance first, the phone's code (its own captcha, live mode per
    # route), the name and id number typed again, degrees added in the page, what to do without a code.
    register = await shell("/register")
    assert scripts(register) == ["js/common.js", "js/captcha.js", "js/lifecycle.js", "js/records.js", "js/sms-code.js",
                                 "js/pages/register.js"]
    for marker in ('data-doc="notice"', 'data-doc="agreement"', "data-accept-form", "同意并继续注册",
                   'data-captcha="sms_codes.create"', 'data-captcha="accounts.create"', "data-send-code", "获取验证码",
                   'id="sms_code"', 'data-field="confirmation.name"', 'data-field="confirmation.id_number"',
                   "请再次输入姓名", "请再次输入证件号码", "data-add-degree", "验证码收不到怎么办？",
                   "每小时最多 5 次"):
        assert marker in register, marker
    assert ("&quot;accounts.create&quot;:&quot;either&quot;,&quot;sms_codes.create&quot;:&quot;either&quot;"
            in register)
    # After sign-in, a newer agreement; 注册维护 (the phone's two codes, the password for the other changes).
    agreement = await shell("/agreement")
    assert scripts(agreement) == ["js/common.js", "js/lifecycle.js", "js/pages/agreement.js"]
    assert "data-agreement-text" in agreement and "同意并继续" in agreement
    account = await shell("/account")
    assert scripts(account)[-1] == "js/pages/account.js" and "js/sms-code.js" in scripts(account)
    for marker in ('data-records="educations"', 'data-records="degrees"', "data-send-old", "data-send-new",
                   'id="new_phone"', "data-question-form", "data-email-form", "<dialog", "验证码收不到怎么办？"):
        assert marker in account, marker
    # Recovery, linked from the sign-in page: the password by question or by SMS, the username by SMS.
    password = await shell("/recover/password")
    assert scripts(password)[-1] == "js/pages/recover-password.js"
    for route in ("password_resets.question.start", "password_resets.question.finish", "password_resets.sms.start",
                  "password_resets.sms.confirm"):
        assert f'data-captcha="{route}"' in password and f"&quot;{route}&quot;" in password, route
    username = await shell("/recover/username")
    assert scripts(username)[-1] == "js/pages/recover-username.js"
    assert 'data-captcha="username_recoveries.create"' in username and "data-send-code" in username
    login = await shell("/login")
    assert '<a href="/recover/password">忘记密码？</a>' in login
    assert '<a href="/recover/username">忘记用户名？</a>' in login
    for page in ("/", "/photo", "/account"):  # the candidate header links 注册维护
        assert '<a href="/account">注册维护</a>' in await shell(page), page
    for path in ("/account/1", "/recover", "/recover/password/x", "/agreement/2"):
        assert (await client.get(path)).status == 404, path


async def test_page_assets_have_versioned_urls_cached_for_a_year(client: TestClient) -> None:
    seen: set[str] = set()
    for path in PAGE_PATHS.values():
        seen.update(ASSET_URL.findall(await (await client.get(path)).text()))
    assert any(url.endswith("/css/app.css") for url in seen)
    assert any(url.endswith("/js/pow-worker.js") for url in seen)
    for url in seen:
        digest, file = url.removeprefix("/static/").split("/", 1)
        assert digest == hashlib.sha256((STATIC_DIR / file).read_bytes()).hexdigest()[:12]
        resp = await client.get(url, headers={"Accept-Encoding": "identity"})
        assert resp.status == 200, url
        assert resp.headers["Cache-Control"] == IMMUTABLE == "public, max-age=31536000, immutable"
        assert resp.headers["Content-Type"].startswith("text/css" if url.endswith(".css") else "text/javascript")
        assert await resp.read() == (STATIC_DIR / file).read_bytes()


async def test_assets_are_sent_gzipped_and_revalidated_by_etag(client: TestClient) -> None:
    url = AssetStore().url("js/common.js")
    plain = (STATIC_DIR / "js/common.js").read_bytes()
    resp = await client.get(url, headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(await resp.read()) == plain
    refused = await client.get(url, headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert "Content-Encoding" not in refused.headers and await refused.read() == plain
    assert (await client.get(url, headers={"If-None-Match": resp.headers["ETag"]})).status == 304


async def test_an_old_digest_gets_the_current_file_uncached_and_an_unknown_file_a_404(client: TestClient) -> None:
    stale = await client.get("/static/000000000000/js/common.js")
    assert stale.status == 200
    assert stale.headers["Cache-Control"] == "no-cache"
    missing = await client.get("/static/000000000000/js/nothing.js")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    assert (await client.get("/static/../../gateway/app.py")).status == 404
    assert (await client.get("/exams/abc/enrol")).status == 404


async def test_page_routes_are_named_pages_and_shed_as_candidate_reads(client: TestClient) -> None:
    named = {r.name: r for r in client.app.router.routes() if (r.name or "").startswith(pages.ROUTE_PREFIX)}
    expected = {f"pages.{spec.name}" for spec in (*pages.PAGES, CONSOLE)} | {"pages.static"}
    assert set(named) == expected
    operations = client.app[routing.OPERATION]
    for name, route in named.items():
        assert route.method in ("GET", "HEAD")
        assert operations[name].shedding_class == "candidate_read"


def test_a_shell_carries_the_live_captcha_mode_of_its_routes() -> None:
    renderer = ShellRenderer(AssetStore())
    spec = next(spec for spec in pages.PAGES if spec.name == "login")
    renderer.add(spec)
    default = renderer.shell("login", validate(DEFAULT, 0))
    assert b"data-live=\"{&quot;captcha&quot;:{&quot;sessions.create&quot;:&quot;either&quot;}}\"" in default.body
    changed = validate(merge_patch(DEFAULT, {"captcha": {"routes": {"sessions.create": "pow"}}}), 1)
    shell = renderer.shell("login", changed)
    assert b"&quot;sessions.create&quot;:&quot;pow&quot;" in shell.body
    assert shell.etag != default.etag
    assert renderer.shell("login", changed) is shell  # cached per version


def test_a_missing_browser_skips_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.browser.conftest import unavailable

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI: no browser"):
        unavailable("no browser")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no browser"):
        unavailable("no browser")
