"""The merchant client against the simulator over real sockets: trades, pages, notifications and their retries."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loadtest.processes import free_port, start_paysim
from payments import alipay, wechat
from payments.clients import ProviderClient, Trade
from payments.errors import (
    BadNotification,
    BadSignature,
    ProviderRejected,
    ProviderUnavailable,
    TradeAlreadyPaid,
    TradeClosed,
)
from payments.keys import PaymentKeys
from payments.notice import Notice
from simulators.paysim import build_app
from simulators.paysim_delivery import RETRY_SCHEDULES_S
from tests.payments.conftest import TIME_SCALE, RunningSim, settings_for, start_app

PROVIDERS = ["alipay", "wechat"]
SUBJECT = "2024年二级建造师考试报名费"


class Receiver:
    """The merchant's notify endpoints: verify for real, record, fail the first ``fail_first`` requests."""

    def __init__(self, keys: PaymentKeys, fail_first: int = 0) -> None:
        self.keys = keys
        self.fail_first = fail_first
        self.requests = 0
        self.notices: list[Notice] = []
        self.rejected: list[Exception] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/api/v1/payments/notify/alipay", self.alipay),
                        web.post("/api/v1/payments/notify/wechat", self.wechat)])
        return app

    def _failing(self) -> bool:
        self.requests += 1
        return self.requests <= self.fail_first

    async def alipay(self, request: web.Request) -> web.Response:
        try:
            notice = alipay.parse_notification(await request.post(), self.keys)  # type: ignore[arg-type]
        except (BadSignature, BadNotification) as exc:
            self.rejected.append(exc)
            return web.Response(text="fail")
        if self._failing():
            return web.Response(text="fail")
        self.notices.append(notice)
        return web.Response(text=alipay.REPLY_OK)

    async def wechat(self, request: web.Request) -> web.Response:
        try:
            notice = wechat.parse_notification(request.headers, await request.read(), self.keys)
        except (BadSignature, BadNotification) as exc:
            self.rejected.append(exc)
            return web.json_response({"code": "FAIL", "message": str(exc)}, status=400)
        if self._failing():
            return web.json_response({"code": "FAIL", "message": "busy"}, status=500)
        self.notices.append(notice)
        return web.Response(status=204)


@pytest.fixture
async def receiver_factory(keys: PaymentKeys) -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def make(fail_first: int = 0) -> tuple[Receiver, str]:
        receiver = Receiver(keys, fail_first)
        runner, url = await start_app(receiver.app())
        runners.append(runner)
        return receiver, url

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def merchant(paysim: RunningSim, keys: PaymentKeys, public_url: str) -> ProviderClient:
    return ProviderClient(settings_for(paysim.url, public_url), keys, timeout_s=5)


async def sim_pay(session: aiohttp.ClientSession, paysim: RunningSim, order_no: str, **options: Any) -> tuple[int, Any]:
    async with session.post(f"{paysim.url}/sim/orders/{order_no}/pay", json=options) as resp:
        return resp.status, await resp.json()


async def sim_order(session: aiohttp.ClientSession, paysim: RunningSim, order_no: str) -> dict[str, Any]:
    async with session.get(f"{paysim.url}/sim/orders/{order_no}") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def order_no(provider: str, suffix: str) -> str:
    return f"EG{provider[:2].upper()}{suffix}"


# --- trades -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
async def test_create_is_idempotent_and_query_shows_the_open_trade(client: ProviderClient, paysim: RunningSim,
                                                                   provider: str) -> None:
    number = order_no(provider, "0001")
    pay_url = await client.create_trade(provider, number, 12345, SUBJECT)
    assert pay_url == f"{paysim.url}/pay/{number}"
    assert await client.create_trade(provider, number, 12345, SUBJECT) == pay_url
    trade = await client.query(provider, number)
    status = {"alipay": "WAIT_BUYER_PAY", "wechat": "NOTPAY"}[provider]
    assert trade == Trade(order_no=number, trade_no=None, amount_fen=12345,
                          app_id={"alipay": "2021000000000001", "wechat": "wx00000000000000e1"}[provider],
                          merchant_id=paysim.sim.book.get(number).merchant_id,  # type: ignore[union-attr]
                          status=status, paid=False, closed=False)
    assert paysim.sim.book.get(number).notify_url == (  # type: ignore[union-attr]
        f"http://127.0.0.1:9/api/v1/payments/notify/{provider}")
    with pytest.raises(ProviderRejected) as caught:
        await client.create_trade(provider, number, 100, SUBJECT)  # same order, another amount
    assert caught.value.code in {"ACQ.CONTEXT_INCONSISTENT", "INVALID_REQUEST"}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_query_of_an_unknown_trade_is_none_and_closing_it_is_harmless(client: ProviderClient,
                                                                           provider: str) -> None:
    assert await client.query(provider, "EG-NEVER-SEEN") is None
    await client.close(provider, "EG-NEVER-SEEN")


