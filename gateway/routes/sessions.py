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

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from core import candidates, sessions
from core.accounts import IdType
from core.errors import NotFound, StorageUnavailable
from core.passwords import PoolFull
from core.timeutil import utcnow
from gateway import auth, keys, throttle
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.captcha_gate import guard
from gateway.errors import InvalidCredentials, rate_limited
from gateway.models import Body, CaptchaValue, Reply
from gateway.routing import CANDIDATE, Answer, Routes
from ratelimit.errors import RateLimited

log = logging.getLogger("examgate.sessions")

routes = Routes("Sessions")
# Longer than any password the policy allows, short enough that nobody makes argon2 chew megabytes.
MAX_PASSWORD_CHARS = 256
MAX_USERNAME_CHARS = 64


def _given(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("required", "必填")
    return value


def _not_empty(value: str) -> str:
    # Only the empty string is missing: "  " is a username that signs in as nobody (401), like any other.
    if not value:
        raise PydanticCustomError("required", "必填")
    return value


def _credential(max_chars: int) -> Any:
    # The length constraint before the validators, so that pydantic checks it as a string's (string_too_long).
    return Annotated[str, Field(max_length=max_chars, json_schema_extra={"minLength": 1}), BeforeValidator(_given),
                     AfterValidator(_not_empty)]


class Credentials(Body):
    """A sign-in: username (any case) and password."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"username": "zhangsan2026",
                                                                "password": "Qiu#2026pass"}]})

    username: _credential(MAX_USERNAME_CHARS)  # type: ignore[valid-type]
    password: _credential(MAX_PASSWORD_CHARS)  # type: ignore[valid-type]
    captcha: CaptchaValue = None


class SessionCreated(Reply):
    """A session token and its idle timeout."""

    token: str
    expires_in: int = Field(description="seconds of idle time before the session ends; every use extends it, up "
                                        "to the absolute lifetime")


class Profile(Reply):
    """The signed-in candidate's profile."""

    candidate_id: int
    username: str
    name: str
    id_type: IdType
    id_number: str = Field(description="masked")
    phone: str
    email: str
    security_question: str
    created_at: datetime
    educations: list[dict[str, Any]] = Field(description="education records (学历) with their status: not_checked, "
                                                         "verified, needs_manual, rejected")
    degrees: list[dict[str, Any]] = Field([], description="degree records (学位) with their status")
    agreement: dict[str, Any] = Field(
        {}, description='{"accepted_version", "accepted_at", "current_version", "required"}: required when a newer '
                        "service agreement is in force than the one accepted (POST /api/v1/me/agreement)")


@routes.post("/api/v1/sessions", "sessions.create", summary="Sign in (captcha per live config)",
             body=Credentials, captcha=True, shedding="login", limits=("ip", "global", "account"),
             answers={201: Answer(SessionCreated, "signed in")},
             errors={400: "captcha_required (details.captcha: the kind to solve) once the username's wrong "
                          "passwords spent its allowance",
                     401: "invalid_credentials: unknown user and wrong password alike",
                     422: "validation_failed: username or password missing, not a string or too long",
                     429: "too_many_attempts (Retry-After, RateLimit headers)",
                     503: "overloaded: the password hashing pool is full (Retry-After); or shed"})
async def create_session(request: web.Request) -> web.Response:
    """Sign in: 201 ``{"token", "expires_in"}``; 401 ``invalid_credentials``; 429; 400 ``captcha_required``."""
    body = await read_body(request, Credentials)
    username, password = body.username, body.password
    # Refuse a login the hashing pool cannot take before spending any Redis round trip on it.
    request.app[keys.HASHER].check_capacity()
    try:
        await guard(request, body, account=username)
    except RateLimited as exc:
        raise rate_limited(exc, "too_many_attempts", "登录尝试次数过多，请稍后再试") from None
    app = request.app
    hasher = app[keys.HASHER]
    # The credentials epoch is read in the same write as, and before, the record (sessions.create explains).
    epoch, record = await asyncio.gather(sessions.read_epoch(app[keys.REDIS], username),
                                         candidates.credentials(app[keys.REDIS], app[keys.PG], username))
    # PoolFull propagates: 503 overloaded with Retry-After, at once.
    ok = await hasher.verify(record.password_hash if record is not None else None, password)
    if not ok or record is None:
        await throttle.record_failure(request, account=username)  # spends the rules with counts: failures
        raise InvalidCredentials()
    if hasher.needs_rehash(record.password_hash):
        await _rehash(request, record, password)
    try:
        session = await sessions.create(app[keys.REDIS], record.candidate_id, now=utcnow(),
                                        settings=app[keys.SESSIONS], epoch=epoch)
    except sessions.CredentialsChanged:
        raise InvalidCredentials() from None  # the password verified is no longer the password
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


@routes.delete("/api/v1/sessions/current", "sessions.delete", summary="Sign out", caller=CANDIDATE,
               answers={204: Answer(None, "signed out")})
async def delete_current_session(request: web.Request) -> web.Response:
    """Sign out: end the session of the bearer token; 204, or 401 when it was not live."""
    # The candidate wrapper resolved the session: its candidate names the index entry to drop too.
    candidate = await auth.candidate_id(request)
    if not await sessions.end(request.app[keys.REDIS], auth.bearer_token(request), candidate):
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True)
    return web.Response(status=204)


@routes.get("/api/v1/me", "me.get", caller=CANDIDATE, answers={200: Answer(Profile, "profile")})
async def me(request: web.Request) -> web.Response:
    """The signed-in candidate's profile, id number masked."""
    candidate_id = await auth.candidate_id(request)
    try:
        profile = await candidates.profile(request.app[keys.PG], candidate_id)
    except NotFound:  # the account went away under a live session
        raise auth.NotSignedIn("登录已失效，请重新登录", invalid=True) from None
    return json_response(profile, headers=NO_STORE)
