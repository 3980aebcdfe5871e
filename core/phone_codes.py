"""Verification codes sent by SMS: issued per phone and purpose, kept hashed, single use, few tries, throttled.

A code proves the caller holds a phone, for one purpose: binding the phone at registration,
each of the two numbers of a phone change, recovering a username, resetting a password. It is
six digits, stored only as an HMAC under ``eg:{sms:<phone>}:code:<purpose>`` with an attempt
budget and a lifetime; a new code for the same phone and purpose replaces the old one, and a
wrong code spends an attempt (the last one deletes it). A code is taken (``check``) when its
action is about to succeed and dropped (``consume``) once it has, so an action that fails after
the code was right (a taken username, a full hashing pool) can be tried again with it.

Every send to a phone passes ``throttle`` first (``sms_throttle.lua``: a minimum interval and a
budget per window, per phone, on the caller's clock), whatever the purpose: it protects the
phone's owner and the SMS bill. How often one address, or everybody together, may ask is the
gateway's rate limiter's job (rules on the route), behind a captcha.

Keys (each script touches one key; a phone's keys share its hash tag):
    eg:{sms:<phone>}:code:<purpose>   hash: left, code (HMAC), candidate — TTL code_ttl_s
    eg:{sms:<phone>}:sent             sorted set: the phone's SMS sends in the window (ms)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import CoreError
from core.identity import normalise_phone
from core.scripts import Script, ScriptClient, load_scripts

__all__ = [
    "CODE_DIGITS", "PURPOSES", "CodeInvalid", "CodeSettings", "SendThrottled", "Taken",
    "check", "code_key", "consume", "digest", "issue", "new_code", "put", "refund", "sent_key", "take", "throttle",
    "valid_phone",
]  # fmt: skip

CODE_DIGITS = 6
PURPOSES = ("register", "change_phone", "recover_username", "reset")
_CODE = re.compile(rf"[0-9]{{{CODE_DIGITS}}}").fullmatch
_PHONE = re.compile(r"1[3-9][0-9]{9}").fullmatch


class CodeInvalid(CoreError):
    """Wrong, expired, used or exhausted code (or none sent to that phone for that purpose): one error for all."""

    def __init__(self) -> None:
        super().__init__("code invalid or expired")


class SendThrottled(CoreError):
    """Too many codes sent to this phone lately; the next is allowed after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many codes sent to this phone; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class CodeSettings:
    """A code's lifetime and attempt budget, and the per-phone send limits."""

    code_ttl_s: int = 5 * 60
    code_attempts: int = 5
    sms_min_interval_s: float = 60
    sms_window_s: float = 60 * 60
    sms_max_per_window: int = 5

    def __post_init__(self) -> None:
        if min(self.code_ttl_s, self.code_attempts) < 1:
            raise ValueError("a code's lifetime and attempt budget must be at least 1")
        if self.sms_min_interval_s <= 0 or self.sms_window_s <= 0 or self.sms_max_per_window < 1:
            raise ValueError("SMS send limits must be positive")


def code_key(phone: str, purpose: str) -> str:
    """The live code of a phone for a purpose."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown code purpose {purpose!r}")
    return f"eg:{{sms:{phone}}}:code:{purpose}"


def sent_key(phone: str) -> str:
    """The SMS sends to a phone in the current window."""
    return f"eg:{{sms:{phone}}}:sent"


def valid_phone(phone: object) -> str | None:
    """The phone normalised when it is a mainland mobile number, else None."""
    if not isinstance(phone, str):
        return None
    normalised = normalise_phone(phone)
    return normalised if _PHONE(normalised) else None


def new_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def digest(secret: bytes, phone: str, code: str) -> str:
    """The code as stored: keyed, so a million codes are no secret from a plain hash in a Redis dump."""
    return hmac.new(secret, f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


@functools.cache
def _scripts() -> dict[str, Script]:
    return load_scripts("core.lua")


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return math.floor(moment.timestamp() * 1000)


async def throttle(redis: ScriptClient, phone: str, *, now: datetime, settings: CodeSettings) -> None:
    """Admit one send to ``phone`` and record it, or raise ``SendThrottled``."""
    wait_ms = await _scripts()["sms_throttle"].run(
        redis, keys=(sent_key(phone),),
        args=(_epoch_ms(now), round(settings.sms_min_interval_s * 1000), round(settings.sms_window_s * 1000),
              settings.sms_max_per_window))  # fmt: skip
    if wait_ms:
        raise SendThrottled(max(1, math.ceil(int(wait_ms) / 1000)))


async def put(redis: ScriptClient, key: str, ttl_s: int, attempts: int, fields: dict[str, str]) -> None:
    """(Re)create a record of ``fields`` with an attempt budget and a lifetime (replacing the previous one)."""
    args: list[Any] = [ttl_s * 1000, attempts]
    for name, value in fields.items():
        args += (name, value)
    await _scripts()["reset_put"].run(redis, keys=(key,), args=args)


async def take(redis: ScriptClient, key: str, fields: tuple[str, ...]) -> tuple[int, list[str]] | None:
    """Spend one attempt: (attempts left after it, field values), None when the record is gone or exhausted."""
    reply = await _scripts()["reset_attempt"].run(redis, keys=(key,), args=("take", *fields))
    if not reply:  # nil: no record; 0: no attempt left (the script deleted it)
        return None
    left, *values = reply
    return int(left), [v.decode() if isinstance(v, bytes) else str(v) for v in values]


async def refund(redis: ScriptClient, key: str) -> None:
    """Give back the attempt of a caller who proved the secret but could not finish."""
    await _scripts()["reset_attempt"].run(redis, keys=(key,), args=("refund",))


async def consume(redis: ScriptClient, phone: str, purpose: str) -> bool:
    """Drop the code once its action succeeded; True for exactly one of several callers holding it."""
    return bool(await redis.delete(code_key(phone, purpose)))


@dataclass(frozen=True)
class Taken:
    """A right code: the phone, the attempts left, and the candidate it was issued for (0: none)."""

    phone: str
    candidate_id: int
    left: int


async def issue(redis: ScriptClient, phone: str, purpose: str, *, secret: bytes, settings: CodeSettings,
                candidate_id: int = 0) -> str:
    """Store a new code for ``phone`` and ``purpose`` (after ``throttle``); the code, for the caller to send."""
    code = new_code()
    await put(redis, code_key(phone, purpose), settings.code_ttl_s, settings.code_attempts,
              {"code": digest(secret, phone, code), "candidate": str(candidate_id)})
    return code


async def check(redis: ScriptClient, phone: object, purpose: str, code: object, *, secret: bytes) -> Taken:
    """Spend an attempt on ``code``: ``Taken`` when right (kept until ``consume``), else ``CodeInvalid``."""
    normalised = valid_phone(phone)
    if normalised is None or not isinstance(code, str) or _CODE(code) is None:
        raise CodeInvalid()
    key = code_key(normalised, purpose)
    taken = await take(redis, key, ("code", "candidate"))
    if taken is None:
        raise CodeInvalid()
    left, (stored, candidate) = taken
    if not hmac.compare_digest(stored, digest(secret, normalised, code)):
        if left == 0:
            await redis.delete(key)  # dead now rather than at the next try
        raise CodeInvalid()
    return Taken(normalised, int(candidate or 0), left)
