"""Admission tokens: issued and verified in pure Python; forged, expired, someone else's or malformed refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from queueing import admission
from queueing.admission import MAX_TOKEN_CHARS, check, issue, verify
from queueing.errors import AdmissionInvalid, QueueingError

pytestmark = pytest.mark.unit

SECRET = b"test-admission-secret-0123456789abcdef"
NOW = 1_800_000_000.25
CANDIDATE, EXAM = 1234567, 42


def token(ttl_s: int = 600, *, secret: bytes = SECRET, candidate_id: int = CANDIDATE, exam_id: int = EXAM) -> str:
    return issue(secret, candidate_id, exam_id, ttl_s=ttl_s, now_s=NOW)


def reason(value: object, *, now_s: float = NOW, candidate_id: int = CANDIDATE, exam_id: int = EXAM) -> str:
    with pytest.raises(AdmissionInvalid) as caught:
        check(SECRET, value, candidate_id=candidate_id, exam_id=exam_id, now_s=now_s)
    assert not verify(SECRET, value, candidate_id=candidate_id, exam_id=exam_id, now_s=now_s)
    return caught.value.reason


def test_a_fresh_token_is_url_safe_and_valid() -> None:
    value = token()
    assert re.fullmatch(r"[A-Za-z0-9._-]+", value)
    assert verify(SECRET, value, candidate_id=CANDIDATE, exam_id=EXAM, now_s=NOW)
    assert check(SECRET, value, candidate_id=CANDIDATE, exam_id=EXAM, now_s=NOW + 599) == 1_800_000_600
    assert isinstance(AdmissionInvalid("x"), QueueingError)


def test_expired_at_its_expiry() -> None:
    value = token(ttl_s=60)
    assert verify(SECRET, value, candidate_id=CANDIDATE, exam_id=EXAM, now_s=NOW + 59.7)
    assert reason(value, now_s=1_800_000_060) == "expired"
    assert reason(value, now_s=NOW + 3600) == "expired"


def test_bound_to_candidate_and_exam() -> None:
    assert reason(token(), candidate_id=CANDIDATE + 1) == "other_candidate"
    assert reason(token(), exam_id=EXAM + 1) == "other_exam"
    assert reason(token(candidate_id=7), candidate_id=7 * 10) == "other_candidate"


def test_forged_or_tampered_tokens_are_refused() -> None:
    value = token()
    payload, mac = value.rsplit(".", 1)
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert reason(f"{payload}.{flipped}") == "signature"
    assert reason(token(secret=b"another-secret-entirely")) == "signature"
    exam_text, candidate_text, expires_text = payload.split(".")
    later = f"{exam_text}.{candidate_text}.{int(expires_text) + 86400}"
    assert reason(f"{later}.{mac}") == "signature"  # a longer life needs a new MAC
    assert reason(f"{exam_text}.{CANDIDATE + 1}.{expires_text}.{mac}", candidate_id=CANDIDATE + 1) == "signature"


@pytest.mark.parametrize(
    "value",
    [
        None, 42, b"bytes", "", "...", "a.b.c.d", "42.1234567.1800000600",
        "42.1234567.1800000600." + "A" * 42,  # MAC one character short
        "42.1234567.1800000600." + "A" * 43 + "=",  # padding
        "042.1234567.1800000600." + "A" * 43,  # leading zero
        "42.-1.1800000600." + "A" * 43,
        "42.1234567.1800000600." + "A" * 43 + ".x",
        "42.1234567.1800000600." + "+" * 43,  # not url-safe base64
        "4" * (MAX_TOKEN_CHARS + 1),
        "٤٢.1234567.1800000600." + "A" * 43,  # non-ASCII digits
    ],
)
def test_malformed_tokens_are_refused(value: object) -> None:
    assert reason(value) == "malformed"


def test_issue_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        issue(b"", CANDIDATE, EXAM, ttl_s=600, now_s=NOW)
    with pytest.raises(ValueError):
        issue(SECRET, CANDIDATE, EXAM, ttl_s=0, now_s=NOW)


def test_the_mac_is_domain_separated() -> None:
    """A plain HMAC of the same text under the same secret (another feature's token) is not a valid MAC here."""
    payload = f"{EXAM}.{CANDIDATE}.1800000600"
    plain = base64.urlsafe_b64encode(hmac.new(SECRET, payload.encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert reason(f"{payload}.{plain.decode()}") == "signature"
    assert admission.verify(SECRET, f"{payload}.{token().rsplit('.', 1)[1]}", candidate_id=CANDIDATE,
                            exam_id=EXAM, now_s=NOW)  # fmt: skip
