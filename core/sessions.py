"""Candidate sessions in Redis: random bearer tokens with an idle and an absolute timeout.

A token is 256 random bits (``secrets.token_urlsafe(32)``, 43 characters). Redis keeps
only its SHA-256, so a dump or a ``MONITOR`` of Redis yields no usable token, and the
lookup never compares token text: what the server does depends on the hash, which an
attacker cannot steer, so timing tells nothing about how close a guess was.

Keys (the session key is touched alone; the index alone):
    eg:session:<sha256 hex>            "<candidate_id>:<absolute deadline ms>", TTL = idle lifetime
    eg:{candidate:<id>}:sessions       sorted set: session hashes scored by absolute deadline

Renewal is one ``session_touch.lua`` call per authenticated request. A Lua script rather
than ``GETEX … PX``: GETEX rewrites the TTL on every request — a write replicated and
logged to the AOF each time — and cannot cap the TTL at the absolute deadline. The script
reads, checks the deadline, and extends only once ``renew_every_s`` of the idle window has
been used, so an active session costs one write a minute, and the key itself dies at the
absolute deadline. On the client side EVALSHA costs the same as a GET (docs/design.md).
The price: a session expires between ``idle_timeout_s - renew_every_s`` and
``idle_timeout_s`` after its last use.

``revoke_all`` (after a password reset) uses the per-candidate index rather than a
generation counter: a counter would have to be read on every request, and its key (tagged
by candidate) cannot be named before the session is read — two round trips on the hot path.

A sign-in racing a password reset must not keep its session. The reset changes the hash, then
bumps the username's *credentials epoch* (``bump_epoch``), then ends every indexed session. A
sign-in reads the epoch in the same write as, and before, the credential record it verifies
(``read_epoch``), and ``create`` reads it again in the write that indexes the new session: a
changed epoch ends the new session at once (``CredentialsChanged``); an unchanged one means the
session was indexed before the bump, so the reset's ``revoke_all`` finds and ends it. The epoch
is read only at sign-in, never on the request path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from core.errors import CoreError
from core.identity import normalise_username
from core.redis import AutoPipeline
from core.scripts import Script, ScriptClient, load_scripts

__all__ = ["CredentialsChanged", "Epoch", "PendingResolve", "Session", "SessionSettings", "bump_epoch", "create",
           "epoch_key", "finish_resolve", "read_epoch", "resolve", "revoke", "revoke_all", "session_key", "index_key",
           "submit_resolve"]

TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}").fullmatch  # token_urlsafe(32): 32 bytes, base64url, no padding


@dataclass(frozen=True)
class SessionSettings:
    """How long sessions live: unused for ``idle_timeout_s``, at most ``absolute_timeout_s`` in all."""

    idle_timeout_s: float = 30 * 60
    absolute_timeout_s: float = 12 * 60 * 60
    # Extend the idle TTL only once this much of it has been used (one write per period per session).
    renew_every_s: float = 60

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.absolute_timeout_s <= 0:
            raise ValueError("session timeouts must be positive")
        if not 0 <= self.renew_every_s < self.idle_timeout_s:
            raise ValueError("renew_every_s must be at least 0 and less than idle_timeout_s")

    @property
    def idle_ms(self) -> int:
        """The idle window in whole milliseconds."""
        return max(1, round(self.idle_timeout_s * 1000))

    @property
    def absolute_ms(self) -> int:
        """The absolute lifetime in whole milliseconds."""
        return max(1, round(self.absolute_timeout_s * 1000))

    @property
    def renew_every_ms(self) -> int:
        """The renewal period in whole milliseconds."""
        return round(self.renew_every_s * 1000)


DEFAULT_SETTINGS = SessionSettings()


class Session(NamedTuple):
    """A new session: the bearer token (shown to the candidate once) and its lifetime if unused."""

    token: str
    expires_in_s: int


class PendingResolve(NamedTuple):
    """A session lookup issued by ``submit_resolve``: its script call and the future of the reply."""

    keys: tuple[str]
    args: tuple[int, int]
    reply: asyncio.Future[Any]


@functools.cache
def _touch_script() -> Script:
    return load_scripts("core.lua")["session_touch"]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def session_key(token_hash: str) -> str:
    """The key of one session: ``eg:session:<sha256 of the token, hex>``."""
    return f"eg:session:{token_hash}"


def index_key(candidate_id: int) -> str:
    """The sorted set of one candidate's session hashes: ``eg:{candidate:<id>}:sessions``."""
    return f"eg:{{candidate:{candidate_id}}}:sessions"


def _well_formed(token: object) -> bool:
    return isinstance(token, str) and _TOKEN(token) is not None


async def _command(client: ScriptClient, *args: Any) -> Any:
    """A command without a method of its own, on either kind of client."""
    if isinstance(client, AutoPipeline):
        return await client.execute(*args)
    return await client.execute_command(*args)


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return math.floor(moment.timestamp() * 1000)


class CredentialsChanged(CoreError):
    """The password changed while a sign-in verified the old one: its session was ended at once."""

    def __init__(self, candidate_id: int) -> None:
        super().__init__(f"the credentials of candidate {candidate_id} changed during sign-in")
        self.candidate_id = candidate_id


