"""Rate limits at the edge: every rule matching a request decided in one call to the limiter.

Rules keyed by ip, global or candidate are resolved from the request itself, by the
middleware. Rules with ``counts: failures`` (wrong passwords per account) are only checked
here; the handler reports a failure with ``record_failure``, which consumes them. Routes whose rules key on what the body says (account, id_number) are left
to their handler, which calls ``enforce`` once it has parsed the body, so that all of the
request's rules still go to Redis together.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from gateway import keys
from ratelimit.headers import ratelimit_headers
from ratelimit.rules import Rule

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_KEYS = frozenset({"account", "id_number"})
HEADERS_KEY = web.RequestKey("ratelimit_headers", dict)
CANDIDATE_KEY = web.RequestKey("candidate_id", str)
GLOBAL_SUBJECT = "all"


def _subject(rule: Rule, request: web.Request, account: str | None, id_number: str | None) -> str | None:
    kind = rule.key
    if kind == "ip":
        return request.app[keys.CLIENT_IP].of(request)
    if kind == "global":
        return GLOBAL_SUBJECT
    if kind == "candidate":
        return request.get(CANDIDATE_KEY)
    if kind == "account":
        return account.strip().lower() if account else None
    return id_number.strip().upper() if id_number else None


def _checks(request: web.Request, rules: tuple[Rule, ...], account: str | None,
            id_number: str | None) -> list[tuple[Rule, str]]:
    checks = []
    for rule in rules:
        subject = _subject(rule, request, account, id_number)
        if subject is not None:  # e.g. a candidate rule on an anonymous request does not apply
            checks.append((rule, subject))
    return checks


async def enforce(request: web.Request, *, account: str | None = None, id_number: str | None = None,
                  rules: tuple[Rule, ...] | None = None) -> None:
    """Decide the route's rules for this request; raise RateLimited / LimiterUnavailable when refused."""
    if rules is None:
        rules = request.app[keys.LIVE].current.rules_for(request.match_info.route.name or "")
    checks = _checks(request, rules, account, id_number)
    if not checks:
        return
    verdict = await request.app[keys.LIMITER].check(checks)
    refusal = verdict.refusal()
    if refusal is not None:
        raise refusal
    headers = ratelimit_headers(verdict)
    if headers:
        request[HEADERS_KEY] = headers


async def record_failure(request: web.Request, *, account: str | None = None,
                         id_number: str | None = None) -> None:
    """Count a failed attempt (a wrong password) against the route's ``counts: failures`` rules."""
    rules = request.app[keys.LIVE].current.rules_for(request.match_info.route.name or "")
    checks = _checks(request, tuple(rule for rule in rules if rule.counts == "failures"), account, id_number)
    if checks:
        # The verdict does not matter: this request is answered already; the next one is refused.
        await request.app[keys.LIMITER].check(checks, failures=True)


@web.middleware
async def throttle(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply request-keyed rules before the handler; add RateLimit headers to the answer."""
    rules = request.app[keys.LIVE].current.rules_for(request.match_info.route.name or "")
    if rules and not any(rule.key in BODY_KEYS for rule in rules):
        await enforce(request, rules=rules)
    response = await handler(request)
    headers = request.get(HEADERS_KEY)
    if headers:
        response.headers.update(headers)
    return response
