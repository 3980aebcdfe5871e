"""Proof-of-work captchas in the ALTCHA v1 protocol (SHA-256), each solution accepted once.

A challenge is ``sha256(salt + str(number))`` for a secret random ``number`` in
``0..maxnumber``, signed with ``HMAC-SHA256(hmac_key, challenge)``; the client finds the
number by brute force and sends back base64 JSON ``{algorithm, challenge, number, salt,
signature}``. Nothing is stored when a challenge is issued: the expiry and ``maxnumber``
ride in the salt as URL parameters, closed by a trailing ``&`` (the patched form), so
appending the number cannot alter them, and the salt is inside the signed hash. Only a
solution that checks out costs Redis anything: one ``SET NX PX`` on its signature, kept
until the challenge expires, so a replay is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import time
from typing import Any, NamedTuple

import orjson

from captcha import keys
from captcha.errors import CaptchaInvalid
from core.redis import AutoPipeline

__all__ = ["ALGORITHM", "MAX_PAYLOAD_CHARS", "Solved", "check_solution", "consume_solution", "create_challenge"]

ALGORITHM = "SHA-256"
# A real payload is ~250 characters; refuse anything far larger before decoding it.
MAX_PAYLOAD_CHARS = 2048
MAX_NUMBER = 10**9

_SALT = re.compile(r"[0-9a-f]{24}\?expires=([0-9]{1,12})&maxnumber=([0-9]{1,10})&").fullmatch
_HEX64 = re.compile(r"[0-9a-f]{64}").fullmatch


class Solved(NamedTuple):
    """A solution that checks out offline (signature, expiry, hash); ``expires_at_s`` is unix seconds."""

    signature: str
    number: int
    expires_at_s: int


def _sign(hmac_key: bytes, challenge: str) -> str:
    return hmac.new(hmac_key, challenge.encode("ascii"), hashlib.sha256).hexdigest()


def create_challenge(hmac_key: bytes, *, maxnumber: int, ttl_s: int, now: float | None = None) -> dict[str, Any]:
    """A signed challenge for the client: ``{"algorithm", "challenge", "maxnumber", "salt", "signature"}``."""
    if not hmac_key:
        raise ValueError("hmac_key must not be empty")
    if not 1 <= maxnumber <= MAX_NUMBER:
        raise ValueError(f"maxnumber must be in 1..{MAX_NUMBER}")
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1")
    expires_at_s = math.ceil(time.time() if now is None else now) + ttl_s
    salt = f"{secrets.token_hex(12)}?expires={expires_at_s}&maxnumber={maxnumber}&"
    number = secrets.randbelow(maxnumber + 1)
    challenge = hashlib.sha256(f"{salt}{number}".encode("ascii")).hexdigest()
    return {
        "algorithm": ALGORITHM,
        "challenge": challenge,
        "maxnumber": maxnumber,
        "salt": salt,
        "signature": _sign(hmac_key, challenge),
    }


def _decode(payload: object) -> dict[str, Any]:
    """The payload's JSON object, or ``CaptchaInvalid("malformed")``."""
    if not isinstance(payload, str) or not 0 < len(payload) <= MAX_PAYLOAD_CHARS:
        raise CaptchaInvalid("malformed")
    try:
        data = orjson.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        raise CaptchaInvalid("malformed") from None
    if not isinstance(data, dict):
        raise CaptchaInvalid("malformed")
    return data


def check_solution(hmac_key: bytes, payload: object, *, now: float | None = None) -> Solved:
    """Check a payload offline (shape, signature, expiry, hash, range); raise ``CaptchaInvalid`` if it fails."""
    data = _decode(payload)
    algorithm, challenge, number = data.get("algorithm"), data.get("challenge"), data.get("number")
    salt, signature = data.get("salt"), data.get("signature")
    if (
        algorithm != ALGORITHM
        or not isinstance(challenge, str) or _HEX64(challenge) is None
        or not isinstance(signature, str) or _HEX64(signature) is None
        or not isinstance(salt, str)
        or type(number) is not int  # bool is an int subclass; a float is not a number here either
    ):
        raise CaptchaInvalid("malformed")
    params = _SALT(salt)
    if params is None:
        # A salt we never issue; it cannot carry our signature either, but say what is wrong.
        raise CaptchaInvalid("malformed")
    if not hmac_key or not hmac.compare_digest(_sign(hmac_key, challenge), signature):
        raise CaptchaInvalid("bad_signature")
    expires_at_s, maxnumber = int(params[1]), int(params[2])
    if expires_at_s <= (time.time() if now is None else now):
        raise CaptchaInvalid("expired")
    if not 0 <= number <= maxnumber:
        raise CaptchaInvalid("malformed")
    expected = hashlib.sha256(f"{salt}{number}".encode("ascii")).hexdigest()
    if not hmac.compare_digest(expected, challenge):
        raise CaptchaInvalid("wrong_solution")
    return Solved(signature, number, expires_at_s)


async def consume_solution(
    client: AutoPipeline, hmac_key: bytes, payload: object, *, now: float | None = None
) -> Solved:
    """Accept a solved challenge once: check it offline, then one ``SET NX PX``; a replay raises ``CaptchaInvalid``."""
    now_s = time.time() if now is None else now
    solved = check_solution(hmac_key, payload, now=now_s)
    # Kept until the challenge expires (after that the expiry check refuses it anyway), plus a
    # second for clock skew between gateway hosts.
    keep_ms = max(1, math.ceil((solved.expires_at_s - now_s) * 1000)) + 1000
    if not await client.set(keys.pow_used_key(solved.signature), b"1", px=keep_ms, nx=True):
        raise CaptchaInvalid("replayed")
    return solved
