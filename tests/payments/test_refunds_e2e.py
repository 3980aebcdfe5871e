"""Refunds end to end: the payment simulator, a gateway and a worker as real processes.

The gateway and the worker load their keys from a directory holding only what a merchant has
(``payments.keys.MERCHANT_FILES``); the simulator has both sides.

- A late payment (of a closed order) becomes a refund row, the worker sends it, the provider
  refunds it: Alipay at once, WeChat Pay after processing, ended by its signed refund
  notification; the ledger has the request and the outcome, the simulator one refund each.
- A WeChat Pay refund notification sent twice is recorded once.
- A refund the provider refuses is retried, then shown failed to operators after the retry
  budget; executing it again (admin route) sends it and it succeeds; executing twice sends one
  refund; a refund sent again after its answer was lost moves no more money.
- An Alipay notification naming another seller is rejected.

The module has its own database: the worker sends every due refund of the database it is given.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from core.timeutil import utcnow
from loadtest.processes import (
    ROOT,
    Process,
    examgate_env,
    free_port,
    start_gateway,
    start_worker,
)
from payments import alipay
from payments import keys as payment_keys
from payments.clients import ProviderClient
from payments.keys import PaymentKeys
from payments.orders import new_order_no
from queueing import keys as qkeys
from tests.factories import make_exam
from tests.gateway.seat_stack import make_candidates, make_registrations
from tests.payments.conftest import connected, module_database, paysim_process, settings_for
from tests.payments.test_payments_e2e import eventually, tail

SUBJECT = "测试考试报名费"
FEE_FEN = 5600
MAX_ATTEMPTS = 3
WORKER_SETTINGS = {
    "EXAMGATE_ORDER_QUERY_AFTER_S": "3600",  # no reconciliation in the way: these orders are closed by hand
    "EXAMGATE_PAYMENTS_INTERVAL_S": "5",
    "EXAMGATE_REFUNDS_INTERVAL_S": "0.1",
    "EXAMGATE_REFUND_RETRY_S": "0.1",
    "EXAMGATE_REFUND_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "EXAMGATE_REFUND_QUERY_AFTER_S": "30",  # WeChat Pay's refunds end by their notification, not a query
}


# --- processes --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def refunds_dsn() -> Iterator[str]:
    with module_database("refunds") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def merchant_keys_dir(keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the merchant's files only: no platform private key, none of our public halves."""
    directory = tmp_path_factory.mktemp("merchant-keys")
    for name in payment_keys.MERCHANT_FILES:
        shutil.copy(keys_dir / name, directory / name)
    return directory


