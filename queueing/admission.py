"""Admission tokens: proof that the waiting room let a candidate through, checked on every seat request.

A token is ``<exam_id>.<candidate_id>.<expires_at_s>.<mac>``, the MAC being HMAC-SHA256 under the
gateway's secret over a domain label and the first three parts exactly as written, base64url
without padding. It is stateless (pure Python, no Redis on the hot path): it lapses at
``expires_at_s`` and changing the secret revokes every token. The domain label keeps a MAC made
for another purpose with the same secret (load-test tokens, PDF links) from ever passing here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re

from queueing.errors import AdmissionInvalid

__all__ = ["check", "issue", "verify", "MAX_TOKEN_CHARS"]

_DOMAIN = b"examgate admission v1\x00"
MAX_TOKEN_CHARS = 128
_TOKEN = re.compile(r"((0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.([1-9][0-9]{0,11}))\.([A-Za-z0-9_-]{43})").fullmatch


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(secret: bytes, candidate_id: int, exam_id: int, *, ttl_s: int, now_s: float) -> str:
    """A url-safe token admitting ``candidate_id`` to the seat paths of ``exam_id`` for ``ttl_s`` seconds."""
    if not secret:
        raise ValueError("the admission secret must not be empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    payload = f"{int(exam_id)}.{int(candidate_id)}.{math.floor(now_s) + int(ttl_s)}"
    return f"{payload}.{_mac(secret, payload)}"


def check(secret: bytes, token: object, *, candidate_id: int, exam_id: int, now_s: float) -> int:
    """The token's expiry (epoch seconds) if it admits this candidate to this exam now, else ``AdmissionInvalid``."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise AdmissionInvalid("malformed")
    match = _TOKEN(token)
    if match is None:
        raise AdmissionInvalid("malformed")
    payload, exam_text, candidate_text, expires_text, mac = match.groups()
    if not hmac.compare_digest(_mac(secret, payload), mac):
        raise AdmissionInvalid("signature")
    if int(candidate_text) != candidate_id:
        raise AdmissionInvalid("other_candidate")
    if int(exam_text) != exam_id:
        raise AdmissionInvalid("other_exam")
    expires_at_s = int(expires_text)
    if now_s >= expires_at_s:
        raise AdmissionInvalid("expired")
    return expires_at_s


def verify(secret: bytes, token: object, *, candidate_id: int, exam_id: int, now_s: float) -> bool:
    """True if the token admits this candidate to this exam now (forged, expired, someone else's: False)."""
    try:
        check(secret, token, candidate_id=candidate_id, exam_id=exam_id, now_s=now_s)
    except AdmissionInvalid:
        return False
    return True
