"""Settling notifications against real PostgreSQL and Redis: paid once, duplicates and mismatches recorded."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db
from core.timeutil import utcnow
from payments import alipay, settle, wechat
from payments.keys import PaymentKeys
from payments.runtime import PaymentsRuntime
from queueing import keys as qkeys
from queueing.seats import HoldSeats
from tests.factories import make_exam
from tests.payments.order_data import PendingOrder, make_orders

APP_IDS = {"alipay": "2021000000000001", "wechat": "wx00000000000000e1"}
MCH_ID = "1900000001"
EXPECTED = settle.Expected(app_ids=APP_IDS, merchant_ids={"wechat": MCH_ID})


class _Settings:
    alipay_app_id = APP_IDS["alipay"]
    wechat_app_id = APP_IDS["wechat"]
    wechat_mch_id = MCH_ID
    alipay_seller_id = "2088000000000001"
    paysim_url = "http://127.0.0.1:9"
    alipay_url = wechat_url = "http://127.0.0.1:9"
    public_url = "http://127.0.0.1:9"
    notify_group_max = 64
    notify_rejected_interval_s = 60.0
    notify_rejected_rows_max = 100


@pytest.fixture
async def pool(pg_dsn: str) -> Any:
    pool = await db.create_pool(db.PoolSettings(pg_dsn, 1, 4))
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def runtime(keys: PaymentKeys, pool: Any, redis: aioredis.Redis) -> Any:
    rt = PaymentsRuntime(_Settings(), keys, pool, redis, seats=HoldSeats(redis))
    try:
        yield rt
    finally:
        await rt.aclose()


def alipay_form(keys: PaymentKeys, order: PendingOrder, **overrides: Any) -> dict[str, str]:
    args: dict[str, Any] = {"order_no": order.order_no, "trade_no": f"2026{secrets.randbelow(10**20):020d}",
                            "amount_fen": order.amount_fen, "app_id": APP_IDS["alipay"],
                            "seller_id": "2088000000000001", "keys": keys}
    args.update(overrides)
    return alipay.build_notification(**args)


def wechat_request(keys: PaymentKeys, order: PendingOrder, **overrides: Any) -> tuple[dict[str, str], bytes]:
    args: dict[str, Any] = {"order_no": order.order_no, "transaction_id": f"42{secrets.randbelow(10**26):026d}",
                            "amount_fen": order.amount_fen, "app_id": APP_IDS["wechat"], "mch_id": MCH_ID,
                            "keys": keys}
    args.update(overrides)
    return wechat.build_notification(**args)


async def _exam_site(pg: asyncpg.Connection) -> tuple[int, int]:
    exam_id = await make_exam(pg, sites=[("11", 90)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    return exam_id, site_id


async def test_a_payment_pays_the_order_once_and_allocates_a_ticket(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys, pool: Any) -> None:
    exam_id, site_id = await _exam_site(pg)
    ali, wx = await make_orders(pg, redis, exam_id, site_id, 2)
    form = alipay_form(keys, ali)
    headers, body = wechat_request(keys, wx)
    items = [runtime.verify_alipay(form), runtime.verify_wechat(headers, body)]
    first = await settle.settle(pool, HoldSeats(redis), items, EXPECTED)
    assert [o.result for o in first] == ["paid", "paid"]
    again = await settle.settle(pool, HoldSeats(redis), items, EXPECTED)
    assert [o.result for o in again] == ["duplicate", "duplicate"]
    rows = await pg.fetch("SELECT o.status, r.status AS reg, r.site_id, r.hold_expires_at, t.ticket_no, t.room,"
                          " t.seat_no FROM orders o JOIN registrations r ON r.id = o.registration_id "
                          "JOIN admission_tickets t ON t.registration_id = r.id "
                          "WHERE o.order_no = ANY($1::text[]) ORDER BY t.seat_no", [ali.order_no, wx.order_no])
    states = [(r["status"], r["reg"], r["site_id"], r["hold_expires_at"]) for r in rows]
    assert states == [("paid", "paid", site_id, None)] * 2
    assert [(r["room"], r["seat_no"]) for r in rows] == [(1, 1), (1, 2)]
    assert {o.ticket_no for o in first} == {r["ticket_no"] for r in rows}
    assert all(t.startswith(f"{exam_id:04d}11{site_id:06d}") for t in (o.ticket_no for o in first))
    assert await pg.fetchval("SELECT count(*) FROM payment_notifications WHERE order_no = ANY($1::text[])",
                             [ali.order_no, wx.order_no]) == 2
    held = await redis.hgetall(qkeys.holds(exam_id))
    assert held == {str(ali.registration_id).encode(): str(site_id).encode(),
                    str(wx.registration_id).encode(): str(site_id).encode()}
    assert await redis.zcard(qkeys.hold_expiry(exam_id)) == 0  # permanent: the sweeper never frees them
    assert int(await redis.get(qkeys.site_left(exam_id, site_id))) == 0


async def test_mismatches_and_bad_signatures_are_rejected_and_recorded(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys, pool: Any) -> None:
    exam_id, site_id = await _exam_site(pg)
    a, b, c = await make_orders(pg, redis, exam_id, site_id, 3, providers=("alipay",))
    forged = alipay_form(keys, a)
    forged["total_amount"] = "0.01"  # changed after signing
    items = [runtime.verify_alipay(forged),
             runtime.verify_alipay(alipay_form(keys, b, amount_fen=b.amount_fen - 1)),
             runtime.verify_alipay(alipay_form(keys, c, app_id="2021999999999999"))]
    outcomes = await settle.settle(pool, HoldSeats(redis), items, EXPECTED)
    assert [(o.result, o.reason) for o in outcomes] == [
        ("rejected", "bad_signature"), ("rejected", "amount_mismatch"), ("rejected", "app_id_mismatch")]
    assert not any(o.acknowledged for o in outcomes)
    recorded = await pg.fetch("SELECT outcome, reason, event_id FROM payment_notifications "
                              "WHERE outcome = 'rejected' ORDER BY id DESC LIMIT 3")
    assert {(r["outcome"], r["reason"]) for r in recorded} == {
        ("rejected", "bad_signature"), ("rejected", "amount_mismatch"), ("rejected", "app_id_mismatch")}
    assert all(r["event_id"].startswith("rejected:") for r in recorded)
    assert await pg.fetchval("SELECT count(*) FROM orders WHERE order_no = ANY($1::text[]) AND status = 'pending'",
                             [a.order_no, b.order_no, c.order_no]) == 3
    # the ledger keeps a summary of a forgery, not what was sent
    sent = urlencode(forged).encode()
    digest = hashlib.sha256(sent).hexdigest()
    (summary,) = await pg.fetch("SELECT payload FROM payment_notifications WHERE reason = 'bad_signature' "
                                "AND payload ->> 'sha256' = $1", digest)
    assert summary["payload"] == {"sender": "", "size_bytes": len(sent), "sha256": digest,
                                  "prefix": sent[:512].decode(), "unrecorded_before": 0}
    # the same forgery again within the interval is only counted, still rejected
    again = runtime.verify_alipay(forged)
    assert not again.record
    (outcome,) = await settle.settle(pool, HoldSeats(redis), [again], EXPECTED)
    assert outcome.result == "rejected"
    assert await pg.fetchval("SELECT count(*) FROM payment_notifications WHERE reason = 'bad_signature' "
                             "AND payload ->> 'sha256' = $1", digest) == 1


async def test_a_late_payment_ends_refund_pending(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys, pool: Any) -> None:
    exam_id, site_id = await _exam_site(pg)
    now = utcnow()
    (late,) = await make_orders(pg, redis, exam_id, site_id, 1, expires_at=now - timedelta(minutes=1))
    (closed,) = await make_orders(pg, redis, exam_id, site_id, 1)
    await pg.execute("UPDATE orders SET status = 'closed' WHERE order_no = $1", closed.order_no)
    (full,) = await make_orders(pg, redis, exam_id, site_id, 1, seats=0)
    outcomes = await settle.settle(pool, HoldSeats(redis), [
        runtime.verify_alipay(alipay_form(keys, late, paid_at=now)),
        runtime.verify_alipay(alipay_form(keys, closed)),
        runtime.verify_alipay(alipay_form(keys, full))], EXPECTED)
    assert [(o.result, o.reason) for o in outcomes] == [
        ("refund_pending", "order_expired"), ("refund_pending", "order_closed"), ("refund_pending", "seat_released")]
    assert all(o.acknowledged for o in outcomes)
    statuses = await pg.fetch("SELECT status FROM orders WHERE order_no = ANY($1::text[])",
                              [late.order_no, closed.order_no, full.order_no])
    assert {r["status"] for r in statuses} == {"refund_pending"}
    assert await pg.fetchval("SELECT count(*) FROM admission_tickets t JOIN orders o USING (registration_id) "
                             "WHERE o.order_no = ANY($1::text[])", [late.order_no, closed.order_no, full.order_no]) == 0
    listed = await settle.refunds(pool, limit=10)
    assert {r["order_no"] for r in listed} >= {late.order_no, closed.order_no, full.order_no}


async def test_one_event_twice_in_a_group_and_a_second_trade(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys, pool: Any) -> None:
    exam_id, site_id = await _exam_site(pg)
    (order,) = await make_orders(pg, redis, exam_id, site_id, 1, providers=("wechat",))
    headers, body = wechat_request(keys, order)
    second_headers, second_body = wechat_request(keys, order)  # another trade for the same order
    outcomes = await settle.settle(pool, HoldSeats(redis), [runtime.verify_wechat(headers, body),
                                                            runtime.verify_wechat(headers, body),
                                                            runtime.verify_wechat(second_headers, second_body)],
                                   EXPECTED)
    assert [(o.result, o.reason) for o in outcomes] == [
        ("paid", None), ("duplicate", None), ("refund_pending", "second_payment")]
    assert await pg.fetchval("SELECT status FROM orders WHERE order_no = $1", order.order_no) == "paid"
    assert await pg.fetchval("SELECT count(*) FROM admission_tickets WHERE registration_id = $1",
                             order.registration_id) == 1


async def test_group_committer_answers_each_with_its_own_outcome(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys) -> None:
    import asyncio

    exam_id, site_id = await _exam_site(pg)
    orders = await make_orders(pg, redis, exam_id, site_id, 40, providers=("alipay",))
    forms = [alipay_form(keys, o) for o in orders]
    forms[7]["total_amount"] = "1.00"
    outcomes = await asyncio.gather(*(runtime.committer.submit(runtime.verify_alipay(f)) for f in forms))
    assert [o.result for o in outcomes].count("paid") == 39
    assert outcomes[7].result == "rejected"
    assert runtime.committer.groups < 40  # they were grouped
    assert runtime.committer.settled == 40


async def test_text_postgresql_refuses_is_stored_escaped_and_the_group_settles(
        pg: asyncpg.Connection, redis: aioredis.Redis, runtime: PaymentsRuntime, keys: PaymentKeys, pool: Any) -> None:
    import dataclasses

    exam_id, site_id = await _exam_site(pg)
    plain, with_nul, with_surrogate = await make_orders(pg, redis, exam_id, site_id, 3,
                                                              providers=("alipay", "wechat", "wechat"))
    nul = runtime.verify_wechat(*wechat_request(keys, with_nul, description="考试\x00报名费"))
    headers, body = wechat_request(keys, with_surrogate)
    verified = runtime.verify_wechat(headers, body).notice
    surrogate = dataclasses.replace(verified, payload={**verified.payload, "summary": "a\ud800b"})
    items = [runtime.verify_alipay(alipay_form(keys, plain)), nul,
             settle.Incoming("wechat", surrogate, None, surrogate.payload)]
    outcomes = await settle.settle(pool, HoldSeats(redis), items, EXPECTED)
    assert [o.result for o in outcomes] == ["paid", "paid", "paid"]
    stored = dict(await pg.fetch("SELECT order_no, payload FROM payment_notifications WHERE order_no = ANY($1::text[])",
                                 [with_nul.order_no, with_surrogate.order_no]))
    assert stored[with_nul.order_no]["resource"]["description"] == "考试\\u0000报名费"
    assert stored[with_surrogate.order_no]["summary"] == "a\ufffdb"
