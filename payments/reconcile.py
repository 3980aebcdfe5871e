"""Order reconciliation, run by the worker: no payment lost because a notification was.

Every ``interval_s`` the worker looks at pending orders that either had no settled
notification for ``query_after_s`` or have expired, and asks their provider:

- paid there → settled here exactly as a notification would be (``payments.settle``),
  recorded in the ledger under the event id ``query:<provider trade id>``;
- not paid and expired → the trade is closed at the provider (so it can no longer be paid),
  the order closed here, and the registration's lapsed hold released when the sweeper has
  not already done so; a payment racing the close is found by the next query and settled
  (or, once the order is closed, recorded ``refund_pending``);
- not paid, not expired → left alone until it expires.

Each pass takes the due orders asked least recently (``orders.last_queried_at``), so a
backlog of unpaid pending orders cannot hide a newer paid one from the queries.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.errors import storage_errors
from core.loops import pause, should_stop
from core.timeutil import utcnow
from payments import settle
from payments.clients import ProviderClient, Trade
from payments.errors import PaymentError, TradeAlreadyPaid
from payments.notice import Notice
from payments.seats import Seats

log = logging.getLogger("examgate.payments.reconcile")

BATCH = 200
CONCURRENCY = 8

_DUE = """
SELECT o.order_no, o.provider, o.expires_at, o.registration_id, r.exam_id
  FROM orders o JOIN registrations r ON r.id = o.registration_id
 WHERE o.status = 'pending' AND (o.created_at < $1 OR o.expires_at < $2)
 ORDER BY o.last_queried_at NULLS FIRST, o.created_at
 LIMIT $3
"""
_QUERIED = "UPDATE orders SET last_queried_at = $2 WHERE order_no = ANY($1::text[])"
_CLOSE = "UPDATE orders SET status = 'closed' WHERE order_no = $1 AND status = 'pending' RETURNING registration_id"


@dataclass
class ReconcileReport:
    """What one pass did."""

    checked: int = 0
    settled: int = 0
    closed: int = 0
    released: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def notice_from_trade(provider: str, trade: Trade) -> Notice:
    """A trade the provider reports paid, as a notice to settle (its own ledger event id)."""
    trade_no = trade.trade_no or ""
    return Notice(provider=provider, event_id=f"query:{trade_no}", order_no=trade.order_no, trade_no=trade_no,
                  amount_fen=trade.amount_fen, app_id=trade.app_id, merchant_id=trade.merchant_id,
                  status=trade.status, paid=trade.paid,
                  payload={"source": "trade_query", "order_no": trade.order_no, "trade_no": trade_no,
                           "amount_fen": trade.amount_fen, "app_id": trade.app_id,
                           "merchant_id": trade.merchant_id, "status": trade.status})


async def _one(pool: asyncpg.Pool, seats: Seats, client: ProviderClient, expected: settle.Expected,
               row: Any, now: datetime, report: ReconcileReport) -> None:
    provider, order_no = row["provider"], row["order_no"]
    trade = await client.query(provider, order_no)
    expired = row["expires_at"] <= now
    if trade is not None and not trade.paid and expired and not trade.closed:
        try:
            await client.close(provider, order_no)
        except TradeAlreadyPaid:  # paid just now: take the payment
            trade = await client.query(provider, order_no)
    if trade is not None and trade.paid:
        (outcome,) = await settle.settle(pool, seats, [settle.Incoming(provider, notice_from_trade(provider, trade),
                                                                       None, {})], expected)
        report.settled += outcome.result in ("paid", "refund_pending")
        if not outcome.acknowledged:
            log.warning("order %s: the provider's trade does not match it (%s)", order_no, outcome.reason)
        return
    if not expired:
        return
    async with storage_errors():
        closed = await pool.fetchval(_CLOSE, order_no)
    if closed is not None:
        report.closed += 1
        if await seats.release_lapsed(row["exam_id"], row["registration_id"]):
            report.released += 1


async def reconcile_orders(pool: asyncpg.Pool, seats: Seats, client: ProviderClient,
                           expected: settle.Expected, *, query_after_s: float,
                           now: datetime | None = None, batch: int = BATCH) -> ReconcileReport:
    """One pass over the due pending orders (at most ``batch``)."""
    moment = now or utcnow()
    async with storage_errors():
        rows = await pool.fetch(_DUE, moment - timedelta(seconds=query_after_s), moment, batch)
        await pool.execute(_QUERIED, [row["order_no"] for row in rows], moment)
    report = ReconcileReport(checked=len(rows))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded(row: Any) -> None:
        async with gate:
            try:
                await _one(pool, seats, client, expected, row, moment, report)
            except (PaymentError, OSError, asyncpg.PostgresError) as exc:
                report.errors += 1
                log.warning("order %s not reconciled: %s", row["order_no"], exc)

    await asyncio.gather(*(guarded(row) for row in rows))
    return report


async def run_reconciler(pool: asyncpg.Pool, seats: Seats, client: ProviderClient,
                         expected: settle.Expected, *, query_after_s: float, interval_s: float,
                         stop_event: asyncio.Event | None = None) -> None:
    """Reconcile orders every ``interval_s`` until stopped (the worker's ``payments`` task)."""
    while not should_stop(stop_event):
        report = await reconcile_orders(pool, seats, client, expected, query_after_s=query_after_s)
        if report.settled or report.closed or report.errors:
            log.info("orders reconciled: %s", report.as_dict())
        await pause(interval_s, stop_event)
