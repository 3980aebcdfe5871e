"""Signed ticket PDF links: valid until exp, refused when tampered, misdirected or malformed — never crashing."""

from __future__ import annotations

import hmac
import re
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from gateway.config import Settings
from lookups import links
from lookups.links import (
    KEY_PURPOSE,
    LinkError,
    LinkExpired,
    LinkInvalid,
    sign_link,
    verify_link,
)

pytestmark = pytest.mark.unit

KEY = Settings(secret_key="s" * 32).derived_key(KEY_PURPOSE)
NOW = 1_800_000_000.0
TICKET = "202612010100123"
EXAM = 7


def parts(link: str) -> tuple[str, str, str, str]:
    """(ticket_no, exam, exp, sig) as the route would take them from the link."""
    url = urlsplit(link)
    match = re.fullmatch(r"/api/v1/tickets/(.+)\.pdf", url.path)
    assert match, link
    query = parse_qs(url.query, strict_parsing=True)
    assert sorted(query) == ["exam", "exp", "sig"]
    return unquote(match.group(1)), query["exam"][0], query["exp"][0], query["sig"][0]


def test_signed_link_verifies_until_it_expires() -> None:
    link = sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW)

    ticket_no, exam, exp, sig = parts(link)
    assert (ticket_no, exam, exp) == (TICKET, str(EXAM), str(int(NOW) + 600))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sig)
    assert verify_link(KEY, ticket_no, exam, exp, sig, now=NOW) == EXAM
    verify_link(KEY, ticket_no, exam, exp, sig, now=NOW + 599.9)
    with pytest.raises(LinkExpired) as caught:
        verify_link(KEY, ticket_no, exam, exp, sig, now=NOW + 600)
    assert caught.value.expires_at_s == int(NOW) + 600
    assert caught.value.ticket_no == TICKET


def test_fractional_now_rounds_expiry_up() -> None:
    _, _, exp, _ = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=10, now=NOW + 0.2))
    assert exp == str(int(NOW) + 11)


def test_default_clock_is_now() -> None:
    verify_link(KEY, *parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=60)))
    with pytest.raises(LinkExpired):
        verify_link(KEY, *parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=10, now=time.time() - 60)))


def test_tampered_signature_is_invalid() -> None:
    ticket_no, exam, exp, sig = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    with pytest.raises(LinkInvalid) as caught:
        verify_link(KEY, ticket_no, exam, exp, flipped, now=NOW)
    assert caught.value.reason == "bad signature"


def test_extended_exp_is_invalid_not_expired() -> None:
    ticket_no, exam, exp, sig = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    with pytest.raises(LinkInvalid):
        verify_link(KEY, ticket_no, exam, str(int(exp) + 86400), sig, now=NOW)
    with pytest.raises(LinkInvalid):  # same number, other spelling: the signature covers the text
        verify_link(KEY, ticket_no, exam, "0" + exp, sig, now=NOW)


def test_another_exam_is_invalid() -> None:
    ticket_no, _, exp, sig = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    with pytest.raises(LinkInvalid) as caught:
        verify_link(KEY, ticket_no, str(EXAM + 1), exp, sig, now=NOW)
    assert caught.value.reason == "bad signature"
    for malformed in ("", "0", "07", "-7", "7.0", "1" * 11):
        with pytest.raises(LinkInvalid) as caught:
            verify_link(KEY, ticket_no, malformed, exp, sig, now=NOW)
        assert caught.value.reason == "malformed exam"


def test_forged_link_past_its_exp_is_invalid_not_expired() -> None:
    with pytest.raises(LinkInvalid):
        verify_link(KEY, TICKET, str(EXAM), str(int(NOW) - 10), "A" * 43, now=NOW)


def test_link_for_another_ticket_is_invalid() -> None:
    _, exam, exp, sig = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    with pytest.raises(LinkInvalid):
        verify_link(KEY, "202612010100124", exam, exp, sig, now=NOW)


def test_link_signed_with_another_key_is_invalid() -> None:
    other = Settings(secret_key="s" * 32).derived_key("loadtest")
    with pytest.raises(LinkInvalid):
        verify_link(KEY, *parts(sign_link(other, TICKET, exam_id=EXAM, ttl_s=600, now=NOW)), now=NOW)


def test_ticket_number_is_escaped_in_the_path() -> None:
    link = sign_link(KEY, "A/B 1", exam_id=EXAM, ttl_s=600, now=NOW)
    assert link.startswith("/api/v1/tickets/A%2FB%201.pdf?")
    verify_link(KEY, *parts(link), now=NOW)


@pytest.mark.parametrize("exp", [
    "", "abc", "-1", "+1800000600", "1e9", " 1800000600", "1800000600 ", "1800000600.0",
    "١٨٠٠٠٠٠٦٠٠", "１８００", "1" * 13, "9" * 10_000, None, 1800000600,
])
def test_malformed_exp_is_invalid(exp: object) -> None:
    _, exam, _, sig = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    with pytest.raises(LinkInvalid) as caught:
        verify_link(KEY, TICKET, exam, exp, sig, now=NOW)  # type: ignore[arg-type]
    assert caught.value.reason == "malformed exp"


@pytest.mark.parametrize("sig", [
    "", "A" * 42, "A" * 44, "A" * 100_000, "A" * 42 + "=", "A" * 42 + "+", "A" * 42 + "/",
    "é" * 43, "\udcff" * 43, "A" * 42 + "\n", None, b"A" * 43,
])
def test_malformed_sig_is_invalid(sig: object) -> None:
    _, exam, exp, _ = parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW))
    with pytest.raises(LinkInvalid) as caught:
        verify_link(KEY, TICKET, exam, exp, sig, now=NOW)  # type: ignore[arg-type]
    assert caught.value.reason == "malformed sig"


@pytest.mark.parametrize("ticket_no", ["", "1" * 65, "\udcff", None, 202612010100123])
def test_malformed_ticket_number_is_invalid(ticket_no: object) -> None:
    with pytest.raises(LinkInvalid):
        verify_link(KEY, ticket_no, str(EXAM), str(int(NOW) + 600), "A" * 43, now=NOW)  # type: ignore[arg-type]


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(links.hmac, "compare_digest", spy)
    verify_link(KEY, *parts(sign_link(KEY, TICKET, exam_id=EXAM, ttl_s=600, now=NOW)), now=NOW)
    assert len(calls) == 1


def test_errors_share_one_base() -> None:
    assert issubclass(LinkInvalid, LinkError) and issubclass(LinkExpired, LinkError)
    assert not issubclass(LinkError, LookupError)


@pytest.mark.parametrize("kwargs", [{"ttl_s": 0}, {"ttl_s": -5}])
def test_sign_rejects_a_nonpositive_ttl(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        sign_link(KEY, TICKET, exam_id=EXAM, now=NOW, **kwargs)


def test_sign_rejects_an_empty_key_or_ticket() -> None:
    with pytest.raises(ValueError):
        sign_link(b"", TICKET, exam_id=EXAM, ttl_s=60)
    with pytest.raises(ValueError):
        sign_link(KEY, "", exam_id=EXAM, ttl_s=60)
    with pytest.raises(ValueError):
        sign_link(KEY, TICKET, exam_id=0, ttl_s=60)