@pytest.fixture
async def conn(refunds_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(refunds_dsn) as connection:
        yield connection


@pytest.fixture
def paysim(keys_dir: Path) -> Iterator[Process]:
    with paysim_process(keys_dir) as process:
        yield process


@pytest.fixture
def gateway(refunds_dsn: str, redis: aioredis.Redis, redis_url: str, merchant_keys_dir: Path,
            paysim: Process) -> Iterator[Process]:
    port = free_port()
    process = start_gateway(refunds_dsn, redis_url, workers=1, port=port, EXAMGATE_KEYS_DIR=str(merchant_keys_dir),
                            EXAMGATE_PAYSIM_URL=paysim.url, EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def worker(refunds_dsn: str, redis_url: str, merchant_keys_dir: Path, paysim: Process,
           gateway: Process) -> Iterator[Process]:
    process = start_worker(refunds_dsn, redis_url, EXAMGATE_KEYS_DIR=str(merchant_keys_dir),
                           EXAMGATE_PAYSIM_URL=paysim.url, EXAMGATE_PUBLIC_URL=gateway.url, **WORKER_SETTINGS)
    try:
        yield process
    finally:
        process.stop()


# --- helpers ----------------------------------------------------------------------------------------------

class Order:
    def __init__(self, order_no: str, registration_id: int, provider: str) -> None:
        self.order_no, self.registration_id, self.provider = order_no, registration_id, provider
        self.trade_no = ""


async def closed_orders(conn: asyncpg.Connection, redis: aioredis.Redis, providers: list[str]) -> list[Order]:
    """Approved registrations with an order each, expired and closed here (their trades are opened next)."""
    exam_id = await make_exam(conn, sites=[("11", 10)])
    site_id = await conn.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    candidates = await make_candidates(conn, len(providers))
    registrations = await make_registrations(conn, exam_id, candidates, status="approved")
    await conn.execute("UPDATE registrations SET site_id = $2 WHERE id = ANY($1::bigint[])", registrations, site_id)
    await redis.set(qkeys.site_left(exam_id, site_id), 10)
    now = utcnow()
    made = [Order(new_order_no(now), registration, provider)
            for registration, provider in zip(registrations, providers, strict=True)]
    await conn.executemany("INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status)"
                           " VALUES ($1, $2, $3, $4, $5, 'closed')",
                           [(o.order_no, o.registration_id, o.provider, FEE_FEN, now - timedelta(minutes=1))
                            for o in made])
    return made


async def pay_late(http: aiohttp.ClientSession, paysim: Process, gateway: Process, keys: PaymentKeys,
                   orders: list[Order]) -> None:
    """Open each order's trade, close it as the worker would, then pay it anyway at the simulator."""
    async with ProviderClient(settings_for(paysim.url, gateway.url), keys, timeout_s=10) as client:
        for order in orders:
            await client.create_trade(order.provider, order.order_no, FEE_FEN, SUBJECT)
            await client.close(order.provider, order.order_no)
    for order in orders:
        async with http.post(f"{paysim.url}/sim/orders/{order.order_no}/pay", json={"force": True}) as resp:
            assert resp.status == 202, await resp.text()
            order.trade_no = (await resp.json())["trade_no"]


async def refund_rows(conn: asyncpg.Connection, orders: list[Order]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM refunds WHERE order_no = ANY($1::text[])", [o.order_no for o in orders])
    return {row["order_no"]: row for row in rows}


async def events(conn: asyncpg.Connection, refund_id: str) -> list[tuple[str, str | None]]:
    return [(row["kind"], row["outcome"]) for row in await conn.fetch(
        "SELECT kind, outcome FROM refund_events WHERE refund_id = $1 ORDER BY id", refund_id)]


async def sim(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def admin(http: aiohttp.ClientSession, gateway: Process, method: str, path: str) -> tuple[int, Any]:
    async with http.request(method, f"{gateway.url}{path}",
                            headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
        return resp.status, await resp.json()


async def wait_statuses(conn: asyncpg.Connection, orders: list[Order], wanted: set[str], what: str,
                        *processes: Process) -> dict[str, asyncpg.Record]:
    found: dict[str, asyncpg.Record] = {}

    async def reached() -> bool:
        found.update(await refund_rows(conn, orders))
        return len(found) == len(orders) and {row["status"] for row in found.values()} == wanted

    await eventually(reached, what, explain=lambda: "\n".join(
        [str([dict(r) for r in found.values()]), *(tail(p) for p in processes)]))
    return found


# --- 1. a late payment refunded ---------------------------------------------------------------------------

async def test_a_late_payment_is_refunded_through_the_provider_and_recorded(
        paysim: Process, gateway: Process, worker: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys, merchant_keys_dir: Path) -> None:
    assert sorted(os.listdir(merchant_keys_dir)) == sorted(payment_keys.MERCHANT_FILES)
    orders = await closed_orders(conn, redis, ["alipay", "wechat"])
    async with aiohttp.ClientSession() as http:
        await pay_late(http, paysim, gateway, keys, orders)
        rows = await wait_statuses(conn, orders, {"succeeded"}, "the late payments were not refunded",
                                   gateway, worker)
        for order in orders:
            row = rows[order.order_no]
            assert (row["provider"], row["provider_trade_no"], row["amount_fen"], row["reason"], row["attempts"],
                    row["requested_by"], row["next_attempt_at"], row["last_error"]) == (
                order.provider, order.trade_no, FEE_FEN, "order_closed", 1, "system", None, None)
            assert row["refund_id"].startswith("RF") and len(row["refund_id"]) == 26
            assert row["finished_at"] is not None
        alipay_id, wechat_id = rows[orders[0].order_no]["refund_id"], rows[orders[1].order_no]["refund_id"]
        assert await events(conn, alipay_id) == [("created", "pending"), ("request", None), ("answer", "succeeded")]
        # The notification may overtake the worker's record of the answer: the same lines, either order.
        assert sorted(await events(conn, wechat_id), key=str) == sorted(
            [("created", "pending"), ("request", None), ("answer", "processing"), ("notification", "succeeded")],
            key=str)
        assert rows[orders[1].order_no]["provider_refund_no"].startswith("5030")

        status, at_sim = await sim(http, "GET", f"{paysim.url}/sim/refunds")
        assert status == 200
        made = {r["refund_no"]: r for r in at_sim["refunds"]}
        assert set(made) == {alipay_id, wechat_id}
        assert {(r["order_no"], r["trade_no"], r["amount_fen"], r["status"], r["requests"]) for r in made.values()} == {
            (o.order_no, o.trade_no, FEE_FEN, "SUCCESS", 1) for o in orders}
        assert made[wechat_id]["notify_url"] == f"{gateway.url}/api/v1/payments/wechat/refund-notify"
        for order in orders:
            status, trade = await sim(http, "GET", f"{paysim.url}/sim/orders/{order.order_no}")
            assert trade["refunded_fen"] == FEE_FEN

        status, listed = await admin(http, gateway, "GET", "/admin/api/v1/refunds?status=succeeded")
        assert status == 200, listed
        mine = {r["order_no"]: r for r in listed["refunds"] if r["order_no"] in {o.order_no for o in orders}}
        assert {(r["refund_id"], r["status"], r["attempts"], r["order_status"], r["reason"])
                for r in mine.values()} == {
            (alipay_id, "succeeded", 1, "refund_pending", "order_closed"),
            (wechat_id, "succeeded", 1, "refund_pending", "order_closed")}
        status, shown = await admin(http, gateway, "GET", f"/admin/api/v1/refunds/{wechat_id}")
        assert status == 200
        assert sorted(e["kind"] for e in shown["events"]) == ["answer", "created", "notification", "request"]
        assert shown["events"][1]["payload"]["method"] == "POST /v3/refund/domestic/refunds"
        assert await admin(http, gateway, "POST", f"/admin/api/v1/refunds/{alipay_id}/execute") == (409, {
            "error": {"code": "refund_succeeded", "message": "该退款已成功，无需再次执行",
                      "details": {"refund_id": alipay_id}}})
        unknown = "RF" + "0" * 24
        status, missing = await admin(http, gateway, "POST", f"/admin/api/v1/refunds/{unknown}/execute")
        assert (status, missing["error"]["code"]) == (404, "refund_not_found")
        status, missing = await admin(http, gateway, "GET", "/admin/api/v1/refunds/not-a-refund")
        assert (status, missing["error"]["code"]) == (404, "refund_not_found")


# --- 2. a refund notification sent twice ------------------------------------------------------------------

async def test_a_wechat_refund_notification_sent_twice_is_recorded_once(
        paysim: Process, gateway: Process, worker: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    orders = await closed_orders(conn, redis, ["wechat"])
    async with aiohttp.ClientSession() as http:
        await pay_late(http, paysim, gateway, keys, orders)
        rows = await wait_statuses(conn, orders, {"succeeded"}, "the refund did not succeed", gateway, worker)
        refund_id = rows[orders[0].order_no]["refund_id"]
        status, sent = await sim(http, "POST", f"{paysim.url}/sim/refunds/{refund_id}/notify", {"copies": 2})
        assert (status, sent["notifications"]) == (202, 2)

        async def all_acknowledged() -> bool:
            _, shown = await sim(http, "GET", f"{paysim.url}/sim/refunds/{refund_id}")
            return bool(shown["notifications"] == {"copies": 3, "acknowledged": 3})

        await eventually(all_acknowledged, "the gateway did not acknowledge every copy", explain=lambda: tail(gateway))
    assert sorted(await events(conn, refund_id), key=str) == sorted(
        [("created", "pending"), ("request", None), ("answer", "processing"), ("notification", "succeeded")], key=str)
    assert await conn.fetchval("SELECT status FROM refunds WHERE refund_id = $1", refund_id) == "succeeded"


# --- 3. failures, the retry budget, executing again -------------------------------------------------------

async def test_a_refused_refund_is_retried_then_failed_for_operators_and_executed_again_once(
        paysim: Process, gateway: Process, worker: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    orders = await closed_orders(conn, redis, ["alipay", "wechat"])
    async with aiohttp.ClientSession() as http:
        assert (await sim(http, "POST", f"{paysim.url}/sim/refunds/fail", {"count": 1000}))[0] == 200
        await pay_late(http, paysim, gateway, keys, orders)
        rows = await wait_statuses(conn, orders, {"failed"}, "the refunds did not fail", worker)

        async def gave_up() -> bool:
            rows.update(await refund_rows(conn, orders))
            return all(r["attempts"] == MAX_ATTEMPTS and r["next_attempt_at"] is None for r in rows.values())

        await eventually(gave_up, "the refunds were not retried to the budget", explain=lambda: tail(worker))
        errors = {rows[o.order_no]["last_error"] for o in orders}
        assert errors == {"ACQ.SELLER_BALANCE_NOT_ENOUGH: 卖家余额不足",
                          "NOT_ENOUGH: 基本账户余额不足，请充值后重新发起"}
        ids = [rows[o.order_no]["refund_id"] for o in orders]

        status, listed = await admin(http, gateway, "GET", "/admin/api/v1/refunds?status=failed")
        assert status == 200
        shown = {r["refund_id"]: r for r in listed["refunds"]}
        assert {(shown[i]["status"], shown[i]["attempts"], shown[i]["next_attempt_at"]) for i in ids} == {
            ("failed", MAX_ATTEMPTS, None)}
        assert {shown[i]["last_error"] for i in ids} == errors
        printed = await asyncio.to_thread(ctl, gateway, "refunds", "--status", "failed")
        assert printed.returncode == 0, printed.stderr
        assert all(refund_id in printed.stdout for refund_id in ids) and "NOT_ENOUGH" in printed.stdout
        _, at_sim = await sim(http, "GET", f"{paysim.url}/sim/refunds")
        assert at_sim["refunds"] == [] and at_sim["refused"] >= 2 * MAX_ATTEMPTS  # nothing was refunded

        assert (await sim(http, "POST", f"{paysim.url}/sim/refunds/fail", {"count": 0}))[0] == 200
        alipay_id, wechat_id = ids
        # Executed twice at once (the console's button and ctl): queued twice, sent once.
        queued = await asyncio.gather(admin(http, gateway, "POST", f"/admin/api/v1/refunds/{alipay_id}/execute"),
                                      admin(http, gateway, "POST", f"/admin/api/v1/refunds/{alipay_id}/execute"))
        assert [status for status, _ in queued] == [202, 202]
        printed = await asyncio.to_thread(ctl, gateway, "refunds", "execute", wechat_id)
        assert printed.returncode == 0 and f"refund {wechat_id} queued" in printed.stdout, printed.stderr
        await wait_statuses(conn, orders, {"succeeded"}, "the executed refunds did not succeed", worker, gateway)
        rows.update(await refund_rows(conn, orders))
        assert {r["attempts"] for r in rows.values()} == {MAX_ATTEMPTS + 1}
        alipay_events = await events(conn, alipay_id)
        assert alipay_events.count(("queued", "failed")) == 2
        assert [kind for kind, _ in alipay_events].count("request") == MAX_ATTEMPTS + 1
        assert alipay_events[-1] == ("answer", "succeeded")

        _, at_sim = await sim(http, "GET", f"{paysim.url}/sim/refunds")
        assert sorted((r["refund_no"], r["requests"], r["amount_fen"]) for r in at_sim["refunds"]) == sorted(
            (i, 1, FEE_FEN) for i in ids)
        for order in orders:
            _, trade = await sim(http, "GET", f"{paysim.url}/sim/orders/{order.order_no}")
            assert trade["refunded_fen"] == FEE_FEN

        printed = await asyncio.to_thread(ctl, gateway, "refunds", "show", alipay_id)
        assert printed.returncode == 0 and "succeeded" in printed.stdout and "queued" in printed.stdout


async def test_a_refund_sent_again_after_its_answer_was_lost_moves_the_money_once(
        paysim: Process, gateway: Process, worker: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    orders = await closed_orders(conn, redis, ["alipay", "wechat"])
    async with aiohttp.ClientSession() as http:
        await pay_late(http, paysim, gateway, keys, orders)
        rows = await wait_statuses(conn, orders, {"succeeded"}, "the refunds did not succeed", gateway, worker)
        alipay_id, wechat_id = (rows[o.order_no]["refund_id"] for o in orders)
        # As if the worker had died after sending, before recording the answer: one still pending (sent
        # again under its id), one requested (asked about first, then taken as it is).
        await conn.execute("UPDATE refunds SET status = 'pending', finished_at = NULL, next_attempt_at = now()"
                           " WHERE refund_id = $1", alipay_id)
        await conn.execute("UPDATE refunds SET status = 'requested', finished_at = NULL, next_attempt_at = now()"
                           " WHERE refund_id = $1", wechat_id)
        await wait_statuses(conn, orders, {"succeeded"}, "the refunds did not succeed again", worker)
        _, at_sim = await sim(http, "GET", f"{paysim.url}/sim/refunds")
        made = {r["refund_no"]: r for r in at_sim["refunds"] if r["refund_no"] in (alipay_id, wechat_id)}
        assert (made[alipay_id]["requests"], made[wechat_id]["requests"]) == (2, 1)
        for order in orders:
            _, trade = await sim(http, "GET", f"{paysim.url}/sim/orders/{order.order_no}")
            assert trade["refunded_fen"] == FEE_FEN
    assert (await events(conn, alipay_id))[-2:] == [("request", None), ("answer", "succeeded")]
    assert (await events(conn, wechat_id))[-1] == ("query", "succeeded")


# --- 4. an Alipay notification of another seller ------------------------------------------------------------

async def test_an_alipay_notification_naming_another_seller_is_rejected(
        gateway: Process, conn: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:
    (order,) = await closed_orders(conn, redis, ["alipay"])
    await conn.execute("UPDATE orders SET status = 'pending', expires_at = now() + interval '30 minutes'"
                       " WHERE order_no = $1", order.order_no)
    form = alipay.build_notification(order_no=order.order_no, trade_no=f"2026{secrets.randbelow(10**20):020d}",
                                     amount_fen=FEE_FEN, app_id="2021000000000001", seller_id="2088999999999999",
                                     keys=keys)
    async with aiohttp.ClientSession() as http, http.post(
            f"{gateway.url}/api/v1/payments/notify/alipay", data=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert (resp.status, await resp.text()) == (400, "fail")
    row = await conn.fetchrow("SELECT outcome, reason FROM payment_notifications WHERE order_no = $1", order.order_no)
    assert (row["outcome"], row["reason"]) == ("rejected", "seller_id_mismatch")
    assert await conn.fetchval("SELECT status FROM orders WHERE order_no = $1", order.order_no) == "pending"


def ctl(gateway: Process, *args: str) -> subprocess.CompletedProcess[str]:
    """``examgate ctl`` against the gateway with its operator token."""
    env = examgate_env("postgresql://unused@127.0.0.1/unused", "redis://127.0.0.1:1/0",
                       Path(gateway.extra["run_dir"]))
    return subprocess.run(
        [sys.executable, "-m", "examgate", "ctl", "--url", gateway.url, "--token", gateway.admin_token(), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_ctl_refunds_json_is_the_list_route(gateway: Process) -> None:
    printed = ctl(gateway, "refunds", "--json", "--limit", "5")
    assert printed.returncode == 0, printed.stderr
    assert isinstance(json.loads(printed.stdout), list)
