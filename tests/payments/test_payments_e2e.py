"""Payments end to end: the gateway, the worker and the payment simulator as real processes.

- PostgreSQL stopped while notifications arrive: the gateway refuses them, the simulator
  resends them on its (compressed) schedule, and once PostgreSQL is back every order is paid
  exactly once.
- A dropped notification: the worker's order reconciliation finds the payment at the provider.
- A late payment of an expired order, closed by the worker: recorded ``refund_pending``.
- The order route over HTTP, then a payment at the simulator seen through the registration.

Every test but the first uses a database of its own on the shared PostgreSQL server (made for
this module, dropped after it): the worker reconciles every pending order of the database it
is given, so it must not see other tests' orders.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db, migrate
from core.timeutil import iso_local_ms, utcnow
from loadtest.pg_server import PostgresServer, PostgresUnavailable, start_postgres
from loadtest.processes import (
    ROOT,
    Process,
    examgate_env,
    free_port,
    start_gateway,
    start_worker,
)
from payments.clients import ProviderClient
from payments.keys import PaymentKeys
from queueing import holds
from queueing import keys as qkeys
from tests.factories import make_exam
from tests.gateway.seat_stack import (
    bearer,
    make_candidates,
    make_registrations,
    make_sessions,
)
from tests.payments.conftest import connected, module_database, paysim_process, settings_for
from tests.payments.order_data import FEE_FEN, PendingOrder, make_orders

SUBJECT = "测试考试报名费"
WAIT_S = 30.0
# The worker queries a pending order's provider once it is half a second old, five times a second.
FAST_RECONCILE = {"EXAMGATE_ORDER_QUERY_AFTER_S": "0.5", "EXAMGATE_PAYMENTS_INTERVAL_S": "0.2"}


# --- processes --------------------------------------------------------------------------------------------

def run_gateway(pg_dsn: str, redis_url: str, keys_dir: Path, paysim: Process) -> Process:
    """A 2-process gateway whose provider is ``paysim`` and whose public URL (the notify URLs) is its own."""
    port = free_port()
    return start_gateway(pg_dsn, redis_url, workers=2, port=port, EXAMGATE_KEYS_DIR=str(keys_dir),
                         EXAMGATE_PAYSIM_URL=paysim.url, EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def e2e_dsn() -> Iterator[str]:
    """A migrated database of this module's own on the shared PostgreSQL server."""
    with module_database("e2e") as dsn:
        yield dsn


