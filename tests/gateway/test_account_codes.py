"""SMS codes for accounts, registration with a code, the agreement and its versions, username recovery."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from core import phone_codes
from gateway import keys
from gateway.app import create_app
from tests.factories import make_exam
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape

ACCOUNTS = "/api/v1/accounts"
CODES = "/api/v1/sms-codes"
RECOVER = "/api/v1/username-recoveries"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    made = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    await h.captcha_off(made)
    return made


async def post(client: TestClient, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    resp = await client.post(path, json=body, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def test_a_code_is_needed_single_use_and_limited_in_tries(client: TestClient, pg: asyncpg.Connection) -> None:
    body = h.registration()
    status, reply = await post(client, ACCOUNTS, body)  # no code was ever sent
    assert status == 400
    assert_error_shape(reply, "code_invalid")
    code = body["sms_code"] = await h.sms_code(client, body["phone"])
    # Stored as an HMAC only: the code itself is nowhere in Redis.
    stored = await client.app[keys.REDIS].execute(b"HGETALL", phone_codes.code_key(body["phone"], "register"))
    assert code.encode() not in b"".join(stored)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    status, reply = await post(client, ACCOUNTS, {**body, "sms_code": wrong})
    assert status == 400
    # A taken username (409) keeps the code usable; the full-width digits a phone keyboard types are the same code.
    first = await h.register(client)
    status, reply = await post(client, ACCOUNTS, {**body, "username": first["username"]})
    assert status == 409, reply
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)
    status, reply = await post(client, ACCOUNTS, {**body, "sms_code": full_width})
    assert status == 201, reply
    events = await pg.fetch("SELECT action, details FROM account_events WHERE candidate_id = $1",
                            reply["candidate_id"])
    assert [e["action"] for e in events] == ["create"]
    status, reply = await post(client, ACCOUNTS, {**body, "username": "u" + body["username"][1:] + "x"})
    assert status == 400  # used
    assert_error_shape(reply, "code_invalid")


async def test_a_code_dies_after_five_wrong_tries(client: TestClient) -> None:
    body = h.registration()
    code = await h.sms_code(client, body["phone"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await post(client, ACCOUNTS, {**body, "sms_code": wrong}))[0] == 400
    status, reply = await post(client, ACCOUNTS, {**body, "sms_code": code})  # right, but too late
    assert status == 400, reply


async def test_codes_to_one_phone_are_throttled(client: TestClient) -> None:
    phone = h.phone()
    await h.sms_code(client, phone)
    status, reply = await post(client, CODES, {"phone": phone, "purpose": "register"})
    assert status == 429, reply
    assert reply["error"]["details"]["reason"] == "sms_per_phone"
    status, reply = await post(client, CODES, {"phone": "12345", "purpose": "register"})
    assert status == 422
    status, reply = await post(client, CODES, {"phone": h.phone(), "purpose": "other"})
    assert status == 422


async def test_the_confirmation_and_degrees_are_stored(client: TestClient, pg: asyncpg.Connection) -> None:
    degree = {"cert_no": "1000142012001234", "school": "北京大学", "obtained_on": "2012-07", "major": "经济学",
              "level": "bachelor", "kind": "academic"}
    body = h.registration(degrees=[degree])
    body["confirmation"] = {"name": "张四", "id_number": body["id_number"]}
    status, reply = await post(client, ACCOUNTS, await h.with_code(client, body))
    assert status == 422 and reply["error"]["details"]["fields"] == {"confirmation.name": "mismatch"}
    body["confirmation"]["name"] = " 张三"
    made = await h.register(client, body)
    token = await h.login(client, made["username"])
    resp = await client.get("/api/v1/me", headers=h.bearer(token))
    me = await resp.json()
    assert [(d["cert_no"], d["status"]) for d in me["degrees"]] == [("1000142012001234", "not_checked")]
    assert [e["status"] for e in me["educations"]] == ["not_checked"]
    assert me["agreement"] == {"accepted_version": None, "accepted_at": None, "current_version": None,
                               "required": False}


@pytest.fixture
async def no_agreement(pg: asyncpg.Connection) -> AsyncIterator[None]:
    """The test publishes agreements; the other tests of the database run without one."""
    yield
    await pg.execute("DELETE FROM account_documents")


@pytest.mark.usefixtures("no_agreement")
async def test_a_new_agreement_version_is_accepted_again_before_enrolling(
        client: TestClient, pg: asyncpg.Connection) -> None:
    resp = await client.get("/api/v1/documents/agreement")
    assert resp.status == 404
    admin = h.admin()
    resp = await client.post("/admin/api/v1/documents/agreement", json={"title": "网上报名协议", "text": "第一版"},
                             headers=admin)
    assert resp.status == 201 and (await resp.json())["version"] == 1
    body = h.registration()
    status, reply = await post(client, ACCOUNTS, await h.with_code(client, body))
    assert status == 409, reply  # no version named while one is in force
    assert_error_shape(reply, "agreement_version_changed")
    made = await h.register(client, {**body, "agreement_version": 1})
    token = await h.login(client, made["username"])
    me = await (await client.get("/api/v1/me", headers=h.bearer(token))).json()
    assert me["agreement"]["accepted_version"] == 1 and me["agreement"]["required"] is False

    resp = await client.post("/admin/api/v1/documents/agreement", json={"title": "网上报名协议", "text": "第二版"},
                             headers=admin)
    assert (await resp.json())["version"] == 2
    me = await (await client.get("/api/v1/me", headers=h.bearer(token))).json()
    assert me["agreement"] == {**me["agreement"], "accepted_version": 1, "current_version": 2, "required": True}
    exam_id = await make_exam(pg)
    await client.app[keys.CATALOGUE].refresh()
    enrolment = {"exam_id": exam_id, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin",
                 "subjects": ["101"], "work_years": 5}
    resp = await client.post("/api/v1/registrations", json=enrolment, headers=h.bearer(token))
    refused = await resp.json()
    assert resp.status == 409, refused
    assert_error_shape(refused, "agreement_required")
    assert refused["error"]["details"]["version"] == 2
    resp = await client.post("/api/v1/me/agreement", json={"version": 1}, headers=h.bearer(token))
    assert resp.status == 409
    resp = await client.post("/api/v1/me/agreement", json={"version": 2}, headers=h.bearer(token))
    assert resp.status == 204
    resp = await client.post("/api/v1/registrations", json=enrolment, headers=h.bearer(token))
    assert resp.status == 201, await resp.text()
    assert [e["action"] for e in await pg.fetch(
        "SELECT action FROM account_events WHERE candidate_id = $1 ORDER BY id", made["candidate_id"])] == [
        "create", "accept_agreement"]


async def test_username_recovery_answers_every_mismatch_alike(client: TestClient) -> None:
    made = await h.register(client)
    code = await h.sms_code(client, made["phone"], "recover_username")
    who = {"name": made["name"], "id_number": made["id_number"], "phone": made["phone"]}
    wrong_name = await post(client, RECOVER, {**who, "name": "李四", "code": code})
    assert wrong_name[0] == 400
    assert_error_shape(wrong_name[1], "code_invalid")
    status, reply = await post(client, RECOVER, {**who, "code": code})
    assert (status, reply) == (200, {"username": made["username"]})
    status, reply = await post(client, RECOVER, {**who, "code": code})  # used
    assert (status, reply) == wrong_name

    # A phone without an account gets no code: the answer is the same 202, and the same wrong-code answer after.
    stranger = h.phone()
    status, reply = await post(client, CODES, {"phone": stranger, "purpose": "recover_username"})
    assert status == 202
    assert await client.app[keys.PG].fetchval("SELECT count(*) FROM sms_outbox WHERE phone = $1", stranger) == 0
    status, reply = await post(client, RECOVER, {**who, "phone": stranger, "code": "123456"})
    assert (status, reply) == wrong_name


async def test_unknown_and_known_phones_take_the_same_time(client: TestClient, redis: aioredis.Redis) -> None:
    made = await h.register(client)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(12):
        for kind, phone in (("known", made["phone"]), ("unknown", h.phone())):
            await redis.delete(phone_codes.sent_key(phone))
            started = time.perf_counter()
            status, _ = await post(client, CODES, {"phone": phone, "purpose": "recover_username"})
            timings[kind].append(time.perf_counter() - started)
            assert status == 202
    # Not a timing assertion on the machine's speed: the two medians within a few milliseconds of each other.
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    assert abs(known - unknown) < 0.005 + 0.5 * min(known, unknown), timings