async def test_a_trade_of_one_provider_is_unknown_to_the_other(client: ProviderClient) -> None:
    await client.create_trade("alipay", "EG-CROSS", 100, SUBJECT)
    assert await client.query("wechat", "EG-CROSS") is None
    with pytest.raises(ProviderRejected, match="INVALID_REQUEST"):
        await client.create_trade("wechat", "EG-CROSS", 100, SUBJECT)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_bad_merchant_signature_is_rejected(paysim: RunningSim, keys: PaymentKeys, provider: str) -> None:
    # Our requests signed with a key the provider does not have on file for us.
    forged = dataclasses.replace(keys, alipay_app_private=keys.alipay_platform_private,
                                 wechat_merchant_private=keys.wechat_platform_private)
    async with ProviderClient(settings_for(paysim.url), forged) as bad_client:
        with pytest.raises(ProviderRejected) as caught:
            await bad_client.create_trade(provider, order_no(provider, "FORGED"), 100, SUBJECT)
    assert caught.value.code == {"alipay": "isv.invalid-signature", "wechat": "SIGN_ERROR"}[provider]
    assert len(paysim.sim.book) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_not_signed_by_the_platform_is_not_believed(paysim: RunningSim, keys: PaymentKeys,
                                                                  provider: str) -> None:
    wrong_platform = dataclasses.replace(keys, alipay_platform_public=keys.alipay_app_public,
                                         wechat_platform_public=keys.wechat_merchant_public)
    async with ProviderClient(settings_for(paysim.url), wrong_platform) as doubting_client:
        with pytest.raises(ProviderUnavailable, match="signature"):
            await doubting_client.query(provider, "EG-ANY")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unreachable_provider_is_unavailable(keys: PaymentKeys, provider: str) -> None:
    async with ProviderClient(settings_for(f"http://127.0.0.1:{free_port()}"), keys, timeout_s=2) as lost_client:
        with pytest.raises(ProviderUnavailable):
            await lost_client.create_trade(provider, "EG-1", 100, SUBJECT)


async def test_a_failing_provider_is_unavailable(keys: PaymentKeys) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    runner, url = await start_app(app)
    try:
        async with ProviderClient(settings_for(url), keys) as provider_client:
            for provider in PROVIDERS:
                with pytest.raises(ProviderUnavailable, match="HTTP 502"):
                    await provider_client.query(provider, "EG-1")
    finally:
        await runner.cleanup()


