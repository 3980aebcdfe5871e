"""Sign in, sign out, and the signed-in candidate's profile.

Login: captcha and the per-ip/per-account throttle (one limiter call) → the credential record
(Redis-cached) → argon2id verify in the bounded pool → a session. An unknown username is
verified against a dummy hash, so it costs and answers exactly what a wrong password does.
Once a username's wrong passwords spend ``login-account``, its sign-ins need an image captcha
(``captcha.escalate``) rather than being refused, so guessing does not lock the owner out; the
rule keys on the username as typed (normalised), never on an account, so an unknown username
escalates exactly like a known one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web

from core import candidates, sessions
from core.errors import NotFound, StorageUnavailable
from core.passwords import PoolFull
from core.timeutil import utcnow
from gateway import auth, keys, throttle
from gateway.bodies import json_response, read_json
from gateway.captcha_gate import guard
from gateway.errors import InvalidCredentials, ValidationFailed, rate_limited
from ratelimit.errors import RateLimited

log = logging.getLogger("examgate.sessions")

NO_STORE = {"Cache-Control": "no-store"}
# Longer than any password the policy allows, short enough that nobody makes argon2 chew megabytes.
MAX_PASSWORD_CHARS = 256
MAX_USERNAME_CHARS = 64


def _login_fields(body: dict[str, Any]) -> tuple[str, str]:
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, limit in (("username", MAX_USERNAME_CHARS), ("password", MAX_PASSWORD_CHARS)):
        value = body.get(name)
        if value is None or value == "":
            problems[name] = "required"
        elif not isinstance(value, str):
            problems[name] = "must_be_string"
        elif len(value) > limit:
            problems[name] = "too_long"
        else:
            values[name] = value
    for name in body:
        if name not in ("username", "password", "captcha"):
            problems[name] = "unknown_field"
    if problems:
        raise ValidationFailed(problems)
    return values["username"], values["password"]


async def _record_failure(request: web.Request, username: str) -> None:
    record = getattr(throttle, "record_failure", None)
    if record is not None:  # counts the failure against rules with counts: failures
        await record(request, account=username)


async def create_session(request: web.Request) -> web.Response:
    """Sign in: 201 ``{"token", "expires_in"}``; 401 ``invalid_credentials``; 429; 400 ``captcha_required``."""
    body = await read_json(request)
    username, password = _login_fields(body)
    # Refuse a login the hashing pool cannot take before spending any Redis round trip on it.
    request.app[keys.HASHER].check_capacity()
    try:
        await guard(request, body, account=username)
    except RateLimited as exc:
        raise rate_limited(exc, "too_many_attempts", "登录尝试次数过多，请稍后再试") from None
    app = request.app
    hasher = app[keys.HASHER]
    record = await candidates.credentials(app[keys.REDIS], app[keys.PG], username)
    # PoolFull propagates: 503 overloaded with Retry-After, at once.
    ok = await hasher.verify(record.password_hash if record is not None else None, password)
    if not ok or record is None:
        await _record_failure(request, username)
        raise InvalidCredentials()
    if hasher.needs_rehash(record.password_hash):
        await _rehash(request, record, password)
    session = await sessions.create(app[keys.REDIS], record.candidate_id, now=utcnow(), settings=app[keys.SESSIONS])
    return json_response({"token": session.token, "expires_in": session.expires_in_s}, status=201, headers=NO_STORE)


async def _rehash(request: web.Request, record: candidates.Credentials, password: str) -> None:
    """Upgrade a hash made with older parameters; best effort, never a reason to refuse a login."""
    app = request.app
    try:
        new_hash = await app[keys.HASHER].hash(password)
    except PoolFull:
        return  # busy: the next login upgrades it
    with contextlib.suppress(StorageUnavailable, NotFound):
        await candidates.update_password(app[keys.PG], app[keys.REDIS], record.candidate_id, new_hash)
        log.info("candidate %d: password hash upgraded to the current parameters", record.candidate_id)


async def delete_current_session(request: web.Request) -> web.Response:
    """Sign out: end the session of the bearer token; 204, or 401 when it was not live."""
    token = auth.bearer_token(request)
    if not await sessions.revoke(request.app[keys.REDIS], token):
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    """The signed-in candidate's profile, id number masked."""
    candidate_id = await auth.candidate_id(request)
    try:
        profile = await candidates.profile(request.app[keys.PG], candidate_id)
    except NotFound:  # the account went away under a live session
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True) from None
    return json_response(profile, headers=NO_STORE)


def setup(app: web.Application) -> None:
    """Add the session routes."""
    app.router.add_post("/api/v1/sessions", create_session, name="sessions.create")
    app.router.add_delete("/api/v1/sessions/current", delete_current_session, name="sessions.delete")
    app.router.add_get("/api/v1/me", me, name="me.get")
