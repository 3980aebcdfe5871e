"""consume against real Redis: modes, single use under concurrency, wrong answers consumed, malformed input refused."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import altcha
import pytest
import redis.asyncio as aioredis

from captcha import keys
from captcha.check import accepts, consume
from captcha.errors import CaptchaInvalid
from captcha.pool import Issued, decode_entry, refill, take
from captcha.pow import create_challenge
from core.redis import AutoPipeline


async def issue_image(redis: aioredis.Redis, pipeline: AutoPipeline, ttl_s: int = 60) -> tuple[Issued, str]:
    """Put one real image in the pool, take it, and return it with its answer."""
    await refill(redis, target=1, batch=1, inline=True)
    _, answer, _ = decode_entry((await redis.lrange(keys.POOL, 0, 0))[0])
    issued = await take(pipeline, answer_ttl_s=ttl_s)
    assert issued is not None
    return issued, answer


def pow_payload(hmac_key: bytes) -> str:
    """A proof-of-work payload solved by the reference library."""
    challenge = create_challenge(hmac_key, maxnumber=2_000, ttl_s=120)
    solution = altcha.solve_challenge_v1(challenge["challenge"], challenge["salt"], "SHA-256", 2_000)
    assert solution is not None
    fields = {k: challenge[k] for k in ("algorithm", "challenge", "salt", "signature")} | {"number": solution.number}
    return base64.b64encode(json.dumps(fields).encode()).decode()


async def refused(client: AutoPipeline, captcha: object, mode: str, hmac_key: bytes) -> str:
    with pytest.raises(CaptchaInvalid) as caught:
        await consume(client, captcha, mode=mode, hmac_key=hmac_key)
    return caught.value.reason


async def test_right_answer_passes_once(redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes) -> None:
    issued, answer = await issue_image(redis, pipeline)
    captcha = {"kind": "image", "id": issued.id, "answer": answer}

    await consume(pipeline, captcha, mode="image", hmac_key=hmac_key)
    assert await refused(pipeline, captcha, "image", hmac_key) == "unknown"


async def test_wrong_answer_consumes_the_captcha(
    redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    issued, answer = await issue_image(redis, pipeline)
    wrong = f"{(int(answer) + 1) % 100_000:05d}"

    wrong_captcha = {"kind": "image", "id": issued.id, "answer": wrong}
    assert await refused(pipeline, wrong_captcha, "image", hmac_key) == "wrong_answer"
    right = {"kind": "image", "id": issued.id, "answer": answer}
    assert await refused(pipeline, right, "image", hmac_key) == "unknown"


async def test_same_answer_at_once_through_one_pipeline_passes_once(
    redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    issued, answer = await issue_image(redis, pipeline)
    captcha = {"kind": "image", "id": issued.id, "answer": answer}
    batches_before = pipeline.batches_sent

    results = await asyncio.gather(
        *(consume(pipeline, captcha, mode="either", hmac_key=hmac_key) for _ in range(10)), return_exceptions=True
    )

    assert pipeline.batches_sent - batches_before == 1  # all ten in one auto-pipelined write
    assert results.count(None) == 1
    assert sorted(r.reason for r in results if isinstance(r, CaptchaInvalid)) == ["unknown"] * 9


async def test_same_answer_at_once_through_two_clients_passes_once(
    redis: aioredis.Redis, pipeline: AutoPipeline, other_pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    for _ in range(20):
        issued, answer = await issue_image(redis, pipeline)
        captcha = {"kind": "image", "id": issued.id, "answer": answer}
        results = await asyncio.gather(
            consume(pipeline, captcha, mode="image", hmac_key=hmac_key),
            consume(other_pipeline, captcha, mode="image", hmac_key=hmac_key),
            return_exceptions=True,
        )
        assert results.count(None) == 1
        assert [r.reason for r in results if isinstance(r, CaptchaInvalid)] == ["unknown"]


async def test_full_width_digits_and_spaces_are_accepted(
    redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    issued, answer = await issue_image(redis, pipeline)
    typed = " ".join(chr(ord("０") + int(d)) for d in answer)  # as a Chinese IME types them

    await consume(pipeline, {"kind": "image", "id": issued.id, "answer": typed}, mode="image", hmac_key=hmac_key)


async def test_pow_passes_once_through_consume(pipeline: AutoPipeline, hmac_key: bytes) -> None:
    captcha = {"kind": "pow", "payload": pow_payload(hmac_key)}

    await consume(pipeline, captcha, mode="pow", hmac_key=hmac_key)
    assert await refused(pipeline, captcha, "either", hmac_key) == "replayed"


async def test_either_takes_both_kinds(redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes) -> None:
    issued, answer = await issue_image(redis, pipeline)
    await consume(pipeline, {"kind": "image", "id": issued.id, "answer": answer}, mode="either", hmac_key=hmac_key)
    await consume(pipeline, {"kind": "pow", "payload": pow_payload(hmac_key)}, mode="either", hmac_key=hmac_key)


async def test_wrong_kind_for_the_mode_is_refused_without_consuming(
    redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    issued, answer = await issue_image(redis, pipeline)
    image = {"kind": "image", "id": issued.id, "answer": answer}
    proof = {"kind": "pow", "payload": pow_payload(hmac_key)}

    assert await refused(pipeline, image, "pow", hmac_key) == "wrong_kind"
    assert await refused(pipeline, proof, "image", hmac_key) == "wrong_kind"
    # Neither was spent by the refusal.
    await consume(pipeline, image, mode="image", hmac_key=hmac_key)
    await consume(pipeline, proof, mode="pow", hmac_key=hmac_key)


async def test_off_needs_nothing_and_consumes_nothing(
    redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes
) -> None:
    issued, answer = await issue_image(redis, pipeline)
    image = {"kind": "image", "id": issued.id, "answer": answer}

    await consume(pipeline, None, mode="off", hmac_key=hmac_key)
    await consume(pipeline, "garbage", mode="off", hmac_key=hmac_key)
    await consume(pipeline, image, mode="off", hmac_key=hmac_key)
    await consume(pipeline, image, mode="image", hmac_key=hmac_key)


@pytest.mark.parametrize("mode", ["image", "pow", "either"])
async def test_missing_captcha_is_refused(pipeline: AutoPipeline, hmac_key: bytes, mode: str) -> None:
    assert await refused(pipeline, None, mode, hmac_key) == "missing"


@pytest.mark.parametrize(
    "captcha",
    [
        "12345", 12345, ["image"], {}, {"kind": "audio"}, {"kind": None}, {"kind": ["image"]},
        {"kind": "image"},
        {"kind": "image", "id": "A" * 22},
        {"kind": "image", "id": "A" * 22, "answer": 12345},
        {"kind": "image", "id": "A" * 22, "answer": "1" * 33},
        {"kind": "image", "id": 7, "answer": "12345"},
        {"kind": "image", "id": "../../etc", "answer": "12345"},
        {"kind": "image", "id": "A" * 22 + "\r\nDEL x", "answer": "12345"},
        {"kind": "pow"},
        {"kind": "pow", "payload": 5},
        {"kind": "pow", "payload": "%%%"},
    ],
)
async def test_malformed_captcha_is_refused(pipeline: AutoPipeline, hmac_key: bytes, captcha: Any) -> None:
    assert await refused(pipeline, captcha, "either", hmac_key) == "malformed"


async def test_unknown_id_is_refused(pipeline: AutoPipeline, hmac_key: bytes) -> None:
    captcha = {"kind": "image", "id": "Z" * 22, "answer": "12345"}
    assert await refused(pipeline, captcha, "image", hmac_key) == "unknown"


async def test_unknown_mode_is_a_programming_error(pipeline: AutoPipeline, hmac_key: bytes) -> None:
    with pytest.raises(ValueError):
        await consume(pipeline, None, mode="sometimes", hmac_key=hmac_key)
    with pytest.raises(ValueError):
        accepts("sometimes", "image")


def test_accepts_table() -> None:
    assert [accepts(m, "image") for m in ("image", "pow", "either", "off")] == [True, False, True, False]
    assert [accepts(m, "pow") for m in ("image", "pow", "either", "off")] == [False, True, True, False]
    assert not accepts("either", "audio")