@pytest.fixture
async def conn(e2e_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(e2e_dsn) as connection:
        yield connection


@pytest.fixture
def paysim(keys_dir: Path) -> Iterator[Process]:
    """``examgate paysim`` with the retry schedules compressed by ``TIME_SCALE``."""
    with paysim_process(keys_dir) as process:
        yield process


@pytest.fixture
def gateway(e2e_dsn: str, redis: aioredis.Redis, redis_url: str, keys_dir: Path, paysim: Process) -> Iterator[Process]:
    process = run_gateway(e2e_dsn, redis_url, keys_dir, paysim)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def worker(e2e_dsn: str, redis: aioredis.Redis, redis_url: str, keys_dir: Path, paysim: Process) -> Iterator[Process]:
    """The worker, reconciling orders at ``paysim`` quickly."""
    process = start_worker(e2e_dsn, redis_url, EXAMGATE_KEYS_DIR=str(keys_dir), EXAMGATE_PAYSIM_URL=paysim.url,
                           **FAST_RECONCILE)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server this test may stop and start."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(f"needs a private PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.destroy()


# --- helpers ----------------------------------------------------------------------------------------------

async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S,
                     interval_s: float = 0.05, explain: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until it holds; fail with ``what`` (and ``explain()``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s\n{explain()}")
        await asyncio.sleep(interval_s)


async def create_trades(paysim: Process, gateway: Process, keys: PaymentKeys, orders: list[PendingOrder]) -> None:
    """Open each order's trade at the simulator, as the order route does, notifications to the gateway."""
    gate = asyncio.Semaphore(16)
    async with ProviderClient(settings_for(paysim.url, gateway.url), keys, timeout_s=10) as client:
        async def create(order: PendingOrder) -> str:
            async with gate:
                return await client.create_trade(order.provider, order.order_no, order.amount_fen, SUBJECT)

        pay_urls = await asyncio.gather(*(create(order) for order in orders))
    assert all(url.endswith(f"/pay/{order.order_no}") for url, order in zip(pay_urls, orders, strict=True))


async def sim_pay(http: aiohttp.ClientSession, paysim: Process, order_no: str, **options: Any) -> tuple[int, Any]:
    async with http.post(f"{paysim.url}/sim/orders/{order_no}/pay", json=options) as resp:
        return resp.status, await resp.json()


async def sim_trade(http: aiohttp.ClientSession, paysim: Process, order_no: str) -> dict[str, Any]:
    async with http.get(f"{paysim.url}/sim/orders/{order_no}") as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def sim_trades(http: aiohttp.ClientSession, paysim: Process, order_nos: list[str]) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(32)

    async def one(order_no: str) -> dict[str, Any]:
        async with gate:
            return await sim_trade(http, paysim, order_no)

    return list(await asyncio.gather(*(one(order_no) for order_no in order_nos)))


async def order_statuses(conn: asyncpg.Connection, order_nos: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT order_no, status FROM orders WHERE order_no = ANY($1::text[])", order_nos)
    return {row["order_no"]: row["status"] for row in rows}


async def ledger(conn: asyncpg.Connection, order_nos: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT order_no, event_id, outcome, reason FROM payment_notifications "
                            "WHERE order_no = ANY($1::text[]) ORDER BY order_no, id", order_nos)


async def site_of(conn: asyncpg.Connection, exam_id: int) -> int:
    return int(await conn.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1 ORDER BY id LIMIT 1", exam_id))


def tail(process: Process, chars: int = 3000) -> str:
    return process.log()[-chars:]


# --- 1. PostgreSQL stopped in the middle ------------------------------------------------------------------

OUTAGE_ORDERS = 200


@pytest.fixture
async def outage_dsn(own_postgres: PostgresServer) -> str:
    dsn = db.with_database(own_postgres.dsn, "examgate")
    await migrate.create_and_migrate(dsn)
    return dsn


@pytest.fixture
def outage_gateway(outage_dsn: str, redis: aioredis.Redis, redis_url: str, keys_dir: Path,
                   paysim: Process) -> Iterator[Process]:
    process = run_gateway(outage_dsn, redis_url, keys_dir, paysim)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.timeout(90)
async def test_notifications_refused_while_postgresql_is_down_are_settled_once_when_it_is_back(
        own_postgres: PostgresServer, outage_dsn: str, outage_gateway: Process, paysim: Process,
        redis: aioredis.Redis, keys: PaymentKeys) -> None:
    setup = await db.connect(outage_dsn)
    try:
        exam_id = await make_exam(setup, sites=[("11", OUTAGE_ORDERS)])
        site_id = await site_of(setup, exam_id)
        orders = await make_orders(setup, redis, exam_id, site_id, OUTAGE_ORDERS)
    finally:
        await setup.close()
    order_nos = [o.order_no for o in orders]
    await create_trades(paysim, outage_gateway, keys, orders)

    await asyncio.to_thread(own_postgres.stop)
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        paid = await asyncio.gather(*(sim_pay(http, paysim, order_no) for order_no in order_nos))
        assert {status for status, _ in paid} == {202}
        trade_nos = {order_no: body["trade_no"] for order_no, (_, body) in zip(order_nos, paid, strict=True)}

        refused: list[dict[str, Any]] = []

        async def every_trade_refused_twice() -> bool:
            refused[:] = await sim_trades(http, paysim, order_nos)
            return all(t["notifications"]["attempts"] >= 2 for t in refused)

        await eventually(every_trade_refused_twice, "the simulator did not try every notification twice",
                         explain=lambda: tail(outage_gateway))
        assert all(t["notifications"]["acknowledged"] == 0 for t in refused)
        # The gateway answered, with a failure: Alipay's "fail" (503), WeChat Pay's FAIL (500).
        assert {(t["provider"], t["notifications"]["last_status"]) for t in refused} == {
            ("alipay", 503), ("wechat", 500)}

        await asyncio.to_thread(own_postgres.start)
        conn = await db.connect(outage_dsn)
        try:
            async def all_paid() -> bool:
                return set((await order_statuses(conn, order_nos)).values()) == {"paid"}

            await eventually(all_paid, "not every order was paid after PostgreSQL came back", timeout_s=60,
                             interval_s=0.1, explain=lambda: tail(outage_gateway))

            rows = await ledger(conn, order_nos)
            assert len(rows) == OUTAGE_ORDERS
            assert {row["order_no"] for row in rows} == set(order_nos)
            assert {(row["outcome"], row["reason"]) for row in rows} == {("accepted", None)}
            assert await conn.fetchval("SELECT count(*) FROM payment_notifications") == OUTAGE_ORDERS
            assert {row["order_no"]: row["trade_no"] for row in await conn.fetch(
                "SELECT order_no, provider_trade_no AS trade_no FROM orders WHERE order_no = ANY($1::text[])",
                order_nos)} == trade_nos
            tickets = await conn.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT registration_id) AS registrations, "
                "count(DISTINCT (room, seat_no)) AS seats FROM admission_tickets WHERE exam_id = $1", exam_id)
            assert dict(tickets) == {"n": OUTAGE_ORDERS, "registrations": OUTAGE_ORDERS, "seats": OUTAGE_ORDERS}
            assert await conn.fetchval("SELECT count(*) FROM registrations WHERE exam_id = $1 AND status = 'paid'",
                                       exam_id) == OUTAGE_ORDERS
        finally:
            await conn.close()
        assert int(await redis.get(qkeys.site_left(exam_id, site_id))) == 0

        acknowledged: list[dict[str, Any]] = []

        async def every_trade_acknowledged() -> bool:  # the answer leaves the gateway after the commit
            acknowledged[:] = await sim_trades(http, paysim, order_nos)
            return all(t["notifications"]["acknowledged"] == 1 for t in acknowledged)

        await eventually(every_trade_acknowledged, "the simulator did not see every notification acknowledged",
                         timeout_s=10)
        assert {(t["state"], t["notifications"]["copies"]) for t in acknowledged} == {("paid", 1)}


# --- 2. a dropped notification ----------------------------------------------------------------------------

async def test_a_dropped_notification_is_settled_by_the_workers_reconciliation(
        gateway: Process, worker: Process, paysim: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    exam_id = await make_exam(conn, sites=[("11", 10)])
    site_id = await site_of(conn, exam_id)
    dropped_alipay, dropped_wechat, unpaid = await make_orders(conn, redis, exam_id, site_id, 3,
                                                               providers=("alipay", "wechat"))
    dropped = [dropped_alipay, dropped_wechat]
    await create_trades(paysim, gateway, keys, [dropped_alipay, dropped_wechat, unpaid])

    async with aiohttp.ClientSession() as http:
        trade_nos = {}
        for order in dropped:
            status, body = await sim_pay(http, paysim, order.order_no, drop=True)
            assert (status, body["notifications"]) == (202, 0)
            trade_nos[order.order_no] = body["trade_no"]

        async def settled() -> bool:
            statuses = await order_statuses(conn, list(trade_nos))
            return set(statuses.values()) == {"paid"}

        await eventually(settled, "the worker did not settle the paid orders", explain=lambda: tail(worker))
        for order in dropped:
            trade = await sim_trade(http, paysim, order.order_no)
            assert (trade["state"], trade["notifications"]["copies"]) == ("paid", 0)  # nothing was ever sent

    rows = await ledger(conn, [o.order_no for o in (*dropped, unpaid)])
    assert [(row["order_no"], row["event_id"], row["outcome"]) for row in rows] == sorted(
        (order_no, f"query:{trade_no}", "accepted") for order_no, trade_no in trade_nos.items())
    tickets = await conn.fetch("SELECT registration_id FROM admission_tickets WHERE exam_id = $1", exam_id)
    assert sorted(row["registration_id"] for row in tickets) == sorted(o.registration_id for o in dropped)
    assert await conn.fetchval("SELECT status FROM orders WHERE order_no = $1", unpaid.order_no) == "pending"
    assert int(await redis.get(qkeys.site_left(exam_id, site_id))) == 3 - len(dropped)


# --- 3. a late payment of an expired order ----------------------------------------------------------------

async def test_a_late_payment_of_an_expired_order_closed_by_the_worker_ends_refund_pending(
        gateway: Process, worker: Process, paysim: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    exam_id = await make_exam(conn, sites=[("11", 10)])
    site_id = await site_of(conn, exam_id)
    orders = await make_orders(conn, redis, exam_id, site_id, 2, providers=("alipay", "wechat"),
                               expires_at=utcnow() - timedelta(minutes=1))
    order_nos = [o.order_no for o in orders]
    await create_trades(paysim, gateway, keys, orders)

    async with aiohttp.ClientSession() as http:
        async def closed_everywhere() -> bool:
            if set((await order_statuses(conn, order_nos)).values()) != {"closed"}:
                return False
            return {t["state"] for t in await sim_trades(http, paysim, order_nos)} == {"closed"}

        await eventually(closed_everywhere, "the worker did not close the expired orders",
                         explain=lambda: tail(worker))

        trade_nos = {}
        for order_no in order_nos:
            status, body = await sim_pay(http, paysim, order_no)
            assert (status, body["error"]["code"]) == (409, "trade_closed")
            status, body = await sim_pay(http, paysim, order_no, force=True)
            assert (status, body["notifications"]) == (202, 1)
            trade_nos[order_no] = body["trade_no"]

        async def refund_pending() -> bool:
            return set((await order_statuses(conn, order_nos)).values()) == {"refund_pending"}

        await eventually(refund_pending, "the late payments were not recorded refund_pending",
                         explain=lambda: tail(gateway))

        async def acknowledged() -> bool:
            return all(t["notifications"]["acknowledged"] == 1 for t in await sim_trades(http, paysim, order_nos))

        await eventually(acknowledged, "the simulator did not see the notifications acknowledged", timeout_s=10)

        async with http.get(f"{gateway.url}/admin/api/v1/refunds",
                            headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
            assert resp.status == 200, await resp.text()
            listed = (await resp.json())["refunds"]

    rows = await ledger(conn, order_nos)
    assert sorted((row["order_no"], row["outcome"], row["reason"]) for row in rows) == sorted(
        (order_no, "refund_pending", "order_closed") for order_no in order_nos)
    assert await conn.fetchval("SELECT count(*) FROM admission_tickets WHERE exam_id = $1", exam_id) == 0
    assert {row["status"] for row in await conn.fetch(
        "SELECT status FROM registrations WHERE id = ANY($1::bigint[])", [o.registration_id for o in orders])} == {
        "approved"}
    assert int(await redis.get(qkeys.site_left(exam_id, site_id))) == 2  # no seat taken

    assert sorted((r["order_no"], r["registration_id"], r["amount_fen"], r["order_status"], r["reason"])
                  for r in listed) == sorted(
        (o.order_no, o.registration_id, o.amount_fen, "refund_pending", "order_closed") for o in orders)
    by_provider = {r["provider"]: r for r in listed}
    assert by_provider["alipay"]["trade_no"] == trade_nos[by_provider["alipay"]["order_no"]]

    printed = await asyncio.to_thread(ctl, gateway, "refunds", "--json")
    assert printed.returncode == 0, printed.stderr
    assert sorted(r["order_no"] for r in json.loads(printed.stdout)) == sorted(order_nos)


def ctl(gateway: Process, *args: str) -> subprocess.CompletedProcess[str]:
    """``examgate ctl`` against the gateway with its operator token."""
    env = examgate_env("postgresql://unused@127.0.0.1/unused", "redis://127.0.0.1:1/0",
                       Path(gateway.extra["run_dir"]))
    return subprocess.run(
        [sys.executable, "-m", "examgate", "ctl", "--url", gateway.url, "--token", gateway.admin_token(), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


# --- 4. the order route over HTTP -------------------------------------------------------------------------

async def test_the_order_route_opens_one_order_per_hold_and_a_payment_at_the_simulator_pays_it(
        gateway: Process, paysim: Process, conn: asyncpg.Connection, redis: aioredis.Redis, redis_url: str) -> None:
    exam_id = await make_exam(conn, sites=[("11", 10)])
    site_id = await site_of(conn, exam_id)
    payer, drafter, unheld = await make_candidates(conn, 3)
    paying, draft, holdless = await make_registrations(conn, exam_id, [payer, drafter, unheld])
    await conn.execute("UPDATE registrations SET subjects = '{101,102}' WHERE id = $1", paying)
    await conn.execute("UPDATE registrations SET status = 'draft' WHERE id = $1", draft)
    await conn.execute("UPDATE registrations SET status = 'approved', site_id = $2 WHERE id = ANY($1::bigint[])",
                       [paying, holdless], site_id)
    await redis.set(qkeys.site_left(exam_id, site_id), 10)
    hold = await holds.hold_seat(redis, exam_id, paying, site_id, ttl_s=600)
    payer_token, drafter_token, unheld_token = await make_sessions(redis_url, [payer, drafter, unheld])

    async with aiohttp.ClientSession() as http:
        async def order(token: str, registration_id: int, body: Any) -> tuple[int, Any]:
            async with http.post(f"{gateway.url}/api/v1/registrations/{registration_id}/orders", json=body,
                                 headers=bearer(token)) as resp:
                return resp.status, await resp.json()

        status, opened = await order(payer_token, paying, {"provider": "alipay"})
        assert status == 201, opened
        assert opened == {"order_no": opened["order_no"], "provider": "alipay", "amount_fen": 2 * FEE_FEN,
                          "pay_url": f"{paysim.url}/pay/{opened['order_no']}",
                          "expires_at": iso_local_ms(hold.expires_at_ms or 0)}
        assert await order(payer_token, paying, {"provider": "alipay"}) == (200, opened)

        status, refused = await order(payer_token, paying, {"provider": "paypal"})
        assert (status, refused["error"]["code"]) == (422, "validation_failed")
        assert refused["error"]["details"]["fields"] == {"provider": "invalid_choice"}
        status, refused = await order(payer_token, paying, {"provider": None, "coupon": "x"})
        assert (status, refused["error"]["details"]["fields"]) == (422, {"provider": "required",
                                                                         "coupon": "unknown_field"}), refused
        status, refused = await order(drafter_token, draft, {"provider": "wechat"})
        assert (status, refused["error"]["code"]) == (409, "not_approved")
        status, refused = await order(unheld_token, holdless, {"provider": "wechat"})
        assert (status, refused["error"]["code"]) == (409, "hold_required")
        status, refused = await order(payer_token, draft, {"provider": "wechat"})
        assert (status, refused["error"]["code"]) == (404, "registration_not_found")
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE registration_id = ANY($1::bigint[])",
                                   [paying, draft, holdless]) == 1

        trade = await sim_trade(http, paysim, opened["order_no"])
        assert (trade["provider"], trade["amount_fen"], trade["state"]) == ("alipay", 2 * FEE_FEN, "open")
        assert trade["notify_url"] == f"{gateway.url}/api/v1/payments/notify/alipay"
        status, paid = await sim_pay(http, paysim, opened["order_no"])
        assert status == 202, paid

        seen: dict[str, Any] = {}

        async def registration_paid() -> bool:
            async with http.get(f"{gateway.url}/api/v1/registrations/{paying}", headers=bearer(payer_token)) as resp:
                assert resp.status == 200, await resp.text()
                seen.update(await resp.json())
            return seen["status"] == "paid" and seen["ticket_no"] is not None

        await eventually(registration_paid, "the registration was not paid", explain=lambda: f"{seen}\n{tail(gateway)}")
        assert (seen["order_no"], seen["site_id"]) == (opened["order_no"], site_id)
        trade = await sim_trade(http, paysim, opened["order_no"])

    assert await conn.fetchval("SELECT status FROM orders WHERE order_no = $1", opened["order_no"]) == "paid"
    assert await holds.current_hold(redis, exam_id, paying) == (site_id, None)  # permanent now
    rows = await ledger(conn, [opened["order_no"]])
    assert [(row["event_id"], row["outcome"]) for row in rows] == [(trade["event_id"], "accepted")]


# --- the refunds list ------------------------------------------------------------------------------------


async def test_the_refunds_list_names_the_wechat_pay_transaction(
        gateway: Process, paysim: Process, conn: asyncpg.Connection, redis: aioredis.Redis,
        keys: PaymentKeys) -> None:
    exam_id = await make_exam(conn, sites=[("11", 10)])
    (order,) = await make_orders(conn, redis, exam_id, await site_of(conn, exam_id), 1, providers=("wechat",))
    await create_trades(paysim, gateway, keys, [order])
    async with ProviderClient(settings_for(paysim.url, gateway.url), keys, timeout_s=10) as client:
        await client.close("wechat", order.order_no)  # what the worker does to an expired order
    await conn.execute("UPDATE orders SET status = 'closed' WHERE order_no = $1", order.order_no)

    async with aiohttp.ClientSession() as http:
        status, paid = await sim_pay(http, paysim, order.order_no, force=True)
        assert status == 202, paid

        async def refund_pending() -> bool:
            return (await order_statuses(conn, [order.order_no]))[order.order_no] == "refund_pending"

        await eventually(refund_pending, "the late payment was not recorded refund_pending",
                         explain=lambda: tail(gateway))
        async with http.get(f"{gateway.url}/admin/api/v1/refunds",
                            headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
            listed = (await resp.json())["refunds"]

    mine = [(r["order_no"], r["trade_no"]) for r in listed if r["order_no"] == order.order_no]
    assert mine == [(order.order_no, paid["trade_no"])]  # the module's earlier refunds are listed too
