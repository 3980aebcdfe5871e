"""Sign in, sign out and /me in-process: one answer for unknown user and wrong password, lockout, timeouts, 401s."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from captcha import keys as captcha_keys
from captcha import pool as captcha_pool
from core import candidates
from core.passwords import PasswordHasher, PasswordSettings
from gateway import keys
from gateway.app import create_app
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    test_client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    await h.captcha_off(test_client)
    return test_client


async def test_login_me_and_logout(client: TestClient) -> None:
    account = await h.register(client)
    resp = await client.post("/api/v1/sessions", json={"username": account["username"].upper(),
                                                       "password": h.PASSWORD})
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"token", "expires_in"} and body["expires_in"] == 1800 and len(body["token"]) == 43

    me = await client.get("/api/v1/me", headers=h.bearer(body["token"]))
    assert me.status == 200
    profile = await me.json()
    number = account["id_number"]
    assert profile["id_number"] == f"{number[:10]}****{number[14:]}"
    assert number not in await me.text()
    assert profile["candidate_id"] == account["candidate_id"] and profile["username"] == account["username"]
    assert profile["name"] == "张三" and profile["educations"][0]["graduated_on"] == "2012-06"
    assert "password_hash" not in profile and "security_answer_hash" not in profile

    out = await client.delete("/api/v1/sessions/current", headers=h.bearer(body["token"]))
    assert out.status == 204
    again = await client.get("/api/v1/me", headers=h.bearer(body["token"]))
    assert again.status == 401
    assert_error_shape(await again.json(), "unauthorized")
    assert (await client.delete("/api/v1/sessions/current", headers=h.bearer(body["token"]))).status == 401


async def test_unknown_user_and_wrong_password_answer_alike(client: TestClient) -> None:
    account = await h.register(client)
    answers = []
    for username, password in ((account["username"], "Wrong#Pass123"), ("nobody" + account["username"], h.PASSWORD),
                               ("x", h.PASSWORD)):
        resp = await client.post("/api/v1/sessions", json={"username": username, "password": password})
        answers.append((resp.status, await resp.read()))
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]
    assert_error_shape(await resp.json(), "invalid_credentials")


@pytest.mark.parametrize(("body", "fields"), [
    ({"password": "x"}, {"username": "required"}),
    ({"username": 5, "password": ""}, {"username": "must_be_string", "password": "required"}),
    ({"username": "abcdefg", "password": "p" * 300}, {"password": "too_long"}),
    ({"username": "abcdefg", "password": "Qiu#2026pass", "remember": True}, {"remember": "unknown_field"}),
])
async def test_malformed_login_bodies(client: TestClient, body: dict[str, Any], fields: dict[str, str]) -> None:
    resp = await client.post("/api/v1/sessions", json=body)
    assert resp.status == 422
    payload = await resp.json()
    assert_error_shape(payload, "validation_failed")
    assert payload["error"]["details"]["fields"] == fields


@pytest.mark.parametrize("authorization", [None, "Basic abc", "Bearer", "Bearer short",
                                           "Bearer " + "A" * 43, "Bearer " + "é" * 43])
async def test_me_needs_a_live_session(client: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    resp = await client.get("/api/v1/me", headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error_shape(await resp.json(), "unauthorized")
    assert (await client.delete("/api/v1/sessions/current", headers=headers)).status == 401


async def test_a_login_with_old_hash_parameters_upgrades_the_hash(client: TestClient, pg: asyncpg.Connection) -> None:
    account = await h.register(client)
    old = PasswordHasher(PasswordSettings(memory_kib=4096, time_cost=1))
    try:
        old_hash = await old.hash(h.PASSWORD)
    finally:
        old.close()
    await pg.execute("UPDATE candidates SET password_hash = $2 WHERE id = $1", account["candidate_id"], old_hash)
    await client.app[keys.REDIS].delete(candidates.credentials_key(account["username"]))
    await h.login(client, account["username"])
    stored = await pg.fetchval("SELECT password_hash FROM candidates WHERE id = $1", account["candidate_id"])
    assert stored != old_hash and "m=8192,t=1" in stored
    await h.login(client, account["username"])  # the cached record has the new hash too


async def test_sessions_expire_when_idle_and_absolutely(aiohttp_client: Any, pg_dsn: str, redis_url: str,
                                                        redis: aioredis.Redis, tmp_path: Path) -> None:
    settings = h.settings(pg_dsn, redis_url, tmp_path, EXAMGATE_SESSION_IDLE_TIMEOUT_S="1",
                          EXAMGATE_SESSION_ABSOLUTE_TIMEOUT_S="1.6")
    client = await aiohttp_client(create_app(settings))
    await h.captcha_off(client)
    account = await h.register(client)

    idle = await h.login(client, account["username"])
    await asyncio.sleep(1.15)
    assert (await client.get("/api/v1/me", headers=h.bearer(idle))).status == 401

    busy = await h.login(client, account["username"])
    for _ in range(3):  # used every 0.5 s: the idle timeout never passes, the absolute one does
        assert (await client.get("/api/v1/me", headers=h.bearer(busy))).status == 200
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.15)
    assert (await client.get("/api/v1/me", headers=h.bearer(busy))).status == 401


async def test_login_pool_full_answers_503_at_once(aiohttp_client: Any, pg_dsn: str, redis_url: str,
                                                   redis: aioredis.Redis, tmp_path: Path) -> None:
    # One thread, no queue, slow hashes: concurrent logins beyond the first are refused at once.
    settings = h.settings(pg_dsn, redis_url, tmp_path, EXAMGATE_HASHER_THREADS="1", EXAMGATE_HASHER_MAX_QUEUE="0",
                          EXAMGATE_ARGON2_MEMORY_KIB="65536", EXAMGATE_ARGON2_TIME_COST="3")
    client = await aiohttp_client(create_app(settings))
    await h.captcha_off(client)
    # two hashes at once: never fits
    resp = await client.post("/api/v1/accounts", json=await h.with_code(client, h.registration()))
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    assert_error_shape(await resp.json(), "overloaded")

    replies = await asyncio.gather(*(client.post("/api/v1/sessions", json={"username": f"someone{i}",
                                                                           "password": h.PASSWORD})
                                     for i in range(8)))
    statuses = sorted(r.status for r in replies)
    assert 401 in statuses and 503 in statuses, statuses
    refused = next(r for r in replies if r.status == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert_error_shape(await refused.json(), "overloaded")


FAILURES_RULE = {"id": "login-account", "routes": ["sessions.create"], "key": "account", "rate": 3, "period_s": 600,
                 "burst": 3, "mode": "enforce", "on_redis_error": "local", "counts": "failures"}


async def fail_three_times(client: TestClient, username: str) -> None:
    for _ in range(3):
        resp = await client.post("/api/v1/sessions", json={"username": username, "password": "Bad#pass123"})
        assert resp.status == 401


async def test_failed_logins_ask_for_an_image_captcha(client: TestClient) -> None:
    account = await h.register(client)
    await h.set_live(client, {"ratelimit": {"rules": [FAILURES_RULE]}})
    await fail_three_times(client, account["username"])
    resp = await client.post("/api/v1/sessions", json={"username": account["username"], "password": h.PASSWORD})
    assert resp.status == 400 and "Retry-After" not in resp.headers
    body = await resp.json()
    assert_error_shape(body, "captcha_required")
    assert body["error"]["details"] == {"captcha": "image"}
    # Another account is not affected; successes never count.
    other = await h.register(client)
    for _ in range(5):
        await h.login(client, other["username"])


async def test_an_escalated_login_takes_an_image_even_where_the_route_takes_pow_only(
        client: TestClient, redis: aioredis.Redis) -> None:
    account = await h.register(client)
    await h.set_live(client, {"ratelimit": {"rules": [FAILURES_RULE]},
                              "captcha": {"routes": {"sessions.create": "pow"}}})
    token = await h.loadtest_token(client)
    await captcha_pool.refill(redis, target=3, batch=3, inline=True)
    for _ in range(3):
        resp = await client.post("/api/v1/sessions", json={"username": account["username"], "password": "Bad#pass123"},
                                 headers={"X-Loadtest-Token": token})
        assert resp.status == 401

    async def image() -> dict[str, str]:
        issued = await (await client.get("/api/v1/captcha/image")).json()
        answer = (await redis.get(captcha_keys.answer_key(issued["id"]))).decode()
        return {"kind": "image", "id": issued["id"], "answer": answer}

    wrong = await image()
    wrong["answer"] = str((int(wrong["answer"]) + 1) % 100_000).zfill(5)
    for captcha in (None, wrong):  # the load-test token does not stand in for the image; a wrong answer fails
        body = {"username": account["username"], "password": h.PASSWORD}
        if captcha is not None:
            body["captcha"] = captcha
        resp = await client.post("/api/v1/sessions", json=body, headers={"X-Loadtest-Token": token})
        assert resp.status == 400
        assert_error_shape(await resp.json(), "captcha_required" if captcha is None else "captcha_invalid")
    resp = await client.post("/api/v1/sessions", json={"username": account["username"], "password": h.PASSWORD,
                                                       "captcha": await image()})
    assert resp.status == 201, await resp.text()


async def test_failed_logins_lock_the_account_without_escalation(client: TestClient) -> None:
    account = await h.register(client)
    await h.set_live(client, {"ratelimit": {"rules": [FAILURES_RULE]}, "captcha": {"escalate": None}})
    await fail_three_times(client, account["username"])
    resp = await client.post("/api/v1/sessions", json={"username": account["username"], "password": h.PASSWORD})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1 and "RateLimit-Policy" in resp.headers
    body = await resp.json()
    assert_error_shape(body, "too_many_attempts")
    assert body["error"]["details"]["rules"] == ["login-account"]


async def test_a_candidate_rule_put_on_me_by_live_config_limits_it(client: TestClient) -> None:
    first, second = await h.register(client), await h.register(client)
    tokens = [await h.login(client, account["username"]) for account in (first, second)]
    rule = {"id": "me-candidate", "routes": ["me.get"], "key": "candidate", "rate": 1, "period_s": 600, "burst": 3,
            "mode": "enforce", "on_redis_error": "local"}
    await h.set_live(client, {"ratelimit": {"rules": [rule]}})
    statuses = [(await client.get("/api/v1/me", headers=h.bearer(tokens[0]))).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await client.get("/api/v1/me", headers=h.bearer(tokens[0]))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "RateLimit-Policy" in refused.headers
    body = await refused.json()
    assert_error_shape(body, "too_many_requests")
    assert body["error"]["details"]["rules"] == ["me-candidate"]
    # Keyed on the candidate, not the address: the other candidate, from the same address, is served.
    assert (await client.get("/api/v1/me", headers=h.bearer(tokens[1]))).status == 200
    # Without a session the route answers 401 before any candidate-keyed rule is looked at.
    assert (await client.get("/api/v1/me")).status == 401
