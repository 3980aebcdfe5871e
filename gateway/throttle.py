"""Rate limits at the edge: every rule matching a request decided in one call to the limiter.

Rules keyed by ip or global are decided by the edge (``gateway.edge``), from the request
itself, before the handler.
Rules keyed by candidate are decided by ``gateway.auth.finish_candidate`` the moment the
candidate is known (the candidate wrapper of ``gateway.routing`` makes every candidate route
learn it). Routes whose rules key on what the body says (account, id_number), and the lookups,
declare so in the route table; their handler calls ``enforce`` once it has parsed the body, so
that all of the request's rules still go to Redis together (for the lookups, with the captcha
and the record read). Rules with ``counts: failures`` (wrong passwords per account) are only
checked; the handler reports a failure with ``record_failure``, which consumes them.
"""

from __future__ import annotations

from aiohttp import web
from multidict import istr

from core.identity import normalise_id_number, normalise_username
from gateway import keys
from ratelimit.headers import ratelimit_header, ratelimit_policy_header
from ratelimit.limiter import PendingCheck, Verdict
from ratelimit.rules import Rule

VERDICT_KEY = web.RequestKey("ratelimit_verdict", Verdict)
POLICY_HEADER = istr("RateLimit-Policy")
RATELIMIT_HEADER = istr("RateLimit")
CANDIDATE_KEY = web.RequestKey("candidate_id", str)
GLOBAL_SUBJECT = "all"


def handler_decides(app: web.Application, route_name: str) -> bool:
    """True when the edge leaves the route's rules to its handler (declared in the route table)."""
    return route_name in app[keys.HANDLER_DECIDES]


def _checks(request: web.Request, rules: tuple[Rule, ...], account: str | None,
            id_number: str | None) -> list[tuple[Rule, str]]:
    """Each rule with its subject for this request; a rule whose subject is missing does not apply.

    Accounts and id numbers are keyed in the form registration stores, so every spelling that
    reaches an account (full-width, another case, spaces) spends that account's one budget.
    """
    checks = []
    ip = None
    for rule in rules:
        kind = rule.key
        if kind == "ip":
            if ip is None:
                ip = request.app[keys.CLIENT_IP].of(request)
            checks.append((rule, ip))
        elif kind == "global":
            checks.append((rule, GLOBAL_SUBJECT))
        elif kind == "candidate":
            candidate = request.get(CANDIDATE_KEY)
            if candidate is not None:  # an anonymous request
                checks.append((rule, candidate))
        elif kind == "account":
            if account and (subject := normalise_username(account)):
                checks.append((rule, subject))
        elif id_number and (subject := normalise_id_number(id_number)):
            checks.append((rule, subject))
    return checks


async def enforce(request: web.Request, *, account: str | None = None, id_number: str | None = None,
                  rules: tuple[Rule, ...] | None = None) -> None:
    """Decide the route's rules for this request; raise RateLimited / LimiterUnavailable when refused."""
    if rules is None:
        rules = request.app[keys.LIVE].current.rules_for(request.match_info.route.name or "")
    checks = _checks(request, rules, account, id_number)
    if checks:
        await settle(request, request.app[keys.LIMITER].submit(checks))


def submit_candidate_rules(request: web.Request, rules: tuple[Rule, ...], candidate: str) -> Verdict | PendingCheck:
    """Queue the decision of candidate-keyed ``rules`` for ``candidate`` in this tick's batch (``settle`` it)."""
    return request.app[keys.LIMITER].submit([(rule, candidate) for rule in rules])


async def settle(request: web.Request, pending: Verdict | PendingCheck) -> None:
    """Await a submitted decision; raise RateLimited / LimiterUnavailable when refused."""
    verdict = await request.app[keys.LIMITER].finish(pending)
    if not verdict.allowed:
        raise verdict.refusal()  # type: ignore[misc]
    request[VERDICT_KEY] = verdict


async def record_failure(request: web.Request, *, account: str | None = None,
                         id_number: str | None = None) -> None:
    """Count a failed attempt (a wrong password) against the route's ``counts: failures`` rules."""
    rules = request.app[keys.LIVE].current.rules_for(request.match_info.route.name or "")
    checks = _checks(request, tuple(rule for rule in rules if rule.counts == "failures"), account, id_number)
    if checks:
        # The verdict does not matter: this request is answered already; the next one is refused.
        await request.app[keys.LIMITER].check(checks, failures=True)


def add_headers(response: web.StreamResponse, verdict: Verdict) -> None:
    policy = ratelimit_policy_header(verdict)
    current = ratelimit_header(verdict)
    if policy is not None and current is not None:
        headers = response.headers
        headers[POLICY_HEADER] = policy
        headers[RATELIMIT_HEADER] = current
