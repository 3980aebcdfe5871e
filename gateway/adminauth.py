"""Operator authentication: ``Authorization: Bearer <admin token>``, answered with the token's name.

Tokens are compared in constant time against every configured token (no early exit), after
hashing both sides so that a token's length does not show either. Tokens are never logged.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from gateway import keys
from gateway.errors import ApiError

ADMIN_NAME = web.RequestKey("admin_name", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminUnauthorized(ApiError):
    """No admin token, or not a configured one (401 with ``WWW-Authenticate: Bearer``)."""

    status, code, message = 401, "unauthorized", "an admin bearer token is required"

    def __init__(self, message: str | None = None, *, invalid: bool = False) -> None:
        challenge = 'Bearer realm="examgate-admin"' + (', error="invalid_token"' if invalid else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def token_name(authorization: str | None, tokens: Mapping[str, str]) -> str:
    """The name of the admin token in an Authorization header; raises AdminUnauthorized otherwise."""
    if not authorization:
        raise AdminUnauthorized()
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise AdminUnauthorized("the Authorization header must be: Bearer <admin token>")
    offered = _digest(presented.encode("utf-8", "surrogateescape"))
    found: str | None = None
    for name, token in tokens.items():
        # Every token is compared, whichever matches: the time taken does not tell which one did.
        if hmac.compare_digest(offered, _digest(token)) and found is None:
            found = name
    if found is None:
        raise AdminUnauthorized("the admin token is not valid", invalid=True)
    return found


def authenticate(request: web.Request) -> str:
    """The admin name behind the request's bearer token (also kept as ``request[ADMIN_NAME]``)."""
    name = token_name(request.headers.get("Authorization"), request.app[keys.SETTINGS].admin_tokens)
    request[ADMIN_NAME] = name
    return name


def admin_only(handler: Handler) -> Handler:
    """Wrap a handler so it runs only for a request with a valid admin token."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        authenticate(request)
        return await handler(request)

    return guarded
