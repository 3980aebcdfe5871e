"""Candidate authentication: ``Authorization: Bearer <session token>`` → the candidate's id, or 401."""

from __future__ import annotations

from aiohttp import web

from core import sessions
from gateway import keys, throttle
from gateway.errors import Unauthorized

CANDIDATE_ID = web.RequestKey("signed_in_candidate", int)
_CHALLENGE = 'Bearer realm="examgate"'


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
    found = request.get(CANDIDATE_ID)
    if found is not None:
        return found
    token = bearer_token(request)
    app = request.app
    resolved = await sessions.resolve(app[keys.REDIS], token, settings=app[keys.SESSIONS])
    if resolved is None:
        raise NotSignedIn("登录已失效，请重新登录", invalid=True)
    request[CANDIDATE_ID] = resolved
    request[throttle.CANDIDATE_KEY] = str(resolved)
    return resolved


async def enforce_candidate_rules(request: web.Request) -> None:
    """Decide the route's rate limits keyed by candidate, once ``candidate_id`` has run.

    The throttle middleware runs before the handler knows the candidate, so it decides the
    ip and global rules and leaves these out; a route without such rules costs nothing here.
    """
    live = request.app[keys.LIVE].current
    name = request.match_info.route.name or ""
    rules = live.rules_for(name)
    if not rules:
        return
    if live.body_keyed(name):  # the middleware left every rule of the route to the handler
        await throttle.enforce(request, rules=rules)
        return
    by_candidate = tuple(rule for rule in rules if rule.key == "candidate")
    if by_candidate:
        await throttle.enforce(request, rules=by_candidate)
