"""Operator authentication: ``Authorization: Bearer <token>`` resolved to an ``Operator`` (name, role, scope).

Two kinds of token are accepted:

- ``EXAMGATE_ADMIN_TOKENS``: national admins named in the settings (bootstrap). The token offered is
  compared in constant time against every configured one (no early exit), after hashing both sides
  so that a token's length does not show either.
- tokens issued to stored operators (``core.operators``): found by their SHA-256 digest in one
  indexed query, then trusted for ``EXAMGATE_OPERATOR_TOKEN_CACHE_S`` in this process's memory, so
  an admin route does not cost a PostgreSQL read per request. A token revoked, or an operator
  disabled or changed, takes effect within that time in every process (at once in the process that
  made the change); expiry is checked on every use. Looking a digest up tells nothing by its timing:
  the digest of a guess says nothing of how close the guess is.

Unknown, revoked, expired or disabled: one answer (401, ``error="invalid_token"``). Tokens are never
logged. Each operator route admits the roles its declaration names (``gateway.routing``); another
role gets 403 ``forbidden``. Handlers learn the caller's scope with ``scope`` / ``in_scope``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import asyncpg
from aiohttp import web
from cachetools import TTLCache

from core import operators
from core.operators import ROLES, TOKEN_PREFIX, Operator, Resolved, token_digest
from core.timeutil import utcnow
from gateway import keys
from gateway.errors import ApiError, Forbidden

__all__ = [
    "ADMIN_NAME", "OPERATOR", "OPERATOR_TOKENS", "DEFAULT_ROLES", "ROLES", "ROLE_LABELS",
    "AdminUnauthorized", "RoleForbidden", "Operator", "OperatorTokens",
    "authenticate", "in_scope", "install", "operator_of", "operator_route", "scope", "stored_operator", "token_name",
]  # fmt: skip

log = logging.getLogger("examgate.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_NAME = web.RequestKey("admin_name", str)  # the operator's name (the audit's actor)
OPERATOR = web.RequestKey("operator", Operator)
# Who may call an operator route that names no roles: reviewers are let in route by route.
DEFAULT_ROLES = ("operator", "admin")
ROLE_LABELS = {"reviewer": "审核员", "operator": "运维人员", "admin": "管理员"}
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per token
CACHE_MAX_TOKENS = 10_000
# A stored token is the prefix and 43 URL-safe characters: anything else is not looked up.
_STORED_TOKEN_CHARS = len(TOKEN_PREFIX) + 43
_PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class AdminUnauthorized(ApiError):
    """No admin token, or not a valid one (401 with ``WWW-Authenticate: Bearer``)."""

    status, code, message = 401, "unauthorized", "请提供管理令牌（Authorization: Bearer <令牌>）"

    def __init__(self, message: str | None = None, *, invalid: bool = False) -> None:
        challenge = 'Bearer realm="examgate-admin"' + (', error="invalid_token"' if invalid else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class RoleForbidden(Forbidden):
    """The operator's role may not use this route (403 ``forbidden``)."""

    def __init__(self, role: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        super().__init__(f"当前账号的角色（{ROLE_LABELS.get(role, role)}）无权使用此功能",
                         details={"role": role, "allowed_roles": allowed})


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def _presented(authorization: str | None) -> str:
    """The token of a ``Bearer`` Authorization header; AdminUnauthorized when there is none."""
    if not authorization:
        raise AdminUnauthorized()
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise AdminUnauthorized("Authorization 请求头应为：Bearer <管理令牌>")
    return presented


def _configured(offered: bytes, tokens: Mapping[str, str]) -> str | None:
    found: str | None = None
    for name, token in tokens.items():
        # Every token is compared, whichever matches: the time taken does not tell which one did.
        if hmac.compare_digest(offered, _digest(token)) and found is None:
            found = name
    return found


def _may_be_stored(presented: str) -> bool:
    """Only what has the shape of an issued token is looked up: other guesses cost no query."""
    return len(presented) == _STORED_TOKEN_CHARS and presented.startswith(TOKEN_PREFIX)


def _invalid() -> AdminUnauthorized:
    return AdminUnauthorized("管理令牌无效、已过期或已被撤销", invalid=True)


def token_name(authorization: str | None, tokens: Mapping[str, str]) -> str:
    """The name of the token of ``tokens`` in an Authorization header; raises AdminUnauthorized otherwise."""
    found = _configured(token_digest(_presented(authorization)), tokens)
    if found is None:
        raise _invalid()
    return found


class _Unknown:
    """Not in the cache (None there means: looked up, no live token)."""


_UNKNOWN = _Unknown()


class OperatorTokens:
    """Stored operator tokens by digest: looked up in PostgreSQL, then kept in process memory ``cache_s``.

    Lookups of the same digest meanwhile share one query; a use is written to ``last_used_at`` at most
    once per ``touch_every_s`` per token, in a task of its own, never on the request's path.
    """

    def __init__(self, cache_s: float, *, touch_every_s: float = TOUCH_EVERY_S, max_tokens: int = CACHE_MAX_TOKENS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_s = cache_s
        self.touch_every_s = touch_every_s
        self._known: TTLCache[bytes, Resolved | None] | None = (
            TTLCache(max_tokens, cache_s, timer=clock) if cache_s > 0 else None)
        self._touched: TTLCache[int, bool] = TTLCache(max_tokens, touch_every_s, timer=clock)
        self._pending: dict[bytes, asyncio.Future[Resolved | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._generation = 0  # moves on with each forget(): a lookup begun before it is not kept

    async def resolve(self, pool: asyncpg.Pool, digest: bytes) -> Operator | None:
        """The operator behind a token's digest while the token is live; None otherwise."""
        found = self._known.get(digest, _UNKNOWN) if self._known is not None else _UNKNOWN
        if found is _UNKNOWN:
            pending = self._pending.get(digest)
            if pending is None:
                pending = self._pending[digest] = asyncio.ensure_future(
                    self._look_up(pool, digest, self._generation))
            # Shielded: a caller that gives up (a client gone) must not cancel the others' lookup.
            found = await asyncio.shield(pending)
        assert not isinstance(found, _Unknown)
        if found is None or found.expires_at <= utcnow():
            return None
        self._note_use(pool, found)
        return found.operator

    def forget(self) -> None:
        """Drop what this process knows: the next use of every token looks it up again."""
        self._generation += 1
        self._pending.clear()
        if self._known is not None:
            self._known.clear()

    async def drain(self, app: web.Application | None = None) -> None:
        """Wait (briefly) for the ``last_used_at`` writes under way."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=2)

    async def _look_up(self, pool: asyncpg.Pool, digest: bytes, generation: int) -> Resolved | None:
        try:
            found = await operators.resolve(pool, digest)
            if self._known is not None and generation == self._generation:
                self._known[digest] = found
            return found
        finally:
            if generation == self._generation:  # else forget() dropped it, and a newer lookup may stand there
                self._pending.pop(digest, None)

    def _note_use(self, pool: asyncpg.Pool, found: Resolved) -> None:
        token_id = found.operator.token_id
        if token_id is None or token_id in self._touched:
            return
        self._touched[token_id] = True
        last = found.last_used_at
        if last is not None and (utcnow() - last).total_seconds() < self.touch_every_s:
            return  # recorded lately (by another process, or before this one started)
        task = asyncio.get_running_loop().create_task(self._touch(pool, token_id))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _touch(self, pool: asyncpg.Pool, token_id: int) -> None:
        try:
            await operators.touch(pool, token_id, self.touch_every_s)
        except _PG_ERRORS as exc:  # a lost "last used" mark is not worth failing anything for
            log.warning("could not record the use of operator token %s: %r", token_id, exc)


OPERATOR_TOKENS = web.AppKey("operator_tokens", OperatorTokens)


def install(app: web.Application) -> OperatorTokens:
    """The application's stored-token resolver, made once (before the application starts)."""
    tokens = app.get(OPERATOR_TOKENS)
    if tokens is None:
        tokens = app[OPERATOR_TOKENS] = OperatorTokens(app[keys.SETTINGS].operator_token_cache_s)
        app.on_shutdown.append(tokens.drain)
    return tokens


async def authenticate(request: web.Request) -> Operator:
    """The operator behind the request's bearer token, kept as ``request[OPERATOR]`` (and its name as
    ``request[ADMIN_NAME]``); raises AdminUnauthorized when there is none."""
    app = request.app
    presented = _presented(request.headers.get("Authorization"))
    offered = token_digest(presented)
    name = _configured(offered, app[keys.SETTINGS].admin_tokens)
    if name is not None:
        operator: Operator | None = Operator(name, "admin", None)
    elif _may_be_stored(presented) and OPERATOR_TOKENS in app:
        operator = await app[OPERATOR_TOKENS].resolve(app[keys.PG], offered)
    else:
        operator = None
    if operator is None:
        raise _invalid()
    request[OPERATOR] = operator
    request[ADMIN_NAME] = operator.name
    return operator


async def stored_operator(request: web.Request) -> Operator | None:
    """The stored operator behind the request's bearer token while it is live; None for anything else."""
    app = request.app
    try:
        presented = _presented(request.headers.get("Authorization"))
    except AdminUnauthorized:
        return None
    if not _may_be_stored(presented) or OPERATOR_TOKENS not in app:
        return None
    return await app[OPERATOR_TOKENS].resolve(app[keys.PG], token_digest(presented))


def operator_route(app: web.Application, handler: Handler, roles: Iterable[str] = DEFAULT_ROLES) -> Handler:
    """``handler`` for operators of ``roles`` only: 401 without a valid token, 403 ``forbidden`` for another role."""
    allowed = tuple(roles)
    unknown = set(allowed) - set(ROLES)
    if unknown or not allowed:
        raise ValueError(f"roles must be some of {ROLES}, got {allowed}")
    install(app)

    async def guarded(request: web.Request) -> web.StreamResponse:
        operator = await authenticate(request)
        if operator.role not in allowed:
            raise RoleForbidden(operator.role, allowed)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


def operator_of(request: web.Request) -> Operator:
    """The operator calling an operator route (the route's guard has authenticated it)."""
    try:
        return request[OPERATOR]
    except KeyError:
        raise RuntimeError("no operator on this request: only operator routes have one") from None


def scope(request: web.Request) -> frozenset[str] | None:
    """The provinces the calling operator may see; None: national."""
    return operator_of(request).provinces


def in_scope(request: web.Request, province: str) -> bool:
    """True when registrations of ``province`` are within the calling operator's scope."""
    return operator_of(request).sees(province)
