"""Registration over HTTP: field errors, conflicts, and 50 racing registrations through a 2-process gateway."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from loadtest.processes import Process, start_gateway
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape

ACCOUNTS = "/api/v1/accounts"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    return await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))


async def test_registration_stores_the_candidate(client: TestClient, pg: asyncpg.Connection) -> None:
    token = await h.loadtest_token(client)
    body = h.registration(username="Zhang_San" + secrets.token_hex(3), id_number=h.resident_id().lower())
    await h.with_code(client, body, **{"X-Loadtest-Token": token})
    resp = await client.post(ACCOUNTS, json=body, headers={"X-Loadtest-Token": token})
    assert resp.status == 201, await resp.text()
    candidate_id = (await resp.json())["candidate_id"]
    row = await pg.fetchrow("SELECT username, id_number, password_hash, security_answer_hash FROM candidates "
                            "WHERE id = $1", candidate_id)
    assert row["username"] == body["username"].lower() and row["id_number"] == body["id_number"].upper()
    assert row["password_hash"].startswith("$argon2id$") and h.PASSWORD not in row["password_hash"]
    assert row["security_answer_hash"].startswith("$argon2id$")


async def test_registration_needs_a_captcha(client: TestClient, pg: asyncpg.Connection) -> None:
    body = h.registration()
    resp = await client.post(ACCOUNTS, json=body)
    assert resp.status == 400
    assert_error_shape(await resp.json(), "captcha_invalid")
    assert await pg.fetchval("SELECT count(*) FROM candidates WHERE username = $1", body["username"]) == 0


@pytest.mark.parametrize(("changes", "fields"), [
    ({"password": "short"}, {"password": "too_short"}),
    ({"password": "alllowercase1"}, {"password": "too_few_character_classes"}),
    ({"id_number": "110101199003078031", "phone": "12345", "educations": []},
     {"id_number": "invalid_check_digit", "phone": "invalid_format", "educations": "required"}),
    ({"username": None, "nickname": "x"}, {"username": "required", "nickname": "unknown_field"}),
])
async def test_bad_fields_are_listed(client: TestClient, changes: dict[str, Any], fields: dict[str, str]) -> None:
    body = {k: v for k, v in h.registration(**changes).items() if v is not None}
    resp = await client.post(ACCOUNTS, json=body)  # validation comes before the captcha: it is not spent
    assert resp.status == 422
    payload = await resp.json()
    assert_error_shape(payload, "validation_failed")
    assert payload["error"]["details"]["fields"] == fields


async def test_bad_bodies(client: TestClient) -> None:
    resp = await client.post(ACCOUNTS, data=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_error_shape(await resp.json(), "malformed_body")
    resp = await client.post(ACCOUNTS, data=b"username=x",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415


async def test_taken_phone_and_username_conflict(client: TestClient) -> None:
    await h.captcha_off(client)
    first = await h.register(client)
    for field, code in (("phone", "phone_taken"), ("username", "username_taken"), ("id_number", "id_number_taken")):
        resp = await client.post(ACCOUNTS, json=await h.with_code(client, h.registration(**{field: first[field]})))
        assert resp.status == 409
        body = await resp.json()
        assert_error_shape(body, code)
        assert body["error"]["details"] == {"field": field}


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    # Trusting X-Forwarded-For from loopback, each racing client registers from an address of its own.
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_HASHER_MAX_QUEUE="512",
                           EXAMGATE_HASHER_MAX_WAIT_MS="0", EXAMGATE_TRUSTED_PROXIES="127.0.0.1", **h.FAST_ARGON)
    yield process
    assert process.stop() == 0, process.log()


async def test_fifty_racing_registrations_of_one_id_number(gateway: Process, pg: asyncpg.Connection) -> None:
    headers = {"Authorization": f"Bearer {gateway.admin_token()}"}
    id_number = h.resident_id()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50, force_close=True)) as session:
        async with session.post(gateway.url + "/admin/api/v1/loadtest-tokens", json={"ttl_s": 300},
                                headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            token = (await resp.json())["token"]

        reading = asyncio.Lock()

        async def register(index: int) -> tuple[int, dict[str, Any]]:
            body = h.registration(id_number=id_number)
            headers = {"X-Loadtest-Token": token, "X-Forwarded-For": f"198.51.100.{index + 1}"}
            async with session.post(gateway.url + "/api/v1/sms-codes", json={"phone": body["phone"],
                                                                          "purpose": "register"},
                                    headers=headers) as resp:
                assert resp.status == 202, await resp.text()
            async with reading:  # one connection: one query at a time
                body["sms_code"] = await h.code_in_outbox(pg, body["phone"])
            async with session.post(gateway.url + ACCOUNTS, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        replies = await asyncio.gather(*(register(index) for index in range(50)))
    statuses = Counter(status for status, _ in replies)
    assert statuses == {201: 1, 409: 49}, replies
    assert {body["error"]["code"] for status, body in replies if status == 409} == {"id_number_taken"}
