"""Password recovery over HTTP, end to end: by security question and by SMS code; unknown pairs look alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from core import recovery, sms
from gateway import keys
from gateway.app import create_app
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape

QUESTION = "/api/v1/password-resets/question"
SMS = "/api/v1/password-resets/sms"
CONFIRM = "/api/v1/password-resets/sms/confirm"
NEW_PASSWORD = "New#Pass2026"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    test_client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    await h.captcha_off(test_client)
    return test_client


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert_error_shape(body, code)
    return body


async def test_question_flow_end_to_end(client: TestClient) -> None:
    account = await h.register(client)
    old_session = await h.login(client, account["username"])

    resp = await client.post(QUESTION, json={"name": " 张三 ", "id_number": account["id_number"].lower()})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    started = await resp.json()
    assert set(started) == {"reset_id", "question"} and started["question"] == account["security_question"]
    finish = f"{QUESTION}/{started['reset_id']}"

    await assert_error(await client.post(finish, json={"answer": "别的小学", "new_password": NEW_PASSWORD}),
                       400, "reset_invalid")
    weak = await assert_error(await client.post(finish, json={"answer": "  实验小学 ", "new_password": "weak"}),
                              422, "validation_failed")
    assert weak["error"]["details"]["fields"] == {"new_password": "too_short"}
    done = await client.post(finish, json={"answer": "实验小学", "new_password": NEW_PASSWORD})
    assert done.status == 204

    assert (await client.get("/api/v1/me", headers=h.bearer(old_session))).status == 401  # every session ended
    await assert_error(await client.post("/api/v1/sessions", json={"username": account["username"],
                                                                    "password": h.PASSWORD}),
                       401, "invalid_credentials")
    await h.login(client, account["username"], NEW_PASSWORD)
    await assert_error(await client.post(finish, json={"answer": "实验小学", "new_password": "Other#Pass2026"}),
                       400, "reset_invalid")  # used up


def decoy_question(client: TestClient, id_number: str) -> str:
    return recovery.decoy_question(client.app[keys.RECOVERY_KEY], id_number)


async def test_the_question_is_the_id_numbers_and_only_the_right_name_finishes(client: TestClient) -> None:
    account = await h.register(client)
    await h.set_live(client, {"ratelimit": {"rules": []}})  # more tries than recovery-ip allows
    # A wrong name gets the account's own question (nothing tells it apart); an unknown id a decoy.
    for name, id_number, question in (("李四", account["id_number"], account["security_question"]),
                                      ("张三", h.resident_id(), None)):
        resp = await client.post(QUESTION, json={"name": name, "id_number": id_number})
        assert resp.status == 200
        started = await resp.json()
        assert set(started) == {"reset_id", "question"}
        assert started["question"] == (question or decoy_question(client, id_number))
        again = await (await client.post(QUESTION, json={"name": name, "id_number": id_number})).json()
        assert again["question"] == started["question"] and again["reset_id"] != started["reset_id"]
        # Even the right answer fails, as a wrong one does, until the reset is spent.
        finish = f"{QUESTION}/{started['reset_id']}"
        for _ in range(recovery.DEFAULT_SETTINGS.reset_attempts - 1):
            await assert_error(await client.post(finish, json={"answer": "实验小学", "new_password": NEW_PASSWORD}),
                               400, "reset_invalid")
        await assert_error(await client.post(finish, json={"answer": "实验小学", "new_password": NEW_PASSWORD}),
                           400, "reset_attempts_exhausted")
    await h.login(client, account["username"])  # the password did not change
    await assert_error(await client.post(f"{QUESTION}/not-a-reset-id", json={"answer": "a", "new_password": "b"}),
                       400, "reset_invalid")


async def test_sms_flow_end_to_end(client: TestClient, pg: asyncpg.Connection) -> None:
    account = await h.register(client)
    old_session = await h.login(client, account["username"])
    phone = account["phone"]

    resp = await client.post(SMS, json={"name": "张三", "id_number": account["id_number"], "phone": phone})
    assert resp.status == 202
    assert await resp.json() == {"expires_in": recovery.DEFAULT_SETTINGS.code_ttl_s}
    [message] = [m for m in await sms.outbox(pg, phone=phone) if m.template == recovery.SMS_TEMPLATE]
    code = message.body.split("验证码为")[1][:6]
    assert code.isdigit()

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    await assert_error(await client.post(CONFIRM, json={"phone": phone, "code": wrong, "new_password": NEW_PASSWORD}),
                       400, "code_invalid")
    weak = await assert_error(await client.post(CONFIRM, json={"phone": phone, "code": code,
                                                               "new_password": account["username"] + "A1!"}),
                              422, "validation_failed")
    assert weak["error"]["details"]["fields"] == {"new_password": "contains_username"}
    done = await client.post(CONFIRM, json={"phone": phone, "code": code, "new_password": NEW_PASSWORD})
    assert done.status == 204
    assert (await client.get("/api/v1/me", headers=h.bearer(old_session))).status == 401
    await h.login(client, account["username"], NEW_PASSWORD)
    await assert_error(await client.post(CONFIRM, json={"phone": phone, "code": code, "new_password": "X#y12345"}),
                       400, "code_invalid")

    # A second code to the same phone right away is throttled, whoever asks.
    throttled = await client.post(SMS, json={"name": "张三", "id_number": account["id_number"], "phone": phone})
    await assert_error(throttled, 429, "too_many_requests")
    assert int(throttled.headers["Retry-After"]) >= 1


async def test_sms_for_unknown_pairs_answers_alike_and_sends_nothing(
    client: TestClient, pg: asyncpg.Connection
) -> None:
    account = await h.register(client)
    other_phone = h.phone()
    resp = await client.post(SMS, json={"name": "张三", "id_number": account["id_number"], "phone": other_phone})
    assert resp.status == 202
    assert await resp.json() == {"expires_in": recovery.DEFAULT_SETTINGS.code_ttl_s}
    assert await sms.outbox(pg, phone=other_phone) == []
    again = await client.post(SMS, json={"name": "张三", "id_number": account["id_number"], "phone": other_phone})
    assert again.status == 429 and int(again.headers["Retry-After"]) >= 1
    body = await again.json()
    assert_error_shape(body, "too_many_requests")
    assert body["error"]["details"]["retry_after_s"] >= 1


@pytest.mark.parametrize(("path", "body", "fields"), [
    (QUESTION, {"name": "张三"}, {"id_number": "required"}),
    (QUESTION, {"name": 3, "id_number": "x" * 40}, {"name": "must_be_string", "id_number": "too_long"}),
    (QUESTION, {"name": None, "id_number": " \t"}, {"name": "required", "id_number": "required"}),
    (SMS, {"name": "张三", "id_number": "x", "phone": ["13912345678"]}, {"phone": "must_be_string"}),
    (SMS, {"name": "张三", "id_number": "110101199003078031", "phone": "12345"}, {"phone": "invalid_format"}),
    (CONFIRM, {"phone": "13912345678", "code": "123456"}, {"new_password": "required"}),
    (CONFIRM, {"phone": "13912345678", "code": "123456", "new_password": "A#a12345", "extra": 1},
     {"extra": "unknown_field"}),
    (f"{QUESTION}/abc", {"answer": ""}, {"answer": "required", "new_password": "required"}),
])
async def test_bad_bodies_are_listed(client: TestClient, path: str, body: dict[str, Any],
                                     fields: dict[str, str]) -> None:
    payload = await assert_error(await client.post(path, json=body), 422, "validation_failed")
    assert payload["error"]["details"]["fields"] == fields


async def test_recovery_starts_follow_the_live_captcha_and_id_number_throttle(client: TestClient) -> None:
    account = await h.register(client)
    body = {"name": "张三", "id_number": account["id_number"]}
    await h.set_live(client, {"captcha": {"routes": {"password_resets.question.start": "pow"}}})
    await assert_error(await client.post(QUESTION, json=body), 400, "captcha_invalid")

    await h.set_live(client, {
        "captcha": {"routes": {"password_resets.question.start": "off"}},
        "ratelimit": {"rules": [{"id": "reset-id-number", "routes": ["password_resets.*"], "key": "id_number",
                                 "rate": 2, "period_s": 600, "burst": 2, "mode": "enforce",
                                 "on_redis_error": "open"}]},
    })
    for _ in range(2):
        assert (await client.post(QUESTION, json=body)).status == 200
    refused = await assert_error(await client.post(QUESTION, json=body), 429, "too_many_requests")
    assert refused["error"]["details"]["rules"] == ["reset-id-number"]
    # Another id number is not held back by this one.
    assert (await client.post(QUESTION, json={"name": "张三", "id_number": h.resident_id()})).status == 200