# --- paying and notifications ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "fail_first"), [("alipay", 2), ("wechat", 3)])
async def test_notifications_are_retried_on_schedule_until_acknowledged(
        paysim: RunningSim, keys: PaymentKeys, session: aiohttp.ClientSession, receiver_factory: Any,
        provider: str, fail_first: int) -> None:
    receiver, public_url = await receiver_factory(fail_first)
    number = order_no(provider, "RETRY")
    async with await merchant(paysim, keys, public_url) as provider_client:
        await provider_client.create_trade(provider, number, 9900, SUBJECT)
        started = time.monotonic()
        status, answer = await sim_pay(session, paysim, number)
        assert status == 202 and answer["notifications"] == 1 and answer["order_no"] == number
        await eventually(lambda: len(receiver.notices) == 1)
        elapsed_s = time.monotonic() - started
        trade = await provider_client.query(provider, number)
    assert elapsed_s >= sum(RETRY_SCHEDULES_S[provider][:fail_first]) * TIME_SCALE * 0.9
    assert receiver.requests == fail_first + 1 and not receiver.rejected
    notice = receiver.notices[0]
    assert (notice.order_no, notice.amount_fen, notice.paid, notice.trade_no) == (
        number, 9900, True, answer["trade_no"])
    assert trade is not None and trade.paid and trade.trade_no == answer["trade_no"]
    state = await sim_order(session, paysim, number)
    assert state["deliveries"][0]["attempts"] == fail_first + 1 and state["deliveries"][0]["acknowledged"]
    assert state["notifications"]["last_status"] == {"alipay": 200, "wechat": 204}[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_duplicates_carry_the_same_event(paysim: RunningSim, keys: PaymentKeys, session: aiohttp.ClientSession,
                                               receiver_factory: Any, provider: str) -> None:
    receiver, public_url = await receiver_factory()
    number = order_no(provider, "DUP")
    async with await merchant(paysim, keys, public_url) as provider_client:
        await provider_client.create_trade(provider, number, 500, SUBJECT)
    status, answer = await sim_pay(session, paysim, number, duplicates=2)
    assert status == 202 and answer["notifications"] == 3
    await eventually(lambda: len(receiver.notices) == 3)
    assert len({n.event_id for n in receiver.notices}) == 1
    assert {n.trade_no for n in receiver.notices} == {answer["trade_no"]}
    # Paying again (a provider resending later) keeps the trade number and the event.
    status, again = await sim_pay(session, paysim, number)
    assert status == 202 and again["trade_no"] == answer["trade_no"]
    await eventually(lambda: len(receiver.notices) == 4)
    assert len({n.event_id for n in receiver.notices}) == 1


async def test_delay_holds_the_notification_back(paysim: RunningSim, keys: PaymentKeys,
                                                 session: aiohttp.ClientSession, receiver_factory: Any) -> None:
    receiver, public_url = await receiver_factory()
    async with await merchant(paysim, keys, public_url) as provider_client:
        await provider_client.create_trade("wechat", "EG-DELAY", 100, SUBJECT)
        await sim_pay(session, paysim, "EG-DELAY", delay_ms=300)
        await asyncio.sleep(0.1)
        assert receiver.requests == 0
        assert (await provider_client.query("wechat", "EG-DELAY")).paid  # type: ignore[union-attr]
    await eventually(lambda: len(receiver.notices) == 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dropped_notification_is_found_by_query(paysim: RunningSim, keys: PaymentKeys,
                                                        session: aiohttp.ClientSession, receiver_factory: Any,
                                                        provider: str) -> None:
    receiver, public_url = await receiver_factory()
    number = order_no(provider, "DROP")
    async with await merchant(paysim, keys, public_url) as provider_client:
        await provider_client.create_trade(provider, number, 4200, SUBJECT)
        status, answer = await sim_pay(session, paysim, number, drop=True)
        assert status == 202 and answer["notifications"] == 0
        trade = await provider_client.query(provider, number)
        assert trade is not None and trade.paid and trade.trade_no == answer["trade_no"] and trade.amount_fen == 4200
        with pytest.raises(TradeAlreadyPaid):
            await provider_client.close(provider, number)
        with pytest.raises(TradeAlreadyPaid):
            await provider_client.create_trade(provider, number, 4200, SUBJECT)
    await asyncio.sleep(0.05)
    assert receiver.requests == 0 and (await sim_order(session, paysim, number))["deliveries"] == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_closed_trade_is_paid_only_when_forced(paysim: RunningSim, keys: PaymentKeys,
                                                       session: aiohttp.ClientSession, receiver_factory: Any,
                                                       provider: str) -> None:
    receiver, public_url = await receiver_factory()
    number = order_no(provider, "LATE")
    async with await merchant(paysim, keys, public_url) as provider_client:
        await provider_client.create_trade(provider, number, 700, SUBJECT)
        await provider_client.close(provider, number)
        await provider_client.close(provider, number)  # closing twice is fine
        closed = await provider_client.query(provider, number)
        assert closed is not None and closed.closed and not closed.paid
        with pytest.raises(TradeClosed):
            await provider_client.create_trade(provider, number, 700, SUBJECT)
        status, refusal = await sim_pay(session, paysim, number)
        assert status == 409 and refusal["error"]["code"] == "trade_closed"
        status, answer = await sim_pay(session, paysim, number, force=True)
        assert status == 202 and answer["notifications"] == 1
        await eventually(lambda: len(receiver.notices) == 1)
        late = await provider_client.query(provider, number)
    assert late is not None and late.paid and not late.closed
    assert receiver.notices[0].paid and receiver.notices[0].order_no == number


async def test_pay_options_are_validated(paysim: RunningSim, client: ProviderClient,
                                         session: aiohttp.ClientSession) -> None:
    await client.create_trade("alipay", "EG-OPTS", 100, SUBJECT)
    for options, field in [({"duplicates": 101}, "duplicates"), ({"duplicates": -1}, "duplicates"),
                           ({"duplicates": "2"}, "duplicates"), ({"delay_ms": 600_001}, "delay_ms"),
                           ({"delay_ms": 1.5}, "delay_ms"), ({"drop": "yes"}, "drop"), ({"force": 1}, "force"),
                           ({"colour": "red"}, "colour")]:
        status, answer = await sim_pay(session, paysim, "EG-OPTS", **options)
        assert status == 422, options
        assert answer["error"]["code"] == "validation_failed" and field in answer["error"]["details"]["fields"]
    async with session.post(f"{paysim.url}/sim/orders/EG-OPTS/pay", data=b"[1") as resp:
        assert resp.status == 400
    status, answer = await sim_pay(session, paysim, "EG-UNKNOWN")
    assert status == 404 and answer["error"]["code"] == "order_not_found"
    assert paysim.sim.book.get("EG-OPTS").state == "open"  # type: ignore[union-attr]


async def test_the_cashier_page_pays_and_links_back(paysim: RunningSim, keys: PaymentKeys,
                                                    session: aiohttp.ClientSession, receiver_factory: Any) -> None:
    receiver, public_url = await receiver_factory()
    async with await merchant(paysim, keys, public_url) as provider_client:
        pay_url = await provider_client.create_trade("alipay", "EG-PAGE", 12345, SUBJECT)
    back = "http://127.0.0.1:8080/registrations/7?paid=1&x=<y>"
    async with session.get(pay_url, params={"return_url": back}) as resp:
        page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "¥123.45" in page and "EG-PAGE" in page and "支付宝" in page and "支付</button>" in page
    assert 'method="post" action="/pay/EG-PAGE"' in page and "&lt;y&gt;" in page and "<y>" not in page
    async with session.post(pay_url, data={"return_url": back}) as resp:
        paid_page = await resp.text()
    assert resp.status == 200 and "支付成功" in paid_page and 'href="http://127.0.0.1:8080/registrations/7' in paid_page
    await eventually(lambda: len(receiver.notices) == 1)
    async with session.get(f"{paysim.url}/pay/EG-NOPE") as resp:
        assert resp.status == 404 and "订单不存在" in await resp.text()
    async with session.get(pay_url, params={"return_url": "javascript:alert(1)"}) as resp:
        assert "javascript:" not in await resp.text()


async def test_shutdown_cancels_pending_retries(keys: PaymentKeys, receiver_factory: Any) -> None:
    receiver, public_url = await receiver_factory(fail_first=1000)
    app = build_app(keys, time_scale=1.0)  # the first retry would wait four minutes
    runner, url = await start_app(app)
    async with ProviderClient(settings_for(url, public_url), keys) as provider_client, aiohttp.ClientSession() as http:
        await provider_client.create_trade("alipay", "EG-SHUT", 100, SUBJECT)
        async with http.post(f"{url}/sim/orders/EG-SHUT/pay") as resp:
            assert resp.status == 202
        await eventually(lambda: receiver.requests == 1)
    started = time.monotonic()
    await runner.cleanup()
    assert time.monotonic() - started < 2


# --- the real command -------------------------------------------------------------------------------------------

def test_examgate_paysim_runs_as_a_process(keys_dir: Path) -> None:
    process = start_paysim(keys_dir, time_scale=0.001)
    try:
        with urllib.request.urlopen(process.url + "/sim/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert b'"status": "ok"' in resp.read()
    finally:
        assert process.stop() == 0, process.log()
    assert "paysim serving on http://127.0.0.1" in process.log()
