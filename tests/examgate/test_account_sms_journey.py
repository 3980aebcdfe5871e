"""A candidate's account with real SMS: gateway, worker and ``examgate smssim`` running, codes read at the simulator.

Registration with the code the simulator delivered; a wrong, a reused and a brute-forced code; username
recovery; and the same answer (status and body) for a phone, id or name that is not an account's.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis

from core import phone_codes
from loadtest.processes import Process, start_gateway, start_smssim, start_worker
from tests.conftest import TEST_REDIS_URL
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import set_live
from tests.gateway.test_app import assert_error_shape
from tests.payments.conftest import module_database

SECRET = "journey-sms-secret-0123456789"
SMS = {"EXAMGATE_SMS_ACCESS_KEY_SECRET": SECRET, "EXAMGATE_SMS_RETRY_S": "0.05", "EXAMGATE_SMS_TIMEOUT_S": "2"}
CAPTCHA_OFF = {"accounts.create": "off", "sms_codes.create": "off", "username_recoveries.create": "off",
               "sessions.create": "off"}


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Process, Process]]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    with module_database("smsjourney") as dsn:
        smssim = start_smssim("--seed", "7", EXAMGATE_SMS_ACCESS_KEY_SECRET=SECRET)
        # The provider allows one message a number a minute, as the gateway does; its minute made a second long,
        # since the tests skip the gateway's own minute between a registration code and a recovery code.
        request = urllib.request.Request(smssim.url + "/sim/config", method="PUT", data=b'{"minute_s": 1}',
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        worker = start_worker(dsn, TEST_REDIS_URL, EXAMGATE_SMS_URL=smssim.url, **SMS)
        gateway = start_gateway(dsn, TEST_REDIS_URL, workers=2, **h.FAST_ARGON)
        try:
            yield gateway, smssim
        finally:
            for process in (gateway, worker, smssim):
                process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, gateway: Process, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(gateway.url + path, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


def messages_to(smssim: Process, phone: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{smssim.url}/sim/messages?phone={phone}", timeout=10) as resp:
        return list(json.loads(resp.read())["messages"])


async def delivered_code(smssim: Process, phone: str, *, newer_than: int = 0, timeout_s: float = 20) -> str:
    """The newest code the simulator delivered to ``phone`` (after ``newer_than`` messages), waiting for the worker."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = await asyncio.to_thread(messages_to, smssim, phone)
        if len(messages) > newer_than:
            found = re.search(r"验证码为([0-9]{6})", messages[0]["content"])  # the text as the phone shows it
            assert found is not None, messages[0]
            return found[1]
        assert time.monotonic() < deadline, f"no SMS reached {phone} within {timeout_s} s"
        await asyncio.sleep(0.2)


async def test_registration_and_username_recovery_with_codes_from_the_simulator(
        stack: tuple[Process, Process], http: aiohttp.ClientSession) -> None:
    gateway, smssim = stack
    await set_live(gateway, {"captcha": {"routes": CAPTCHA_OFF}})
    body = h.registration()
    phone = body["phone"]
    assert (await call(http, gateway, "/api/v1/sms-codes", {"phone": phone, "purpose": "register"}))[0] == 202
    code = await delivered_code(smssim, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    status, refused = await call(http, gateway, "/api/v1/accounts", {**body, "sms_code": wrong})
    assert status == 400
    assert_error_shape(refused, "code_invalid")
    status, made = await call(http, gateway, "/api/v1/accounts", {**body, "sms_code": code})
    assert status == 201, made
    status, again = await call(http, gateway, "/api/v1/accounts",
                               {**body, "username": body["username"] + "x", "sms_code": code})
    assert (status, again) == (400, refused)  # used

    # Username recovery: the right code; then every mismatch answers exactly like a wrong code.
    with redis.Redis.from_url(TEST_REDIS_URL) as store:  # the gateway's minute between two codes to one phone
        store.delete(phone_codes.sent_key(phone))
    assert (await call(http, gateway, "/api/v1/sms-codes", {"phone": phone, "purpose": "recover_username"}))[0] == 202
    recovery_code = await delivered_code(smssim, phone, newer_than=1)
    who = {"name": body["name"], "id_number": body["id_number"], "phone": phone}
    mismatches = [{**who, "name": "李四", "code": recovery_code},
                  {**who, "id_number": h.resident_id(), "code": recovery_code},
                  {**who, "code": f"{(int(recovery_code) + 7) % 1_000_000:06d}"}]
    answers = [await call(http, gateway, "/api/v1/username-recoveries", m) for m in mismatches]
    assert all(answer == (400, refused) for answer in answers), answers
    status, found = await call(http, gateway, "/api/v1/username-recoveries", {**who, "code": recovery_code})
    assert (status, found) == (200, {"username": body["username"]})


async def test_an_expired_code_is_refused(stack: tuple[Process, Process], http: aiohttp.ClientSession) -> None:
    gateway, smssim = stack
    await set_live(gateway, {"captcha": {"routes": CAPTCHA_OFF}})
    body = h.registration()
    assert (await call(http, gateway, "/api/v1/sms-codes", {"phone": body["phone"], "purpose": "register"}))[0] == 202
    code = await delivered_code(smssim, body["phone"])
    with redis.Redis.from_url(TEST_REDIS_URL) as store:  # its five minutes are over
        assert store.pexpire(phone_codes.code_key(body["phone"], "register"), 1)
    await asyncio.sleep(0.05)
    status, refused = await call(http, gateway, "/api/v1/accounts", {**body, "sms_code": code})
    assert status == 400
    assert_error_shape(refused, "code_invalid")


async def test_a_brute_forced_code_dies_after_five_tries(stack: tuple[Process, Process],
                                                         http: aiohttp.ClientSession) -> None:
    gateway, smssim = stack
    await set_live(gateway, {"captcha": {"routes": CAPTCHA_OFF}})
    body = h.registration()
    assert (await call(http, gateway, "/api/v1/sms-codes", {"phone": body["phone"], "purpose": "register"}))[0] == 202
    code = await delivered_code(smssim, body["phone"])
    guesses = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 6)]
    for guess in guesses:
        assert (await call(http, gateway, "/api/v1/accounts", {**body, "sms_code": guess}))[0] == 400
    status, _ = await call(http, gateway, "/api/v1/accounts", {**body, "sms_code": code})
    assert status == 400  # the right code, after five wrong ones: dead
