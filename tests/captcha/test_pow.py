"""Proof-of-work against the reference ALTCHA library and real Redis: solved once, replays and forgeries refused."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import altcha
import orjson
import pytest
from altcha import v1 as altcha_v1

from captcha import keys
from captcha.errors import CaptchaInvalid
from captcha.pow import check_solution, consume_solution, create_challenge
from core.redis import AutoPipeline

MAXNUMBER = 5_000


def solve(challenge: dict[str, Any]) -> dict[str, Any]:
    """Solve with the reference library, as an ALTCHA client would, and build the payload fields."""
    solution = altcha.solve_challenge_v1(
        challenge["challenge"], challenge["salt"], challenge["algorithm"], challenge["maxnumber"]
    )
    assert solution is not None
    return {
        "algorithm": challenge["algorithm"],
        "challenge": challenge["challenge"],
        "number": solution.number,
        "salt": challenge["salt"],
        "signature": challenge["signature"],
    }


def encode(fields: dict[str, Any]) -> str:
    """A payload as the widget sends it: base64 of the JSON."""
    return base64.b64encode(json.dumps(fields).encode()).decode()


def reason(hmac_key: bytes, payload: object, **kwargs: Any) -> str:
    with pytest.raises(CaptchaInvalid) as caught:
        check_solution(hmac_key, payload, **kwargs)
    return caught.value.reason


def test_challenge_has_the_documented_shape(hmac_key: bytes) -> None:
    challenge = create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=300, now=1_700_000_000)

    assert set(challenge) == {"algorithm", "challenge", "maxnumber", "salt", "signature"}
    assert challenge["algorithm"] == "SHA-256" and challenge["maxnumber"] == MAXNUMBER
    nonce, _, params = challenge["salt"].partition("?")
    assert len(nonce) == 24 and params == f"expires=1700000300&maxnumber={MAXNUMBER}&"
    assert challenge["salt"].endswith("&")
    assert altcha.hmac_hex("SHA-256", challenge["challenge"].encode(), hmac_key) == challenge["signature"]


def test_reference_library_accepts_our_challenges_and_solutions(hmac_key: bytes) -> None:
    challenge = create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=300)
    fields = solve(challenge)
    assert 0 <= fields["number"] <= MAXNUMBER

    # The reference verifier agrees: signature, hash and expiry from the salt params.
    assert altcha_v1.verify_solution(encode(fields), hmac_key) == (True, None)
    assert altcha.PayloadV1.from_dict(fields).parse_salt()[1] == pytest.approx(time.time() + 300, abs=5)


def test_we_accept_a_payload_built_by_the_reference_library(hmac_key: bytes) -> None:
    challenge = create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=300)
    payload = altcha.PayloadV1.from_dict(solve(challenge)).to_base64()

    solved = check_solution(hmac_key, payload)
    assert solved.signature == challenge["signature"]


async def test_solution_passes_once_then_replay_fails(pipeline: AutoPipeline, hmac_key: bytes) -> None:
    challenge = create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120)
    payload = encode(solve(challenge))

    await consume_solution(pipeline, hmac_key, payload)
    with pytest.raises(CaptchaInvalid) as caught:
        await consume_solution(pipeline, hmac_key, payload)
    assert caught.value.reason == "replayed"
    # Remembered until the challenge expires (its expiry is rounded up to a second, plus a
    # second of skew allowance), not forever.
    ttl_ms = await pipeline.execute("PTTL", keys.pow_used_key(challenge["signature"]))
    assert 115_000 < ttl_ms <= 122_000


async def test_the_same_solution_at_once_passes_exactly_once(
    pipeline: AutoPipeline, other_pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    payload = encode(solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120)))
    attempts = [consume_solution(client, hmac_key, payload) for client in (pipeline, pipeline, other_pipeline)]
    results = await asyncio.gather(*attempts, return_exceptions=True)

    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(r.reason == "replayed" for r in results if isinstance(r, CaptchaInvalid))


def test_tampered_signature_is_refused(hmac_key: bytes) -> None:
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120))
    flipped = ("0" if fields["signature"][0] != "0" else "1") + fields["signature"][1:]

    assert reason(hmac_key, encode({**fields, "signature": flipped})) == "bad_signature"
    assert reason(b"another key", encode(fields)) == "bad_signature"


def test_own_challenge_with_forged_salt_is_refused(hmac_key: bytes) -> None:
    # Pushing the expiry out changes the hash, so the signed challenge no longer matches.
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=1, now=time.time() - 10))
    nonce = fields["salt"].partition("?")[0]
    forged = f"{nonce}?expires={int(time.time()) + 3600}&maxnumber={MAXNUMBER}&"

    assert reason(hmac_key, encode({**fields, "salt": forged})) == "wrong_solution"


def test_expired_challenge_is_refused(hmac_key: bytes) -> None:
    issued_at = time.time()
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=60, now=issued_at))

    assert check_solution(hmac_key, encode(fields), now=issued_at + 59)
    assert reason(hmac_key, encode(fields), now=issued_at + 61) == "expired"


def test_wrong_number_is_refused(hmac_key: bytes) -> None:
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120))
    wrong = fields["number"] + 1 if fields["number"] < MAXNUMBER else fields["number"] - 1

    assert reason(hmac_key, encode({**fields, "number": wrong})) == "wrong_solution"
    assert reason(hmac_key, encode({**fields, "number": MAXNUMBER + 1})) == "malformed"
    assert reason(hmac_key, encode({**fields, "number": -1})) == "malformed"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: {**f, "number": str(f["number"])},
        lambda f: {**f, "number": float(f["number"])},
        lambda f: {**f, "number": True},
        lambda f: {**f, "number": 10**30},
        lambda f: {**f, "number": None},
        lambda f: {**f, "algorithm": "SHA-1"},
        lambda f: {**f, "salt": 5},
        lambda f: {**f, "salt": f["salt"].rstrip("&")},
        lambda f: {**f, "salt": f["salt"] + "expires=9999999999&"},
        lambda f: {**f, "challenge": f["challenge"].upper()},
        lambda f: {**f, "signature": ["x"]},
        lambda f: {k: v for k, v in f.items() if k != "number"},
        lambda f: [f],
        lambda f: "just a string",
    ],
)
def test_malformed_fields_are_refused(hmac_key: bytes, mutate: Any) -> None:
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120))
    assert reason(hmac_key, encode(mutate(fields))) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        None, 42, b"bytes", "", "not base64!!", "é" * 8, "A" * 5000,
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b'{"number": 1').decode(),
        base64.b64encode(orjson.dumps(None)).decode(),
        "eyJhIjoxfQ",  # valid base64 content, missing padding
    ],
)
def test_malformed_payloads_are_refused_cleanly(hmac_key: bytes, payload: object) -> None:
    assert reason(hmac_key, payload) == "malformed"


def test_extra_fields_from_the_widget_are_ignored(hmac_key: bytes) -> None:
    fields = solve(create_challenge(hmac_key, maxnumber=MAXNUMBER, ttl_s=120))
    assert check_solution(hmac_key, encode({**fields, "took": 1234, "test": False}))


def test_bad_settings_are_refused(hmac_key: bytes) -> None:
    for kwargs in ({"maxnumber": 0, "ttl_s": 60}, {"maxnumber": 10**10, "ttl_s": 60}, {"maxnumber": 100, "ttl_s": 0}):
        with pytest.raises(ValueError):
            create_challenge(hmac_key, **kwargs)
    with pytest.raises(ValueError):
        create_challenge(b"", maxnumber=100, ttl_s=60)
