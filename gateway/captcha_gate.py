"""The guard of a protected POST: its captcha (or a load-test token) and its body-keyed rate limits, together.

The route's captcha mode is live config (``captcha.routes``). A valid ``X-Loadtest-Token``
(issued by ``POST /admin/api/v1/loadtest-tokens``) skips the captcha while it lasts. The
captcha check and the rate-limit decision are started together, so their Redis commands
leave in the same tick; when both refuse, the throttle's answer wins (a throttled client
learns nothing about its captcha, which is spent all the same).

A refusal by rules that live config escalates (``captcha.escalate``, such as ``login-account``
once an account's wrong passwords spent it) is not answered 429: the request must carry the
harder captcha instead (400 ``captcha_required`` otherwise, before anything else is looked at),
which it spends, and then passes the route's other rules. A load-test token does not stand in
for it. So an account's owner can still sign in while each further guess costs a solved image.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from captcha import check, loadtest
from captcha.errors import CaptchaInvalid, CaptchaRequired
from gateway import keys, throttle
from ratelimit.errors import RateLimited
from ratelimit.rules import Rule

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
    return loadtest.read_remembered(request.app[keys.LOADTEST_KEY], token)


def captcha_due(request: web.Request) -> str | None:
    """The route's captcha mode when this request must pass one (None: off, or a valid load-test token)."""
    mode = request.app[keys.LIVE].current.captcha_for(route_name(request))
    if mode == "off" or loadtest_claims(request) is not None:
        return None
    return mode


async def consume_captcha(request: web.Request, body: Any, mode: str) -> None:
    """Pass, or raise ``CaptchaInvalid``: the body's ``captcha`` consumed against ``mode``."""
    app = request.app
    try:
        await check.consume(app[keys.REDIS], captcha_of(body), mode=mode, hmac_key=app[keys.POW_KEY])
    except CaptchaInvalid as exc:
        log.info("captcha refused on %s: %s", route_name(request), exc.reason)
        raise


def captcha_of(body: Any) -> Any:
    """The ``captcha`` a request body carries: a parsed model's field, or a JSON object's member."""
    return body.get("captcha") if isinstance(body, dict) else getattr(body, "captcha", None)


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a refusal nobody awaits any more (the throttle answered first) is not an error


async def guard(request: web.Request, body: Any, *, account: str | None = None,
                id_number: str | None = None, alongside: Callable[[], object] | None = None) -> None:
    """Captcha and the route's handler-decided rate limits at once; the throttle's refusal first, then the captcha's.

    Both checks send their Redis command in this event-loop tick, and ``alongside`` (which only
    submits commands, such as a record's read) is called in it too, so the commands leave together.
    No task is made unless both checks need Redis: a coroutine awaited at once sends its command
    before the auto-pipelined flush runs, and tasks cost more than the rest of the check.
    """
    live = request.app[keys.LIVE].current
    name = route_name(request)
    rules = live.rules_for(name) if throttle.handler_decides(request.app, name) else ()
    mode = captcha_due(request)
    captcha = None
    if mode is not None and rules:
        # Made before ``alongside`` submits: its first step runs before the flush that submit schedules.
        captcha = asyncio.ensure_future(consume_captcha(request, body, mode))
        captcha.add_done_callback(_seen)
    if alongside is not None:
        alongside()
    if rules:
        try:
            await throttle.enforce(request, account=account, id_number=id_number, rules=rules)
        except RateLimited as refused:
            kind = live.escalation_for(refused.rule_ids)
            if kind is None:
                raise
            others = tuple(rule for rule in rules if rule.id not in refused.rule_ids)
            await _escalated(request, body, kind, mode, captcha, others, account=account, id_number=id_number)
            return
    if captcha is not None:
        await captcha
    elif mode is not None:
        await consume_captcha(request, body, mode)


async def _escalated(request: web.Request, body: Any, kind: str, mode: str | None,
                     captcha: asyncio.Future[None] | None, others: tuple[Rule, ...], *,
                     account: str | None, id_number: str | None) -> None:
    """Pass a request whose refusal escalates: its captcha must be of ``kind``, then the rules that did not refuse.

    The refused check consumed no rule's quota, so the others (per-ip, global) are decided again.
    """
    sent = captcha_of(body)
    if not isinstance(sent, dict) or sent.get("kind") != kind:
        raise CaptchaRequired(kind)
    if captcha is not None and mode is not None and check.accepts(mode, kind):
        await captcha  # already checking the same captcha
    else:  # the route's mode refused this kind (or it had no captcha): check it as the escalation's kind
        await consume_captcha(request, body, kind)
    if others:
        await throttle.enforce(request, account=account, id_number=id_number, rules=others)
