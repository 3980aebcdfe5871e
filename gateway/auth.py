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