class Epoch(NamedTuple):
    """A username's credentials epoch as a sign-in read it, before the credential record it verified."""

    username: str
    value: bytes | None


def epoch_key(username: str) -> str:
    """A username's credentials epoch: ``eg:credentials-epoch:<normalised username>``, bumped by password resets."""
    return f"eg:credentials-epoch:{normalise_username(username)}"


async def read_epoch(client: ScriptClient, username: str) -> Epoch:
    """The epoch now; issue it before the credential read, in the same tick, so it is read first."""
    return Epoch(username, cast(bytes | None, await client.get(epoch_key(username))))


async def bump_epoch(client: ScriptClient, username: str) -> None:
    """Mark a password change: sign-ins that read the epoch before it do not keep their sessions."""
    await client.incr(epoch_key(username))


async def create(
    client: ScriptClient, candidate_id: int, *, now: datetime, settings: SessionSettings = DEFAULT_SETTINGS,
    epoch: Epoch | None = None,
) -> Session:
    """Start a session for ``candidate_id``; only the token's hash is stored.

    With ``epoch`` (a sign-in), ``CredentialsChanged`` when the password changed since the epoch
    was read: the session is ended before this returns.
    """
    token = secrets.token_urlsafe(TOKEN_BYTES)
    digest = _token_hash(token)
    now_ms = _epoch_ms(now)
    deadline_ms = now_ms + settings.absolute_ms
    ttl_ms = min(settings.idle_ms, settings.absolute_ms)
    index = index_key(candidate_id)
    # Issued in one tick: the AutoPipeline sends them in one write, the epoch read last. The index
    # drops the hashes of sessions past their absolute deadline and lives as long as its newest one.
    writes = [
        client.set(session_key(digest), f"{candidate_id}:{deadline_ms}", px=ttl_ms),
        client.zadd(index, {digest: deadline_ms}),
        _command(client, "ZREMRANGEBYSCORE", index, "-inf", now_ms),
        _command(client, "PEXPIRE", index, settings.absolute_ms),
    ]
    if epoch is None:
        await asyncio.gather(*writes)
    else:
        *_, now_epoch = await asyncio.gather(*writes, client.get(epoch_key(epoch.username)))
        if now_epoch != epoch.value:
            await asyncio.gather(client.delete(session_key(digest)), client.zrem(index, digest))
            raise CredentialsChanged(candidate_id)
    return Session(token, ttl_ms // 1000)


async def resolve(client: ScriptClient, token: str, *, settings: SessionSettings = DEFAULT_SETTINGS) -> int | None:
    """The candidate a token signs in, renewing its idle timeout; None when unknown, expired or malformed."""
    return await finish_resolve(client, submit_resolve(client, token, settings=settings))


def submit_resolve(
    client: ScriptClient, token: str, *, settings: SessionSettings = DEFAULT_SETTINGS
) -> PendingResolve | None:
    """Issue ``resolve``'s script call now (in this tick's batch) without awaiting it; None for a malformed token.

    Lets a request send the session lookup and its own commands back to back and await them
    in turn, without a Task per command; ``finish_resolve`` gives the answer.
    """
    if not _well_formed(token):
        return None
    keys = (session_key(_token_hash(token)),)
    args = (settings.idle_ms, settings.renew_every_ms)
    return PendingResolve(keys, args, _touch_script().submit(client, keys, args))


async def finish_resolve(client: ScriptClient, pending: PendingResolve | None) -> int | None:
    """The answer of a ``submit_resolve``: the candidate, or None when unknown, expired or malformed."""
    if pending is None:
        return None
    reply = await _touch_script().result(client, pending.reply, pending.keys, pending.args)
    return None if reply is None else int(reply)


async def revoke(client: ScriptClient, token: str) -> bool:
    """End one session (sign out); False when it was not live."""
    if not _well_formed(token):
        return False
    digest = _token_hash(token)
    value = await client.getdel(session_key(digest))
    if value is None:
        return False
    candidate_id = int(cast(bytes, value).split(b":", 1)[0])  # the client does not decode replies
    await client.zrem(index_key(candidate_id), digest)
    return True


async def end(client: AutoPipeline, token: str, candidate_id: int) -> bool:
    """End the session of ``token``, whose candidate the caller has just resolved: False when it is gone already.

    The key and its index entry are dropped in one write (``revoke`` reads the key first to learn
    the candidate; here the lookup that proved the session live has told it).
    """
    digest = _token_hash(token)
    deleted = client.submit(b"DEL", session_key(digest))
    unindexed = client.submit(b"ZREM", index_key(candidate_id), digest)
    found = await deleted
    await unindexed
    return bool(found)


async def revoke_all(redis: ScriptClient, candidate_id: int) -> int:
    """End every session of ``candidate_id`` (after a password reset); the number that were live.

    A sign-in racing the reset is handled by the credentials epoch (the module's docstring): bump it first.
    """
    index = index_key(candidate_id)
    hashes = await _command(redis, "ZRANGE", index, 0, -1)
    if not hashes:
        return 0
    # One DEL per key: on Redis Cluster the sessions live in different slots.
    removed = await asyncio.gather(*(redis.delete(session_key(h.decode())) for h in hashes))
    await redis.zrem(index, *hashes)
    return sum(removed)
