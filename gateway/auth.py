"""Candidate authentication: ``Authorization: Bearer <session token>`` → the candidate's id, or 401."""

from __future__ import annotations

from typing import cast

from aiohttp import web

from core import sessions
from core.redis import abandon
from gateway import keys, throttle
from gateway.errors import Unauthorized
from ratelimit.limiter import PendingCheck, Verdict
from ratelimit.rules import Rule

CANDIDATE_ID = web.RequestKey("signed_in_candidate", int)
# What ``submit_candidate`` hands to ``finish_candidate``: the id already known, or the lookup in flight.
PendingCandidate = int | sessions.PendingResolve | None
# The lookup the candidate wrapper of ``gateway.routing`` started for a route that finishes it itself.
PENDING_CANDIDATE: web.RequestKey[PendingCandidate] = web.RequestKey("pending_candidate", object)  # type: ignore[arg-type]
_CHALLENGE = 'Bearer realm="examgate"'
# (the candidate this process saw the session belong to, its rules' decision sent beside the lookup)
EARLY_CHECK: web.RequestKey[tuple[int, Verdict | PendingCheck]] = web.RequestKey(
    "early_candidate_check", tuple)


class NotSignedIn(Unauthorized):
    """No session token, or one that is unknown, expired or malformed (401 with ``WWW-Authenticate``)."""

    def __init__(self, message: str | None = None, *, invalid: bool = False) -> None:
        challenge = _CHALLENGE + (', error="invalid_token"' if invalid else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


def bearer_token(request: web.Request) -> str:
    """The bearer token of the request; raises NotSignedIn when there is none."""
    header = request.headers.get("Authorization")
    if not header:
        raise NotSignedIn()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotSignedIn("请先登录（Authorization: Bearer <令牌>）")
    return token


async def candidate_id(request: web.Request) -> int:
    """The signed-in candidate (renewing the session's idle timeout); raises NotSignedIn otherwise."""
    return await finish_candidate(request, submit_candidate(request))


def submit_candidate(request: web.Request) -> PendingCandidate:
    """Start ``candidate_id``: issue the session lookup in this tick's batch; raises NotSignedIn without a token.

    The handler issues its own Redis commands next (one write for all) and then awaits
    ``finish_candidate`` before their replies: no Task per lookup, as ``asyncio.gather`` would make.
    When the route has candidate-keyed rules and this process has resolved the same session before
    (``keys.SEEN_SESSIONS``), the rules' decision is sent now too, beside the lookup, instead of one
    round trip after it: a session belongs to one candidate for good, so the one seen is the one the
    lookup will find, or the lookup finds none and the request is refused 401 whatever the rules said.
    """
    found = request.get(CANDIDATE_ID)
    if found is not None:
        return found
    token = bearer_token(request)
    app = request.app
    pending = sessions.submit_resolve(app[keys.REDIS], token, settings=app[keys.SESSIONS])
    if pending is not None and (rules := candidate_rules(request)):
        seen = app[keys.SEEN_SESSIONS].get(pending.keys[0])
        if seen is not None:
            subject = request[throttle.CANDIDATE_KEY] = str(seen)
            request[EARLY_CHECK] = (seen, throttle.submit_candidate_rules(request, rules, subject))
    return pending


async def finish_candidate(request: web.Request, pending: PendingCandidate) -> int:
    """The signed-in candidate of a ``submit_candidate``; raises NotSignedIn when the session is not live.

    Learning the candidate decides the route's candidate-keyed rate limits at once (RateLimited
    when refused): the edge ran before the candidate was known and left them out. No handler has
    to remember them; a route without such rules costs no coroutine here.
    """
    if pending.__class__ is int:
        return pending
    # mypy narrows a class check only where it holds: what is left here is the lookup or None.
    lookup = cast("sessions.PendingResolve | None", pending)
    seen, decision = request.get(EARLY_CHECK) or (None, None)
    try:
        resolved = await sessions.finish_resolve(request.app[keys.REDIS], lookup)
    except BaseException:
        _abandon_check(decision)
        raise
    if resolved is None:
        _abandon_check(decision)
        if seen is not None and lookup is not None:
            # Dead now (signed out, expired): its old candidate's budget is not spent again on its behalf.
            request.app[keys.SEEN_SESSIONS].pop(lookup.keys[0], None)
        raise NotSignedIn("登录已失效，请重新登录", invalid=True)
    request[CANDIDATE_ID] = resolved
    request[throttle.CANDIDATE_KEY] = str(resolved)
    if decision is not None and seen == resolved:
        await throttle.settle(request, decision)
        return resolved
    _abandon_check(decision)
    rules = candidate_rules(request)
    if rules:
        if lookup is not None:
            request.app[keys.SEEN_SESSIONS][lookup.keys[0]] = resolved
        await throttle.enforce(request, rules=rules)
    return resolved


def _abandon_check(decision: Verdict | PendingCheck | None) -> None:
    if isinstance(decision, PendingCheck):
        abandon(decision.reply)


def abandon_candidate(pending: PendingCandidate) -> None:
    """Give up on a session lookup ``submit_candidate`` started (its handler raised before finishing it)."""
    if isinstance(pending, sessions.PendingResolve):
        abandon(pending.reply)


async def signed_in(request: web.Request) -> int:
    """The candidate of a ``session=BATCHED`` route: finishes the lookup the candidate wrapper started."""
    return await finish_candidate(request, request[PENDING_CANDIDATE])


def candidate_rules(request: web.Request) -> tuple[Rule, ...]:
    """The rules ``finish_candidate`` decides for this request (no I/O)."""
    live = request.app[keys.LIVE].current
    if not live.rules:
        return ()
    rules = live.rules_for(request.match_info.route.name or "")
    return tuple(rule for rule in rules if rule.key == "candidate") if rules else ()
