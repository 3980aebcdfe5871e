"""Load-test tokens: signed, expiring, URL-safe; anything else is refused without an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import orjson
import pytest

from captcha.loadtest import issue, read, verify

pytestmark = pytest.mark.unit

SECRET = b"operator-secret-0123456789"
NOW = 1_800_000_000.0


def test_issued_token_verifies_until_it_expires() -> None:
    token = issue(SECRET, ttl_s=600, name="sre-alice", now=NOW)

    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert verify(SECRET, token, now=NOW)
    assert verify(SECRET, token, now=NOW + 599)
    assert not verify(SECRET, token, now=NOW + 600)
    claims = read(SECRET, token, now=NOW)
    assert claims is not None and claims.name == "sre-alice" and claims.expires_at_s == NOW + 600
    assert len(claims.token_id) >= 16


def test_default_clock_is_now() -> None:
    assert verify(SECRET, issue(SECRET, ttl_s=60, name="ci"))
    assert not verify(SECRET, issue(SECRET, ttl_s=1, name="ci", now=time.time() - 10))


def test_tokens_are_unique() -> None:
    tokens = {issue(SECRET, ttl_s=60, name="ci", now=NOW) for _ in range(100)}
    assert len(tokens) == 100


def test_other_secret_is_refused() -> None:
    token = issue(SECRET, ttl_s=600, name="ci", now=NOW)
    assert not verify(b"another secret", token, now=NOW)
    assert not verify(b"", token, now=NOW)


def test_tampered_claims_are_refused() -> None:
    version, claims, mac = issue(SECRET, ttl_s=60, name="ci", now=NOW).split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    decoded["exp"] += 10**6
    forged = base64.urlsafe_b64encode(orjson.dumps(decoded)).rstrip(b"=").decode()

    assert not verify(SECRET, f"{version}.{forged}.{mac}", now=NOW)
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert not verify(SECRET, f"{version}.{claims}.{flipped}", now=NOW)
    assert not verify(SECRET, f"lt2.{claims}.{mac}", now=NOW)
    assert not verify(SECRET, f"{version}.{claims}.{mac}=", now=NOW)
    assert not verify(SECRET, f"{version}.{claims}.{mac}!", now=NOW)


@pytest.mark.parametrize(
    "token",
    [None, 5, b"bytes", "", ".", "..", "lt1..", "lt1.a.b", "lt1.a.b.c", "x" * 5000, "lt1.é.é", "lt1.%%%.%%%"],
)
def test_malformed_tokens_are_refused(token: object) -> None:
    assert verify(SECRET, token, now=NOW) is False


def test_well_signed_but_malformed_claims_are_refused() -> None:
    # Signed with the real secret, so only the claim checks stand in the way.
    for claims in (b"[]", b"not json", b'{"exp": "soon", "jti": "x", "name": "n"}', b'{"jti": "x", "name": "n"}'):
        body = "lt1." + base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
        mac = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
        token = body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        assert verify(SECRET, token, now=NOW) is False


@pytest.mark.parametrize(
    "kwargs", [{"ttl_s": 0, "name": "ci"}, {"ttl_s": 60, "name": ""}, {"ttl_s": 60, "name": "x" * 201}]
)
def test_bad_issue_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        issue(SECRET, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        issue(b"", ttl_s=60, name="ci")
