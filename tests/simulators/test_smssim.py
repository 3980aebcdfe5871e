"""The SMS simulator speaks Alibaba Cloud SMS as the provider does: signatures, templates, throttling, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from core import sms
from core.timeutil import SHANGHAI, utcnow
from messaging.aliyun import AliyunSms, ProviderSettings, signed
from messaging.sender import Accepted, Outgoing, Permanent, Retryable
from simulators.smssim import SimConfig, SmsSimulator, build_app
from tests.payments.conftest import start_app

KEY_ID, SECRET, SIGN = "LTAItest", "test-secret-0123456789", "考试报名"
PHONE = "13912345678"
CODE = sms.TEMPLATES["password_reset_code"].code


class Running:
    """A simulator served on a free port: its URL and its state."""

    def __init__(self, url: str, sim: SmsSimulator) -> None:
        self.url, self.sim = url, sim

    def client(self, secret: str = SECRET, key_id: str = KEY_ID, timeout_s: float = 5.0) -> AliyunSms:
        return AliyunSms(ProviderSettings(self.url, key_id, secret, SIGN, timeout_s))

    async def get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(self.url + path, params=params) as resp:
            return resp.status, await resp.json()

    async def put_config(self, **changes: object) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.put(self.url + "/sim/config", json=changes) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def smssim() -> AsyncIterator[Running]:
    """The simulator, no limits or failures unless a test sets them."""
    sim = SmsSimulator(access_key_id=KEY_ID, access_key_secret=SECRET, sign_name=SIGN, seed=7,
                       config=SimConfig(phone_per_minute=0))
    runner, url = await start_app(build_app(sim))
    try:
        yield Running(url, sim)
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(smssim: Running) -> AsyncIterator[AliyunSms]:
    sender = smssim.client()
    try:
        yield sender
    finally:
        await sender.aclose()


def message(code: str = "123456", phone: str = PHONE, out_id: str = "out-0001", template: str = CODE) -> Outgoing:
    return Outgoing(phone, template, {"code": code, "minutes": "5"}, out_id)


async def test_a_message_is_delivered_and_listed_newest_first(smssim: Running, client: AliyunSms) -> None:
    first = await client.send(message("111111", out_id="out-0001"))
    second = await client.send(message("222222", out_id="out-0002"))
    await client.send(message("333333", phone="13900000000", out_id="out-0003"))
    assert isinstance(first, Accepted) and isinstance(second, Accepted) and first.biz_id != second.biz_id
    assert first.biz_id.endswith("^0") and first.request_id

    status, listed = await smssim.get("/sim/messages", phone=PHONE)
    assert status == 200
    newest, oldest = listed["messages"]
    assert newest["content"] == "【考试报名】您的验证码为222222，5分钟内有效。如非本人操作，请忽略。"
    assert (newest["phone"], newest["out_id"], newest["biz_id"], newest["template_code"]) == (
        PHONE, "out-0002", second.biz_id, CODE)
    assert newest["params"] == {"code": "222222", "minutes": "5"} and newest["sent_at"].endswith("+08:00")
    assert oldest["out_id"] == "out-0001"
    assert len((await smssim.get("/sim/messages"))[1]["messages"]) == 3
    assert (await smssim.get("/sim/messages", phone="13700000000"))[1] == {"messages": []}
    assert (await smssim.get("/sim/messages", phone="12"))[0] == 422
    stats = (await smssim.get("/sim/stats"))[1]
    assert (stats["accepted"], stats["delivered"], stats["duplicates"], stats["refused"]) == (3, 3, 0, 0)


async def test_a_wrong_secret_or_key_is_refused(smssim: Running) -> None:
    for sender, code in ((smssim.client(secret="not-the-secret-at-all"), "SignatureDoesNotMatch"),
                         (smssim.client(key_id="LTAIother"), "InvalidAccessKeyId.NotFound")):
        try:
            result = await sender.send(message())
        finally:
            await sender.aclose()
        assert isinstance(result, Permanent) and result.code == code
    assert smssim.sim.delivered == [] and smssim.sim.stats()["refused"] == 2


async def raw_call(url: str, method: str, params: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        if method == "GET":
            async with session.get(url + "/", params=params) as resp:
                return resp.status, await resp.json()
        async with session.post(url + "/", data=params) as resp:
            return resp.status, await resp.json()


async def test_signatures_nonces_and_timestamps_are_checked_as_the_provider_does(smssim: Running) -> None:
    send = {"PhoneNumbers": PHONE, "SignName": SIGN, "TemplateCode": CODE,
            "TemplateParam": '{"code":"123456","minutes":"5"}', "OutId": "o-1"}
    by_get = signed("SendSms", send, access_key_id=KEY_ID, secret=SECRET, method="GET")
    assert (await raw_call(smssim.url, "GET", by_get))[1]["Code"] == "OK"  # GET signs GET
    status, again = await raw_call(smssim.url, "GET", by_get)
    assert (status, again["Code"]) == (400, "SignatureNonceUsed")
    signed_as_get = signed("SendSms", send, access_key_id=KEY_ID, secret=SECRET, method="GET")
    status, wrong_method = await raw_call(smssim.url, "POST", signed_as_get)
    assert (status, wrong_method["Code"]) == (400, "SignatureDoesNotMatch") and "POST&%2F&" in wrong_method["Message"]
    tampered = {**signed("SendSms", send, access_key_id=KEY_ID, secret=SECRET), "PhoneNumbers": "13900000000"}
    assert (await raw_call(smssim.url, "POST", tampered))[1]["Code"] == "SignatureDoesNotMatch"
    stale = signed("SendSms", send, access_key_id=KEY_ID, secret=SECRET, moment=utcnow() - timedelta(minutes=16))
    assert (await raw_call(smssim.url, "POST", stale))[1]["Code"] == "InvalidTimeStamp.Expired"
    unsigned = {k: v for k, v in signed("SendSms", send, access_key_id=KEY_ID, secret=SECRET).items()
                if k != "Signature"}
    assert (await raw_call(smssim.url, "POST", unsigned))[1]["Code"] == "MissingSignature"
    unknown = signed("SendMessages", send, access_key_id=KEY_ID, secret=SECRET)
    status, body = await raw_call(smssim.url, "POST", unknown)
    assert (status, body["Code"], body["HostId"]) == (404, "InvalidAction.NotFound", "dysmsapi.aliyuncs.com")
    assert len(smssim.sim.delivered) == 1


@pytest.mark.parametrize(("outgoing", "code"), [
    (message(template="SMS_000000000"), "isv.SMS_TEMPLATE_ILLEGAL"),
    (Outgoing(PHONE, CODE, {"code": "123456"}, "o"), "isv.TEMPLATE_MISSING_PARAMETERS"),
    (Outgoing(PHONE, CODE, {"code": "1" * 40, "minutes": "5"}, "o"), "isv.PARAM_LENGTH_LIMIT"),
    (message(phone="12345"), "isv.MOBILE_NUMBER_ILLEGAL"),
    (message(phone="13000000000"), "isv.BLACK_KEY_CONTROL_LIMIT"),
])
async def test_messages_the_provider_refuses_are_permanent_errors(smssim: Running, client: AliyunSms,
                                                                  outgoing: Outgoing, code: str) -> None:
    smssim.sim.config.blacklist = ["13000000000"]
    result = await client.send(outgoing)
    assert isinstance(result, Permanent) and result.code == code
    assert smssim.sim.delivered == []


async def test_a_wrong_sign_name_is_refused(smssim: Running) -> None:
    sender = AliyunSms(ProviderSettings(smssim.url, KEY_ID, SECRET, "别的签名"))
    try:
        result = await sender.send(message())
    finally:
        await sender.aclose()
    assert isinstance(result, Permanent) and result.code == "isv.SMS_SIGNATURE_ILLEGAL"


async def test_throttling_per_phone_and_for_the_account(smssim: Running, client: AliyunSms) -> None:
    assert (await smssim.put_config(phone_per_minute=1, minute_s=0.3))[0] == 200
    assert isinstance(await client.send(message(out_id="a")), Accepted)
    throttled = await client.send(message(out_id="b"))
    assert throttled == Retryable("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1", throttle="phone")
    assert isinstance(await client.send(message(phone="13900000001", out_id="c")), Accepted)  # another number
    await asyncio.sleep(0.35)  # the simulator's minute has passed
    assert isinstance(await client.send(message(out_id="b")), Accepted)

    await smssim.put_config(phone_per_minute=0, rate_per_s=5)
    results = await asyncio.gather(*(client.send(message(phone=f"1370000{i:04d}", out_id=f"r{i}"))
                                     for i in range(20)))
    accepted = [r for r in results if isinstance(r, Accepted)]
    throttled_all = [r for r in results if isinstance(r, Retryable)]
    assert 4 <= len(accepted) <= 6 and all(r.throttle == "account" for r in throttled_all)
    assert smssim.sim.stats()["throttled_account"] == len(throttled_all)


async def test_failures_lost_answers_and_timeouts(smssim: Running, client: AliyunSms) -> None:
    await smssim.put_config(failure_ratio=1.0)
    failed = [await client.send(message(out_id=f"f{i}")) for i in range(6)]
    assert all(isinstance(r, Retryable) and not r.ambiguous and r.throttle is None for r in failed)
    assert {r.code for r in failed if isinstance(r, Retryable)} <= {"isp.SYSTEM_ERROR", "ServiceUnavailable"}
    assert smssim.sim.delivered == []

    await smssim.put_config(failure_ratio=0.0, lost_ratio=1.0)
    lost = await client.send(message(out_id="lost-1"))
    assert isinstance(lost, Retryable) and lost.ambiguous and lost.code == "HTTP504"
    assert [m.out_id for m in smssim.sim.delivered] == ["lost-1"]  # delivered all the same
    today = [utcnow().astimezone(SHANGHAI).date()]
    assert await client.find(PHONE, "lost-1", today) is True
    assert await client.find(PHONE, "never-sent", today) is False
    await smssim.put_config(lost_ratio=0.0)
    assert isinstance(await client.send(message(out_id="lost-1")), Accepted)  # the provider has no idempotency
    assert smssim.sim.stats()["duplicates"] == 1

    await smssim.put_config(latency_min_ms=300, latency_max_ms=300)
    slow = smssim.client(timeout_s=0.1)
    try:
        timed_out = await slow.send(message(out_id="slow-1"))
    finally:
        await slow.aclose()
    assert isinstance(timed_out, Retryable) and timed_out.ambiguous and timed_out.code == "timeout"
    await asyncio.sleep(0.3)
    assert smssim.sim.delivered[-1].out_id == "slow-1"  # the provider finished it after we gave up


async def test_a_look_up_pages_through_the_days_messages(smssim: Running, client: AliyunSms) -> None:
    for i in range(60):
        assert isinstance(await client.send(message(out_id=f"p{i:02d}")), Accepted)
    today = utcnow().astimezone(SHANGHAI).date()
    assert await client.find(PHONE, "p00", [today]) is True  # the oldest: on the second page
    assert smssim.sim.stats()["queries"] == 2
    assert await client.find(PHONE, "p00", [today - timedelta(days=1)]) is False
    await smssim.put_config(failure_ratio=1.0)
    failed = await client.find(PHONE, "p00", [today])
    assert isinstance(failed, Retryable) and not failed.ambiguous


async def test_settings_are_checked(smssim: Running) -> None:
    status, body = await smssim.put_config(failure_ratio=2, phone_per_minute=1.5, colour="red", blacklist=["1"])
    assert status == 422 and body["error"]["details"]["fields"] == {
        "failure_ratio": "out_of_range_0_1", "phone_per_minute": "not_an_integer", "colour": "unknown_field",
        "blacklist": "not_a_list_of_mobile_numbers"}
    status, body = await smssim.put_config(latency_max_ms=20, blacklist=["13000000000"])
    assert status == 200 and body["latency_max_ms"] == 20 and body["blacklist"] == ["13000000000"]
    assert (await smssim.get("/sim/config"))[1] == body
