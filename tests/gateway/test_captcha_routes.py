"""Captcha over HTTP in-process.

The image pool, single use under concurrency, ALTCHA proof-of-work, load-test tokens.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import altcha
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from captcha import keys as captcha_keys
from captcha import loadtest
from captcha import pool as captcha_pool
from examgate.worker import keep_captcha_pool, until_cancelled
from gateway import keys
from gateway.app import create_app
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape

LOGIN = "/api/v1/sessions"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    return await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path,
                                                      EXAMGATE_CAPTCHA_ANSWER_TTL_S="120")))


def login_body(captcha: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"username": "nobody01", "password": h.PASSWORD}
    if captcha is not None:
        body["captcha"] = captcha
    return body


async def take_image(client: TestClient, redis: aioredis.Redis) -> tuple[str, str]:
    resp = await client.get("/api/v1/captcha/image")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return body["id"], (await redis.get(captcha_keys.answer_key(body["id"]))).decode()


async def test_image_comes_from_the_pool_and_an_empty_pool_answers_503(client: TestClient,
                                                                        redis: aioredis.Redis) -> None:
    empty = await client.get("/api/v1/captcha/image")
    assert empty.status == 503 and empty.headers["Retry-After"] == "1"
    assert_error_shape(await empty.json(), "service_unavailable")
    assert (await client.head("/api/v1/captcha/image")).status == 405  # a HEAD must not waste an image

    await captcha_pool.refill(redis, target=2, batch=2, inline=True)
    resp = await client.get("/api/v1/captcha/image")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"id", "image", "expires_in"} and body["expires_in"] == 120
    prefix = "data:image/png;base64,"
    assert body["image"].startswith(prefix)
    assert base64.b64decode(body["image"][len(prefix):]).startswith(b"\x89PNG")
    answer = await redis.get(captcha_keys.answer_key(body["id"]))
    assert answer is not None and len(answer) == 5 and answer.isdigit()
    assert 0 < await redis.ttl(captcha_keys.answer_key(body["id"])) <= 120
    assert await redis.llen(captcha_keys.POOL) == 1


async def test_an_image_answer_sent_twice_at_once_passes_once(client: TestClient, redis: aioredis.Redis) -> None:
    await h.set_live(client, {"captcha": {"routes": {"sessions.create": "image"}}})
    await captcha_pool.refill(redis, target=3, batch=3, inline=True)

    image_id, answer = await take_image(client, redis)
    captcha = {"kind": "image", "id": image_id, "answer": answer}
    replies = await asyncio.gather(*(client.post(LOGIN, json=login_body(captcha)) for _ in range(2)))
    assert sorted(r.status for r in replies) == [400, 401]  # 401: the captcha passed, the password did not
    refused = next(r for r in replies if r.status == 400)
    assert_error_shape(await refused.json(), "captcha_invalid")

    image_id, answer = await take_image(client, redis)  # a wrong answer uses the captcha up too
    wrong = str((int(answer) + 1) % 100000).zfill(5)
    for attempt in (wrong, answer):
        resp = await client.post(LOGIN, json=login_body({"kind": "image", "id": image_id, "answer": attempt}))
        assert resp.status == 400
        assert_error_shape(await resp.json(), "captcha_invalid")

    image_id, answer = await take_image(client, redis)  # full-width digits as a Chinese IME types them
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in answer)
    resp = await client.post(LOGIN, json=login_body({"kind": "image", "id": image_id, "answer": full_width}))
    assert resp.status == 401


@pytest.mark.parametrize("captcha", [None, "12345", {"kind": "image"}, {"kind": "audio"},
                                     {"kind": "image", "id": "../../etc", "answer": "12345"},
                                     {"kind": "pow", "payload": "bm90IGpzb24="}])
async def test_malformed_captchas_are_refused(client: TestClient, captcha: Any) -> None:
    resp = await client.post(LOGIN, json=login_body(captcha))
    assert resp.status == 400
    assert_error_shape(await resp.json(), "captcha_invalid")


def solve(challenge: dict[str, Any]) -> str:
    """The payload an ALTCHA widget sends, solved with the reference library."""
    solution = altcha.solve_challenge_v1(challenge["challenge"], challenge["salt"], challenge["algorithm"],
                                         challenge["maxnumber"])
    assert solution is not None
    fields = {"algorithm": challenge["algorithm"], "challenge": challenge["challenge"], "number": solution.number,
              "salt": challenge["salt"], "signature": challenge["signature"]}
    return base64.b64encode(json.dumps(fields).encode()).decode()


async def test_proof_of_work_verifies_once(client: TestClient) -> None:
    await h.set_live(client, {"captcha": {"routes": {"sessions.create": "pow"}, "pow_maxnumber": 5000}})
    resp = await client.get("/api/v1/captcha/pow")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    challenge = await resp.json()
    assert set(challenge) == {"algorithm", "challenge", "maxnumber", "salt", "signature"}
    assert challenge["algorithm"] == "SHA-256" and challenge["maxnumber"] == 5000
    # Signed with HMAC(secret_key, "captcha-pow"), not the secret key itself.
    pow_key = client.app[keys.POW_KEY]
    assert altcha.hmac_hex("SHA-256", challenge["challenge"].encode(), pow_key) == challenge["signature"]
    assert pow_key != client.app[keys.SETTINGS].secret_key.encode()

    payload = solve(challenge)
    first = await client.post(LOGIN, json=login_body({"kind": "pow", "payload": payload}))
    assert first.status == 401  # passed the captcha
    replay = await client.post(LOGIN, json=login_body({"kind": "pow", "payload": payload}))
    assert replay.status == 400
    assert_error_shape(await replay.json(), "captcha_invalid")

    image_kind = await client.post(LOGIN, json=login_body({"kind": "image", "id": "a" * 22, "answer": "12345"}))
    assert image_kind.status == 400  # the route takes pow only


async def test_loadtest_tokens_are_issued_audited_and_skip_the_captcha(client: TestClient,
                                                                       pg: asyncpg.Connection) -> None:
    version_before = (await (await client.get("/admin/api/v1/config", headers=h.admin())).json())["version"]
    resp = await client.post("/admin/api/v1/loadtest-tokens", json={"ttl_s": 60, "name": "locust-run-7"},
                             headers=h.admin())
    assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    token = body["token"]
    claims = loadtest.read(client.app[keys.LOADTEST_KEY], token)
    assert claims is not None and claims.name == "locust-run-7"
    assert body["expires_at"].endswith("+08:00") and body["token_id"] == claims.token_id

    row = await pg.fetchrow("SELECT actor, diff FROM config_audit ORDER BY id DESC LIMIT 1")
    assert row["actor"] == "ops"
    assert row["diff"] == [{"path": "loadtest_tokens", "old": None,
                            "new": {"token_id": claims.token_id, "name": "locust-run-7",
                                    "expires_at": body["expires_at"]}}]
    audit = await (await client.get("/admin/api/v1/audit?limit=1", headers=h.admin())).json()
    assert audit["changes"][0]["diff"][0]["path"] == "loadtest_tokens" and token not in json.dumps(audit)
    after = await (await client.get("/admin/api/v1/config", headers=h.admin())).json()
    assert after["version"] == version_before  # issuing a token changes no config

    with_token = await client.post(LOGIN, json=login_body(), headers={"X-Loadtest-Token": token})
    assert with_token.status == 401  # past the captcha
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = await client.post(LOGIN, json=login_body(), headers={"X-Loadtest-Token": forged})
    assert refused.status == 400
    assert_error_shape(await refused.json(), "captcha_invalid")
    other_key = loadtest.issue(b"another secret", ttl_s=60, name="x")
    assert (await client.post(LOGIN, json=login_body(), headers={"X-Loadtest-Token": other_key})).status == 400


@pytest.mark.parametrize("body", [{}, {"ttl_s": 0}, {"ttl_s": 86401}, {"ttl_s": "60"}, {"ttl_s": True},
                                  {"ttl_s": 1.5}, {"ttl_s": 60, "name": ""}, {"ttl_s": 60, "scope": "all"}])
async def test_loadtest_token_requests_are_validated(client: TestClient, pg: asyncpg.Connection,
                                                     body: dict[str, Any]) -> None:
    rows = await pg.fetchval("SELECT count(*) FROM config_audit")
    resp = await client.post("/admin/api/v1/loadtest-tokens", json=body, headers=h.admin())
    assert resp.status == 422
    assert_error_shape(await resp.json(), "validation_failed")
    assert await pg.fetchval("SELECT count(*) FROM config_audit") == rows


async def test_loadtest_tokens_need_an_operator(client: TestClient) -> None:
    resp = await client.post("/admin/api/v1/loadtest-tokens", json={"ttl_s": 60})
    assert resp.status == 401
    assert_error_shape(await resp.json(), "unauthorized")


async def test_worker_refills_the_pool_in_other_processes(redis: aioredis.Redis, pg_dsn: str, redis_url: str,
                                                          tmp_path: Path) -> None:
    settings = h.settings(pg_dsn, redis_url, tmp_path, EXAMGATE_CAPTCHA_POOL_TARGET="6",
                          EXAMGATE_CAPTCHA_REFILL_BATCH="2", EXAMGATE_CAPTCHA_REFILL_PROCESSES="1")
    # Supervised as the worker runs it: a cancellation landing as a redis-py call completes can be
    # swallowed on 3.11 (examgate.worker.until_cancelled), and the pool task would then run on.
    task = asyncio.create_task(until_cancelled(lambda: keep_captcha_pool(redis, settings)))
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await redis.llen(captcha_keys.POOL) < 6:
            assert not task.done() and asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await redis.lpop(captcha_keys.POOL, 3)  # taken by candidates: the next round tops it up again
        while await redis.llen(captcha_keys.POOL) < 6:
            assert not task.done() and asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await redis.llen(captcha_keys.POOL) == 6
    stats = await redis.hgetall(captcha_keys.POOL_STATS)
    assert stats[b"target"] == b"6" and stats[b"added_total"] == b"9"


async def test_metrics_show_the_pools(client: TestClient, redis: aioredis.Redis) -> None:
    await captcha_pool.refill(redis, target=2, batch=2, inline=True)
    token = client.app[keys.SETTINGS].metrics_token
    text = await (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text()
    assert "examgate_captcha_pool_images 2.0" in text
    assert 'examgate_password_pool_jobs{state="capacity"} 66.0' in text
    assert "examgate_password_pool_rejected" in text and "examgate_captcha_refill_images_per_second" in text
