"""Signed, expiring links to an admission-ticket PDF.

A link is ``/api/v1/tickets/{ticket_no}.pdf?exam=<exam id>&exp=<unix seconds>&sig=<mac>``:
``mac`` is the unpadded base64url HMAC-SHA256 of ``f"{ticket_no}.{exam}.{exp}"`` under the
``KEY_PURPOSE`` key (``settings.derived_key(KEY_PURPOSE)``). The exam travels signed in the
link because a ticket number need not name its exam (demo tickets start with the year).
Links are stateless: they lapse at ``exp`` and are revoked all at once by changing the secret.
``exam`` and ``exp`` hold only digits, so splitting the signed text at its last two dots is
unambiguous even for a ticket number containing dots.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from urllib.parse import quote

__all__ = [
    "KEY_PURPOSE",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "sign_link",
    "verify_link",
]

KEY_PURPOSE = "ticket-pdf"
PATH_TEMPLATE = "/api/v1/tickets/{ticket_no}.pdf"
MAX_TICKET_NO_CHARS = 64
MAX_EXP_DIGITS = 12  # unix seconds stay below 10**12 for the next 30,000 years
SIG_CHARS = 43  # 32 bytes of HMAC-SHA256 in unpadded base64url
_SIG = re.compile(rf"[A-Za-z0-9_-]{{{SIG_CHARS}}}").fullmatch
_EXP = re.compile(rf"[0-9]{{1,{MAX_EXP_DIGITS}}}").fullmatch
_EXAM = re.compile(r"[1-9][0-9]{0,9}").fullmatch


class LinkError(Exception):
    """A ticket PDF link that must not be served; ``ticket_no`` is the ticket it asked for."""

    def __init__(self, ticket_no: str, message: str) -> None:
        super().__init__(message)
        self.ticket_no = ticket_no


class LinkInvalid(LinkError):
    """The link was not signed by us for this ticket: tampered, malformed or another ticket's."""

    def __init__(self, ticket_no: str, reason: str) -> None:
        super().__init__(ticket_no, f"invalid ticket link: {reason}")
        self.reason = reason


class LinkExpired(LinkError):
    """The link was genuine but lapsed at ``expires_at_s`` (unix seconds)."""

    def __init__(self, ticket_no: str, expires_at_s: int) -> None:
        super().__init__(ticket_no, f"ticket link expired at {expires_at_s}")
        self.expires_at_s = expires_at_s


def _signature(key: bytes, ticket_no: str, exam: str, exp: str) -> str:
    mac = hmac.new(key, f"{ticket_no}.{exam}.{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_link(key: bytes, ticket_no: str, *, exam_id: int, ttl_s: int, now: float | None = None) -> str:
    """Path and query of a link to ``ticket_no``'s PDF (of exam ``exam_id``), valid for ``ttl_s`` seconds."""
    if not key:
        raise ValueError("key must not be empty")
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1")
    if not ticket_no or len(ticket_no) > MAX_TICKET_NO_CHARS:
        raise ValueError(f"ticket_no must be 1..{MAX_TICKET_NO_CHARS} characters")
    exam = str(exam_id)
    if _EXAM(exam) is None:
        raise ValueError("exam_id must be a positive integer")
    exp = str(math.ceil(time.time() if now is None else now) + ttl_s)
    path = PATH_TEMPLATE.format(ticket_no=quote(ticket_no, safe=""))
    return f"{path}?exam={exam}&exp={exp}&sig={_signature(key, ticket_no, exam, exp)}"


def verify_link(key: bytes, ticket_no: str, exam: str, exp: str, sig: str, *, now: float | None = None) -> int:
    """The exam id of a genuine, unexpired link; raise ``LinkInvalid`` or ``LinkExpired`` otherwise.

    The signature is checked first (in constant time), so a forged link is reported as invalid
    whatever its ``exp``; only a genuine link can be reported as expired.
    """
    if not isinstance(ticket_no, str) or not 1 <= len(ticket_no) <= MAX_TICKET_NO_CHARS:
        raise LinkInvalid(str(ticket_no)[:MAX_TICKET_NO_CHARS], "malformed ticket number")
    if not isinstance(exam, str) or _EXAM(exam) is None:
        raise LinkInvalid(ticket_no, "malformed exam")
    if not isinstance(exp, str) or _EXP(exp) is None:
        raise LinkInvalid(ticket_no, "malformed exp")
    if not isinstance(sig, str) or _SIG(sig) is None:
        raise LinkInvalid(ticket_no, "malformed sig")
    try:
        expected = _signature(key, ticket_no, exam, exp)
    except UnicodeEncodeError:  # lone surrogates from a badly decoded path
        raise LinkInvalid(ticket_no, "malformed ticket number") from None
    if not hmac.compare_digest(expected, sig):
        raise LinkInvalid(ticket_no, "bad signature")
    expires_at_s = int(exp)
    if (time.time() if now is None else now) >= expires_at_s:
        raise LinkExpired(ticket_no, expires_at_s)
    return int(exam)
