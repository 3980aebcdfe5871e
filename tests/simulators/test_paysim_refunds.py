"""Refunds through the merchant client against the simulator: the real request and signature formats,
idempotent by refund id, never more than was paid, failures on demand, WeChat Pay's refund notification."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from payments import alipay, wechat
from payments.clients import ProviderClient, RefundOrder
from payments.errors import BadNotification, BadSignature, ProviderRejected
from payments.keys import PaymentKeys
from payments.notice import RefundNotice
from tests.payments.conftest import RunningSim, settings_for, start_app

PROVIDERS = ["alipay", "wechat"]
SUBJECT = "2024年二级建造师考试报名费"
AMOUNT_FEN = 11200


class RefundReceiver:
    """The merchant's refund notify endpoint: verify for real, record, fail the first ``fail_first``."""

    def __init__(self, keys: PaymentKeys, fail_first: int = 0) -> None:
        self.keys = keys
        self.fail_first = fail_first
        self.requests = 0
        self.notices: list[RefundNotice] = []
        self.rejected: list[Exception] = []

    async def refund(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            notice = wechat.parse_refund_notification(request.headers, await request.read(), self.keys)
        except (BadSignature, BadNotification) as exc:
            self.rejected.append(exc)
            return web.json_response({"code": "FAIL", "message": str(exc)}, status=400)
        if self.requests <= self.fail_first:
            return web.json_response({"code": "FAIL", "message": "busy"}, status=500)
        self.notices.append(notice)
        return web.Response(status=204)


@pytest.fixture
async def receiver(keys: PaymentKeys) -> AsyncIterator[tuple[RefundReceiver, str]]:
    got = RefundReceiver(keys, fail_first=1)
    app = web.Application()
    app.add_routes([web.post("/api/v1/payments/wechat/refund-notify", got.refund)])
    runner, url = await start_app(app)
    yield got, url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def paid_trade(client: ProviderClient, session: aiohttp.ClientSession, paysim: RunningSim, provider: str,
                     order_no: str, amount_fen: int = AMOUNT_FEN) -> str:
    """Open and pay a trade (its notification goes nowhere); the provider's trade number."""
    await client.create_trade(provider, order_no, amount_fen, SUBJECT)
    async with session.post(f"{paysim.url}/sim/orders/{order_no}/pay", json={"drop": True}) as resp:
        assert resp.status == 202
        return str((await resp.json())["trade_no"])


def refund_order(provider: str, order_no: str, trade_no: str, refund_id: str, amount_fen: int = AMOUNT_FEN,
                 total_fen: int = AMOUNT_FEN) -> RefundOrder:
    return RefundOrder(provider=provider, refund_id=refund_id, order_no=order_no, trade_no=trade_no,
                       amount_fen=amount_fen, total_fen=total_fen, reason="订单关闭后付款，全额退回")


async def sim_json(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refund_sent_twice_under_one_id_refunds_once(client: ProviderClient, paysim: RunningSim,
                                                             session: aiohttp.ClientSession, provider: str) -> None:
    order_no = f"EG{provider[:2].upper()}REFUND1"
    trade_no = await paid_trade(client, session, paysim, provider, order_no)
    order = refund_order(provider, order_no, trade_no, "RF202606010000000000000001")
    first = await client.refund(order)
    second = await client.refund(order)  # a retry after a lost answer: the same id
    if provider == "alipay":
        assert (first.state, first.reply["fund_change"], second.reply["fund_change"]) == ("succeeded", "Y", "N")
        assert first.reply["refund_fee"] == alipay.fen_to_yuan(AMOUNT_FEN)
    else:
        assert (first.state, first.status) == ("processing", "PROCESSING")
        assert first.provider_refund_no and first.provider_refund_no == second.provider_refund_no
    made = paysim.sim.refunds.get(provider, order.refund_id)
    assert made is not None and (made.requests, made.amount_fen) == (2, AMOUNT_FEN)
    trade = paysim.sim.book.get(order_no)
    assert trade is not None and trade.refunded_fen == AMOUNT_FEN
    await eventually(lambda: made.status == "SUCCESS")
    queried = await client.query_refund(order)
    assert queried is not None and queried.state == "succeeded"
    assert (await client.query(provider, order_no)).status == {  # type: ignore[union-attr]
        "alipay": "TRADE_CLOSED", "wechat": "REFUND"}[provider]
    # Another refund id cannot take more than was paid.
    with pytest.raises(ProviderRejected) as caught:
        await client.refund(refund_order(provider, order_no, trade_no, "RF202606010000000000000002", amount_fen=1))
    assert caught.value.code == {"alipay": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "wechat": "INVALID_REQUEST"}[provider]
    # The same id with another amount is refused too.
    with pytest.raises(ProviderRejected):
        await client.refund(refund_order(provider, order_no, trade_no, order.refund_id, amount_fen=AMOUNT_FEN - 1))
    assert len(paysim.sim.refunds) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refunds_of_unpaid_or_unknown_trades_are_refused(client: ProviderClient, paysim: RunningSim,
                                                               provider: str) -> None:
    order_no = f"EG{provider[:2].upper()}UNPAID"
    await client.create_trade(provider, order_no, AMOUNT_FEN, SUBJECT)
    with pytest.raises(ProviderRejected) as unknown:
        await client.refund(refund_order(provider, order_no, "4200000000000000", "RF202606010000000000000003"))
    assert unknown.value.code in {"ACQ.TRADE_NOT_EXIST", "RESOURCE_NOT_EXISTS"}
    assert await client.query_refund(refund_order(provider, order_no, "4200", "RF202606010000000000000003")) is None
    assert len(paysim.sim.refunds) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_next_refunds_fail_when_asked_then_succeed(client: ProviderClient, paysim: RunningSim,
                                                             session: aiohttp.ClientSession, provider: str) -> None:
    order_no = f"EG{provider[:2].upper()}FAILING"
    trade_no = await paid_trade(client, session, paysim, provider, order_no)
    assert await sim_json(session, "POST", f"{paysim.url}/sim/refunds/fail", {"count": 2}) == (200, {"fail_next": 2})
    order = refund_order(provider, order_no, trade_no, "RF202606010000000000000004")
    for _ in range(2):
        with pytest.raises(ProviderRejected) as caught:
            await client.refund(order)
        assert caught.value.code == {"alipay": "ACQ.SELLER_BALANCE_NOT_ENOUGH", "wechat": "NOT_ENOUGH"}[provider]
    assert await client.query_refund(order) is None  # nothing was refunded
    answer = await client.refund(order)
    assert answer.state in {"succeeded", "processing"}
    status, listed = await sim_json(session, "GET", f"{paysim.url}/sim/refunds")
    assert status == 200
    assert (listed["requests"], listed["refused"], listed["fail_next"]) == (3, 2, 0)
    assert [r["refund_no"] for r in listed["refunds"]] == [order.refund_id]
    assert (await sim_json(session, "POST", f"{paysim.url}/sim/refunds/fail", {"count": -1}))[0] == 422
    assert (await sim_json(session, "POST", f"{paysim.url}/sim/refunds/fail", {"times": 1}))[0] == 422


async def test_a_wechat_refund_is_notified_signed_and_encrypted_and_can_be_notified_again(
        paysim: RunningSim, keys: PaymentKeys, session: aiohttp.ClientSession,
        receiver: tuple[RefundReceiver, str]) -> None:
    got, public_url = receiver
    async with ProviderClient(settings_for(paysim.url, public_url), keys, timeout_s=5) as client:
        trade_no = await paid_trade(client, session, paysim, "wechat", "EGWXNOTIFY")
        order = refund_order("wechat", "EGWXNOTIFY", trade_no, "RF202606010000000000000005")
        answer = await client.refund(order)
    assert answer.state == "processing"
    await eventually(lambda: len(got.notices) == 1)  # after one refused delivery, resent on WeChat's schedule
    (notice,) = got.notices
    assert (notice.refund_no, notice.order_no, notice.trade_no, notice.amount_fen, notice.total_fen) == (
        order.refund_id, "EGWXNOTIFY", trade_no, AMOUNT_FEN, AMOUNT_FEN)
    assert (notice.event_type, notice.status, notice.succeeded, notice.merchant_id) == (
        "REFUND.SUCCESS", "SUCCESS", True, "1900000001")
    assert notice.provider_refund_no == answer.provider_refund_no
    assert got.requests == 2 and not got.rejected

    status, again = await sim_json(session, "POST", f"{paysim.url}/sim/refunds/{order.refund_id}/notify", {})
    assert (status, again["notifications"], again["event_id"]) == (202, 1, notice.event_id)
    await eventually(lambda: len(got.notices) == 2)
    assert got.notices[1].event_id == notice.event_id  # the same event: the merchant records it once
    status, shown = await sim_json(session, "GET", f"{paysim.url}/sim/refunds/{order.refund_id}")
    assert (status, shown["notifications"]) == (200, {"copies": 2, "acknowledged": 2})
    assert (await sim_json(session, "POST", f"{paysim.url}/sim/refunds/RF-unknown/notify", {}))[0] == 404


async def test_the_refund_apis_are_served_on_the_real_paths(paysim: RunningSim, keys: PaymentKeys,
                                                            session: aiohttp.ClientSession) -> None:
    form = alipay.build_request("alipay.trade.fastpay.refund.query", {"out_trade_no": "EG-NONE", "out_request_no": "x"},
                                app_id="2021000000000001", private_key=keys.alipay_app_private)
    async with session.post(f"{paysim.url}/gateway.do", data=form) as resp:
        reply = alipay.read_response(await resp.text(), "alipay.trade.fastpay.refund.query",
                                     keys.alipay_platform_public)
    assert reply["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    path = "/v3/refund/domestic/refunds/RF-none"
    auth = wechat.authorization("GET", path, b"", mch_id="1900000001", serial=keys.wechat_merchant_serial,
                                private_key=keys.wechat_merchant_private)
    async with session.get(f"{paysim.url}{path}", headers={"Authorization": auth}) as resp:
        body = await resp.read()
        wechat.verify_headers(resp.headers, body, keys.wechat_platform_public, keys.wechat_platform_serial)
        assert resp.status == 404
    async with session.post(f"{paysim.url}/v3/refund/domestic/refunds", data=b"{}") as resp:
        assert resp.status == 401  # not signed by the merchant
