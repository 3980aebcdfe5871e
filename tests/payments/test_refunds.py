"""Refund rows against real PostgreSQL: made once per trade, claimed by one worker at a time, retried within a
budget, executed again by an operator, notified once; made by settling a late payment; backfilled."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db
from core.timeutil import utcnow
from payments import alipay, refunds, settle
from payments.errors import RefundFinished, RefundInvalid, RefundNotFound
from payments.keys import PaymentKeys
from payments.notice import RefundNotice
from payments.orders import new_order_no
from payments.runtime import PaymentsRuntime
from queueing import keys as qkeys
from queueing.seats import HoldSeats
from tests.factories import make_exam
from tests.gateway.seat_stack import make_candidates, make_registrations

FEE_FEN = 5600
MCH_ID = "1900000001"
EXPECTED = settle.Expected(app_ids={"alipay": "2021000000000001", "wechat": "wx00000000000000e1"},
                           merchant_ids={"alipay": "2088000000000001", "wechat": MCH_ID})


class _Settings:
    alipay_app_id = "2021000000000001"
    alipay_seller_id = "2088000000000001"
    wechat_app_id = "wx00000000000000e1"
    wechat_mch_id = MCH_ID
    alipay_url = wechat_url = public_url = "http://127.0.0.1:9"
    notify_group_max = 64
    notify_rejected_interval_s = 60.0
    notify_rejected_rows_max = 100


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    made = await db.create_pool(db.PoolSettings(pg_dsn, 2, 6))
    try:
        yield made
    finally:
        await made.close()


async def orders(pg: asyncpg.Connection, count: int, *, status: str = "closed", provider: str = "alipay",
                 expires_in: timedelta = timedelta(minutes=-1), trade: bool = False) -> list[str]:
    """``count`` orders of approved registrations (each paid by its own trade when ``trade``)."""
    exam_id = await make_exam(pg, sites=[("11", 10)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    registrations = await make_registrations(pg, exam_id, await make_candidates(pg, count), status="approved")
    await pg.execute("UPDATE registrations SET site_id = $2 WHERE id = ANY($1::bigint[])", registrations, site_id)
    now = utcnow()
    numbers = [new_order_no(now) for _ in registrations]
    await pg.executemany(
        "INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at, status, provider_trade_no,"
        " paid_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [(n, r, provider, FEE_FEN, now + expires_in, status, f"T{n}" if trade else None,
          now if status == "paid" else None) for n, r in zip(numbers, registrations, strict=True)])
    return numbers


async def make(pool: asyncpg.Pool, order_no: str, trade_no: Any = ..., **fields: Any) -> str:
    """A refund of ``order_no``'s trade ``T<order_no>`` (or ``trade_no``; None: the order's paid trade)."""
    args: dict[str, Any] = {"order_no": order_no, "trade_no": f"T{order_no}" if trade_no is ... else trade_no,
                            "provider": "alipay",
                            "amount_fen": FEE_FEN, "reason": "order_closed", "requested_by": "system", **fields}
    async with pool.acquire() as conn, conn.transaction():
        return await refunds.request_refund(conn, **args)


async def test_a_refund_is_made_once_per_trade_of_an_order(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    first, second = await orders(pg, 2, status="paid", trade=True)
    made = await make(pool, first)
    assert re.fullmatch(r"RF[0-9]{24}", made)
    assert await make(pool, first) == made  # again: the same refund
    assert await make(pool, first, trade_no="T-another") != made  # another trade of the order: its own
    # Without a trade number, the order's paid trade: the same refund as above.
    assert await make(pool, first, trade_no=None, reason="cancellation", requested_by="ops") == made
    cancelled = await make(pool, second, reason="cancellation", requested_by="ops")
    row = await pg.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", cancelled)
    assert (row["provider_trade_no"], row["status"], row["requested_by"], row["attempts"]) == (
        f"T{second}", "pending", "ops", 0)
    assert row["next_attempt_at"] is not None  # due: the worker sends it
    assert await pg.fetchval("SELECT count(*) FROM refund_events WHERE refund_id = $1 AND kind = 'created'",
                             made) == 1


@pytest.mark.parametrize(("fields", "problem"), [
    ({"reason": "because"}, "reason"), ({"provider": "paypal"}, "provider"), ({"amount_fen": 0}, "amount_fen"),
    ({"requested_by": ""}, "requested_by")])
async def test_a_bad_refund_is_refused_and_nothing_written(pg: asyncpg.Connection, pool: asyncpg.Pool,
                                                           fields: dict[str, Any], problem: str) -> None:
    (order_no,) = await orders(pg, 1, status="paid", trade=True)
    with pytest.raises(RefundInvalid, match=problem):
        await make(pool, order_no, **fields)
    (unpaid,) = await orders(pg, 1)
    with pytest.raises(RefundInvalid, match="no paid trade"):
        await make(pool, unpaid, trade_no=None)
    assert await pg.fetchval("SELECT count(*) FROM refunds WHERE order_no = ANY($1::text[])",
                             [order_no, unpaid]) == 0


async def test_concurrent_workers_claim_each_refund_once(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    numbers = await orders(pg, 12, status="paid", trade=True)
    ids = {await make(pool, n) for n in numbers}
    claims = await asyncio.gather(*(refunds.claim(pool, limit=5, lease_s=60) for _ in range(4)))
    taken = [c.refund_id for claim in claims for c in claim if c.refund_id in ids]
    assert sorted(taken) == sorted(ids)  # every due refund claimed, none twice
    assert {c.total_fen for claim in claims for c in claim if c.refund_id in ids} == {FEE_FEN}
    assert [c for c in await refunds.claim(pool, limit=50, lease_s=60) if c.refund_id in ids] == []  # leased
    later = utcnow() + timedelta(seconds=61)
    assert {c.refund_id for c in await refunds.claim(pool, limit=50, lease_s=60, now=later)} >= ids


async def test_a_failing_refund_backs_off_then_waits_for_an_operator(pg: asyncpg.Connection,
                                                                    pool: asyncpg.Pool) -> None:
    (order_no,) = await orders(pg, 1, status="paid", trade=True)
    refund_id = await make(pool, order_no)
    policy = {"max_attempts": 2, "retry_s": 30.0, "query_after_s": 60.0}
    moment = utcnow() + timedelta(seconds=1)
    for attempt in (1, 2):
        (claimed,) = [c for c in await refunds.claim(pool, limit=100, lease_s=60, now=moment)
                      if c.refund_id == refund_id]
        assert await refunds.record_attempt(pool, claimed, {"try": attempt}, now=moment) == attempt
        await refunds.record_answer(pool, claimed, kind="answer", state="failed", status="ProviderRejected",
                                    provider_refund_no=None, reply={}, error="NOT_ENOUGH: 余额不足", now=moment,
                                    **policy)
        row = await pg.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
        assert (row["status"], row["attempts"], row["last_error"], row["lease_id"]) == (
            "failed", attempt, "NOT_ENOUGH: 余额不足", None)
        if attempt == 1:
            assert row["next_attempt_at"] == moment + timedelta(seconds=30)
            moment += timedelta(seconds=31)
        else:
            assert row["next_attempt_at"] is None  # the budget is spent: an operator executes it again
    assert await refunds.record_attempt(pool, claimed, {}, now=moment) is None  # a lease not held sends nothing

    shown = await refunds.queue(pool, refund_id, "ops", now=moment)
    assert (shown["status"], shown["attempts"], shown["next_attempt_at"] is not None) == ("failed", 2, True)
    assert [e["kind"] for e in shown["events"]] == ["created", "request", "answer", "request", "answer", "queued"]
    assert shown["events"][-1]["actor"] == "ops"
    (claimed,) = [c for c in await refunds.claim(pool, limit=100, lease_s=60, now=moment) if c.refund_id == refund_id]
    await refunds.record_attempt(pool, claimed, {}, now=moment)
    await refunds.record_answer(pool, claimed, kind="answer", state="succeeded", status="10000",
                                provider_refund_no=None, reply={"code": "10000"}, now=moment, **policy)
    row = await pg.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
    assert (row["status"], row["attempts"], row["next_attempt_at"], row["last_error"]) == ("succeeded", 3, None, None)
    with pytest.raises(RefundFinished):
        await refunds.queue(pool, refund_id, "ops")
    with pytest.raises(RefundNotFound):
        await refunds.queue(pool, "RF000000000000000000000000", "ops")


def notice(refund_id: str, order_no: str, *, status: str = "SUCCESS", event_id: str = "evt-1",
           amount_fen: int = FEE_FEN, merchant_id: str = MCH_ID) -> RefundNotice:
    return RefundNotice(provider="wechat", event_id=event_id, event_type=f"REFUND.{status}", refund_no=refund_id,
                        provider_refund_no="50300000000000000000000000001", order_no=order_no,
                        trade_no=f"T{order_no}", amount_fen=amount_fen, total_fen=FEE_FEN, merchant_id=merchant_id,
                        status=status, payload={"id": event_id})


async def test_a_refund_notification_is_recorded_once(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    done, closed = await orders(pg, 2, status="paid", trade=True, provider="wechat")
    refund_id = await make(pool, done, provider="wechat")
    outcomes = await asyncio.gather(*(refunds.record_notification(pool, notice(refund_id, done), merchant_id=MCH_ID)
                                      for _ in range(3)))
    assert sorted(o.result for o in outcomes) == ["duplicate", "duplicate", "succeeded"]
    assert all(o.acknowledged for o in outcomes)
    row = await pg.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", refund_id)
    assert (row["status"], row["provider_refund_no"], row["next_attempt_at"]) == (
        "succeeded", "50300000000000000000000000001", None)
    assert await pg.fetchval("SELECT count(*) FROM refund_events WHERE refund_id = $1 AND kind = 'notification'",
                             refund_id) == 1

    other = await make(pool, closed, provider="wechat")
    assert await refunds.record_notification(pool, notice(other, closed, amount_fen=1, event_id="evt-2"),
                                             merchant_id=MCH_ID) == ("rejected", "amount_mismatch")
    assert await refunds.record_notification(pool, notice(other, closed, event_id="evt-3", merchant_id="19"),
                                             merchant_id=MCH_ID) == ("rejected", "merchant_mismatch")
    assert await refunds.record_notification(pool, notice("RF000000000000000000000000", closed, event_id="evt-4"),
                                             merchant_id=MCH_ID) == ("rejected", "unknown_refund")
    assert await refunds.record_notification(pool, notice(other, closed, status="CLOSED", event_id="evt-5"),
                                             merchant_id=MCH_ID) == ("failed", None)
    row = await pg.fetchrow("SELECT * FROM refunds WHERE refund_id = $1", other)
    assert (row["status"], row["last_error"], row["next_attempt_at"]) == ("failed", "REFUND.CLOSED", None)


async def test_settling_a_late_payment_makes_its_refund_in_the_same_transaction(
        pg: asyncpg.Connection, pool: asyncpg.Pool, redis: aioredis.Redis, keys: PaymentKeys) -> None:
    (late,) = await orders(pg, 1, status="pending")
    (paid,) = await orders(pg, 1, status="pending", expires_in=timedelta(minutes=30))
    site = await pg.fetchrow("SELECT r.exam_id, r.site_id FROM orders o JOIN registrations r"
                             " ON r.id = o.registration_id WHERE o.order_no = $1", paid)
    await redis.set(qkeys.site_left(site["exam_id"], site["site_id"]), 5)
    runtime = PaymentsRuntime(_Settings(), keys, pool, redis, seats=HoldSeats(redis))
    try:
        def form(order_no: str, trade_no: str) -> dict[str, str]:
            return alipay.build_notification(order_no=order_no, trade_no=trade_no, amount_fen=FEE_FEN,
                                             app_id="2021000000000001", seller_id="2088000000000001", keys=keys)

        late_form = form(late, "2026LATE")
        outcomes = await settle.settle(pool, HoldSeats(redis), [
            runtime.verify_alipay(late_form), runtime.verify_alipay(form(paid, "2026FIRST"))], EXPECTED)
        assert [(o.result, o.reason) for o in outcomes] == [("refund_pending", "order_expired"), ("paid", None)]
        # A second trade for the paid order, and the late payment found again by a query: one refund per trade.
        again = {**late_form, "notify_id": secrets.token_hex(16)}
        again["sign"] = alipay.sign(again, keys.alipay_platform_private)
        outcomes = await settle.settle(pool, HoldSeats(redis), [
            runtime.verify_alipay(form(paid, "2026SECOND")), runtime.verify_alipay(again)], EXPECTED)
        assert [(o.result, o.reason) for o in outcomes] == [("refund_pending", "second_payment"),
                                                            ("refund_pending", "order_closed")]
    finally:
        await runtime.aclose()
    rows = await pg.fetch("SELECT order_no, provider_trade_no, reason, amount_fen, event_id, requested_by, status"
                          " FROM refunds WHERE order_no = ANY($1::text[]) ORDER BY provider_trade_no", [late, paid])
    assert [tuple(r.values()) for r in rows] == [
        (late, "2026LATE", "order_expired", FEE_FEN, late_form["notify_id"], "system", "pending"),
        (paid, "2026SECOND", "second_payment", FEE_FEN, rows[1]["event_id"], "system", "pending")]
    assert await pg.fetchval("SELECT status FROM orders WHERE order_no = $1", paid) == "paid"
    listed = {r["order_no"]: r for r in await settle.refunds(pool, limit=100)}
    assert listed[late]["id"] is not None and listed[late]["event_id"] == late_form["notify_id"]
    assert (listed[paid]["order_status"], listed[paid]["trade_no"]) == ("paid", "2026SECOND")


async def test_the_migration_backfills_payments_recorded_refund_pending(pg: asyncpg.Connection) -> None:
    (order_no,) = await orders(pg, 1)
    await pg.execute("UPDATE orders SET status = 'refund_pending' WHERE order_no = $1", order_no)
    for event_id, trade in (("n-1", "2026OLD"), ("n-2", "2026OLD")):  # the same trade notified twice
        await pg.execute(
            "INSERT INTO payment_notifications (provider, event_id, order_no, amount_fen, app_id, outcome, reason,"
            " payload) VALUES ('alipay', $1, $2, $3, 'app', 'refund_pending', 'order_closed', $4)",
            f"{order_no}-{event_id}", order_no, FEE_FEN, {"trade_no": trade})
    sql = resources.files("core.migrations").joinpath("0005_refunds.sql").read_text(encoding="utf-8")
    backfill = sql[sql.index("WITH waiting AS"):]
    await pg.execute(backfill)
    await pg.execute(backfill)  # a second run finds the refund made
    rows = await pg.fetch("SELECT * FROM refunds WHERE order_no = $1", order_no)
    assert [(r["provider_trade_no"], r["reason"], r["status"], r["next_attempt_at"], r["requested_by"],
             r["event_id"]) for r in rows] == [("2026OLD", "order_closed", "pending", None, "system",
                                                f"{order_no}-n-1")]
    assert re.fullmatch(r"RF[0-9]{24}", rows[0]["refund_id"])
