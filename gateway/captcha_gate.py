"""The guard of a protected POST: its captcha (or a load-test token) and its body-keyed rate limits, together.

The route's captcha mode is live config (``captcha.routes``). A valid ``X-Loadtest-Token``
(issued by ``POST /admin/api/v1/loadtest-tokens``) skips the captcha while it lasts. The
captcha check and the rate-limit decision are started together, so their Redis commands
leave in the same tick; when both refuse, the throttle's answer wins (a throttled client
learns nothing about its captcha).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiohttp import web

from captcha import check, loadtest
from captcha.errors import CaptchaInvalid
from gateway import keys, throttle

log = logging.getLogger("examgate.captcha")

LOADTEST_HEADER = "X-Loadtest-Token"


def route_name(request: web.Request) -> str:
    """The name of the route serving ``request``."""
    return request.match_info.route.name or ""


def loadtest_claims(request: web.Request) -> loadtest.LoadtestClaims | None:
    """The claims of the request's valid load-test token, or None (no header, forged or lapsed)."""
    token = request.headers.get(LOADTEST_HEADER)
    if token is None:
        return None
    return loadtest.read(request.app[keys.LOADTEST_KEY], token)


async def check_captcha(request: web.Request, body: dict[str, Any]) -> None:
    """Pass, or raise ``CaptchaInvalid``: the body's ``captcha`` against the route's live mode."""
    app = request.app
    mode = app[keys.LIVE].current.captcha_for(route_name(request))
    if mode == "off" or loadtest_claims(request) is not None:
        return
    try:
        await check.consume(app[keys.REDIS], body.get("captcha"), mode=mode, hmac_key=app[keys.POW_KEY])
    except CaptchaInvalid as exc:
        log.info("captcha refused on %s: %s", route_name(request), exc.reason)
        raise


async def enforce_body_rules(request: web.Request, *, account: str | None = None,
                             id_number: str | None = None) -> None:
    """Decide the route's rate limits when they key on the body (the middleware decided the others already)."""
    live = request.app[keys.LIVE].current
    name = route_name(request)
    # The same test as the throttle middleware: it leaves a route to its handler only then.
    if throttle.handler_decides(live, name):
        await throttle.enforce(request, account=account, id_number=id_number, rules=live.rules_for(name))


async def _call(submit: Callable[[], object]) -> None:
    submit()


async def guard(request: web.Request, body: dict[str, Any], *, account: str | None = None,
                id_number: str | None = None, alongside: Callable[[], object] | None = None) -> None:
    """Captcha and body-keyed rate limits at once; raise the throttle's refusal first, then the captcha's.

    ``alongside`` (no I/O of its own: it submits Redis commands) is called in the same tick as the
    checks send theirs, so its commands leave in their auto-pipelined batch.
    """
    checks = [enforce_body_rules(request, account=account, id_number=id_number), check_captcha(request, body)]
    if alongside is not None:
        checks.append(_call(alongside))
    throttled, captcha, *_ = await asyncio.gather(*checks, return_exceptions=True)
    if isinstance(throttled, BaseException):
        raise throttled
    if isinstance(captcha, BaseException):
        raise captcha
