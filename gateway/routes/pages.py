"""Candidate pages and static assets: HTML shells from memory that call the JSON API from the browser.

Every page is a static shell (``gateway/web/templates``) plus plain JavaScript and CSS
(``gateway/web/static``); rendering one reads neither Redis nor PostgreSQL, so no page is
slower than the API it calls. Their routes are named ``pages.*`` (``pages.static`` for the
assets) and declared in the route table like the API's, so the OpenAPI document lists them with
their HTML and asset answers. They are GET routes, so overload shedding counts them as candidate
reads: a page is refused exactly when the reads it would make are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.errors import NotFoundError
from gateway.routing import Answer, Param, Routes
from gateway.web.assets import (
    IMMUTABLE,
    REVALIDATE,
    STATIC_PREFIX,
    AssetStore,
    accepts_gzip,
)
from gateway.web.shells import PAGE_HEADERS, PageSpec, ShellRenderer

ASSETS = web.AppKey("web_assets", AssetStore)
SHELLS = web.AppKey("web_shells", ShellRenderer)
ROUTE_PREFIX = "pages."

COMMON = "js/common.js"
CAPTCHA = "js/captcha.js"
LIFECYCLE = "js/lifecycle.js"
RECORDS = "js/records.js"
SMS_CODE = "js/sms-code.js"
PAGES: tuple[PageSpec, ...] = (
    PageSpec("home", "/", "首页", "home", (COMMON, "js/pages/home.js")),
    # Registration: the notice and the agreement first, the phone proven by an SMS code, optional degrees.
    PageSpec("register", "/register", "考生注册", "register",
             (COMMON, CAPTCHA, LIFECYCLE, RECORDS, SMS_CODE, "js/pages/register.js"),
             captcha_routes=("accounts.create", "sms_codes.create")),
    PageSpec("login", "/login", "考生登录", "login", (COMMON, CAPTCHA, "js/pages/login.js"),
             captcha_routes=("sessions.create",)),
    # A newer agreement than the one accepted, read and accepted after sign-in (or when enrolling is refused).
    PageSpec("agreement", "/agreement", "网上报名协议", "agreement", (COMMON, LIFECYCLE, "js/pages/agreement.js")),
    # 注册维护: the profile and its records, the phone (two codes), the security question and the email.
    PageSpec("account", "/account", "注册维护", "account",
             (COMMON, CAPTCHA, LIFECYCLE, RECORDS, SMS_CODE, "js/pages/account.js"),
             captcha_routes=("sms_codes.create",)),
    PageSpec("recover_password", "/recover/password", "找回密码", "recover-password",
             (COMMON, CAPTCHA, SMS_CODE, "js/pages/recover-password.js"),
             captcha_routes=("password_resets.question.start", "password_resets.question.finish",
                             "password_resets.sms.start", "password_resets.sms.confirm")),
    PageSpec("recover_username", "/recover/username", "找回用户名", "recover-username",
             (COMMON, CAPTCHA, SMS_CODE, "js/pages/recover-username.js"),
             captcha_routes=("sms_codes.create", "username_recoveries.create")),
    PageSpec("enrol", "/exams/{exam_id:[0-9]{1,10}}/enrol", "网上报名", "enrol", (COMMON, "js/pages/enrol.js")),
    PageSpec("queue", "/exams/{exam_id:[0-9]{1,10}}/queue", "排队等候", "queue", (COMMON, "js/pages/queue.js")),
    PageSpec("seat", "/registrations/{registration_id:[0-9]{1,18}}/seat", "选择考点", "seat",
             (COMMON, "js/pages/seat.js")),
    PageSpec("pay", "/registrations/{registration_id:[0-9]{1,18}}/pay", "缴费", "pay",
             (COMMON, "js/pages/pay.js")),
    # The registration lifecycle: its home (status and flow), the notice and commitment, the edit form.
    PageSpec("registration", "/registrations/{registration_id:[0-9]{1,18}}", "报名状态", "registration",
             (COMMON, LIFECYCLE, "js/pages/registration.js")),
    PageSpec("commitment", "/registrations/{registration_id:[0-9]{1,18}}/commitment", "报名须知与告知承诺",
             "commitment", (COMMON, LIFECYCLE, "js/pages/commitment.js")),
    PageSpec("registration_edit", "/registrations/{registration_id:[0-9]{1,18}}/edit", "修改报名信息", "enrol",
             (COMMON, "js/pages/enrol.js")),
    # The registration photo: rules, the current one with its review, the upload, the change request.
    PageSpec("photo", "/photo", "报名照片", "photo", (COMMON, CAPTCHA, "js/pages/photo.js"),
             captcha_routes=("photos.put",)),
    PageSpec("tickets", "/tickets", "准考证打印", "tickets", (COMMON, CAPTCHA, "js/pages/tickets.js"),
             captcha_routes=("tickets.lookup",)),
    PageSpec("scores", "/scores", "成绩查询", "scores", (COMMON, CAPTCHA, "js/pages/scores.js"),
             captcha_routes=("scores.lookup",)),
    # 证书查询: a certificate by its number (filled in from the QR code's link) and holder's name; its PDF's signature.
    PageSpec("certificates", "/certificates", "证书查询", "certificates", (COMMON, CAPTCHA, "js/pages/certificates.js"),
             captcha_routes=("certificates.verify",)),
    # Score review requests (复核): the candidate's scores to choose from, the requests and their answers.
    PageSpec("score_reviews", "/score-reviews", "成绩复核", "score-reviews", (COMMON, "js/pages/score-reviews.js")),
    # 合格标准: each exam's pass marks per level and subject, and how long a pass stays valid.
    PageSpec("pass_marks", "/pass-marks", "合格标准", "pass-marks", (COMMON, "js/pages/pass-marks.js")),
    # Operators' review of registrations: the console's token (sessionStorage), a page of its own; the pages
    # under /console/ sign in with js/console-signin.js.
    PageSpec("reviews", "/console/reviews", "资格审核", "console-reviews",
             (COMMON, "js/console-signin.js", "js/console-reviews.js"), header="console-reviews"),
    # Operators' review of photos and of the candidates' change requests, the same way.
    PageSpec("photo_review", "/console/photos", "照片审核", "console-photos",
             (COMMON, "js/console-signin.js", "js/console-photos.js"), header="console-photos"),
    # Operators' imports: kind, file and batch id; checked (every bad row by line), then applied; the latest batches.
    PageSpec("imports", "/console/imports", "数据导入", "console-imports",
             (COMMON, "js/console-signin.js", "js/console-imports.js"), header="console-imports"),
    # Operators' answers to score review requests, the same way.
    PageSpec("score_review_console", "/console/score-reviews", "成绩复核", "console-score-reviews",
             (COMMON, "js/console-signin.js", "js/console-score-reviews.js"), header="console-score-reviews"),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = Routes("Pages")

# Path ids of the pages: what their route patterns take ({1,10} and {1,18} digits); anything else is a 404.
_PAGE_IDS = {"exam_id": 9_999_999_999, "registration_id": 999_999_999_999_999_999}
NOT_MODIFIED = Answer(None, "not modified: the copy named by If-None-Match is current")
HTML = Answer({"type": "string"}, "the page's shell (ETag; gzipped when accepted)", "text/html")


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def _respond(request: web.Request, body: bytes, gzipped: bytes | None, etag: str,
             headers: dict[str, str]) -> web.Response:
    """200 with the gzipped body when the client takes it, or 304 when its copy is current."""
    common = {**headers, "ETag": etag, "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("If-None-Match"), etag):
        common.pop("Content-Type", None)
        return web.Response(status=304, headers=common)
    if gzipped is not None and accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return web.Response(body=gzipped, headers={**common, "Content-Encoding": "gzip"})
    return web.Response(body=body, headers=common)


def page_handler(name: str) -> Handler:
    """The handler serving page ``name``'s shell under the current live config."""

    async def serve_page(request: web.Request) -> web.Response:
        shell = request.app[SHELLS].shell(name, request.app[keys.LIVE].current)
        return _respond(request, shell.body, shell.gzipped, shell.etag, PAGE_HEADERS)

    serve_page.__doc__ = f"The {name} page's shell."
    return serve_page


async def static_asset(request: web.Request) -> web.Response:
    """A static asset; cached for a year when the URL names its current digest, revalidated otherwise."""
    asset = request.app[ASSETS].get(request.match_info["path"])
    if asset is None:
        raise NotFoundError("文件不存在", code="not_found")
    fresh = request.match_info["digest"] == asset.digest
    headers = {"Content-Type": asset.content_type, "Cache-Control": IMMUTABLE if fresh else REVALIDATE,
               "X-Content-Type-Options": "nosniff"}
    return _respond(request, asset.body, asset.gzipped, f'"{asset.digest}"', headers)


routes.add("GET", STATIC_PREFIX + "/{digest:[0-9a-f]{1,64}}/{path:.+}", ROUTE_PREFIX + "static", static_asset,
           params=(Param("digest", "path", {"type": "string", "pattern": "^[0-9a-f]{1,64}$"},
                         "the file's digest (the first 12 hex digits of its SHA-256); another one gets the "
                         "current file with no-cache"),
                   Param("path", "path", {"type": "string", "minLength": 1}, "the file, e.g. js/common.js")),
           answers={200: Answer({"type": "string"}, "CSS, JavaScript, SVG, PNG or text, by the file's suffix; "
                                                    "cached for a year when the digest is current", "*/*"),
                    304: NOT_MODIFIED},
           errors={404: "not_found: no such file"})


def declare_page(table: Routes, spec: PageSpec) -> None:
    """Declare ``GET spec.path`` as ``pages.<name>`` in ``table``."""
    params = tuple(Param(name, "path", {"type": "integer", "minimum": 0, "maximum": top})
                   for name, top in _PAGE_IDS.items() if "{" + name + ":" in spec.path)
    declared: dict[str, Any] = {"errors": {404: "not_found: the path is not one of a page"}} if params else {}
    table.add("GET", spec.path, ROUTE_PREFIX + spec.name, page_handler(spec.name),
              summary=f"The {spec.name} page ({spec.title})", params=params,
              answers={200: HTML, 304: NOT_MODIFIED}, **declared)


def shells(app: web.Application) -> ShellRenderer:
    """The application's shell renderer, made (with the asset store) on first use."""
    if SHELLS not in app:
        assets = app[ASSETS] = AssetStore()
        app[SHELLS] = ShellRenderer(assets)
    return app[SHELLS]


for _spec in PAGES:
    declare_page(routes, _spec)


def setup(app: web.Application) -> None:
    """Assemble the candidate pages' shells (the asset store with them)."""
    for spec in PAGES:
        shells(app).add(spec)
