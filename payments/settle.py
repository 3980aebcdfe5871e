"""Settling payment notifications: the ledger row and the order's move in one transaction.

``settle`` takes a group of notifications — verified ones and ones already rejected
(bad signature, malformed) — and commits them together: **group commit**. Each gets its own
``Outcome``; the provider is answered only after the commit. Inside the transaction:

1. the orders named are locked (``FOR UPDATE``, in order-number order, so concurrent groups
   never deadlock), then the ledger is read for the events already recorded: an event seen
   before is a duplicate and changes nothing;
2. each new event is checked against its order (provider, app id, merchant, amount) and
   rejected with a reason when it does not match; only success statuses mean paid;
3. a payment of a pending order made before the order expired makes the seat permanent in
   Redis (``Seats.keep``: queueing's holds, handed in from above, take the seat again if the
   hold lapsed and a seat is left); the order becomes paid, the registration paid with its seat, and an
   admission ticket is allocated (``core.tickets``);
4. a payment that cannot have its seat — made after the order expired, for a closed order,
   or with the site full since — is recorded ``refund_pending``, and its refund made
   (``payments.refunds``: one per trade, sent by the worker; ``examgate ctl refunds``);
5. every new event gets a ledger row (``payment_notifications``, unique per provider and
   event id), rejected ones under ``rejected:<digest of the body>`` so a forged event can
   never occupy a real event's id; a notification that failed verification keeps only its
   summary (``payments.rejections``), and only when the runtime chose to record it.

Before the transaction every item is made storable (``payments.storable``: NUL escaped, lone
surrogates replaced), so a notification carrying them, signed or not, cannot fail its group.
If the transaction fails (PostgreSQL or Redis down), every notification of the group is
answered with a failure and the provider sends it again; a seat made permanent just before
a failed commit is made permanent again, harmlessly, on the retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from core import tickets
from core.db import Conn
from core.errors import StorageUnavailable, storage_errors
from core.timeutil import SHANGHAI, utcnow
from payments import refunds as refund_rows
from payments.seats import Seats
from payments.storable import is_storable, storable, storable_text

log = logging.getLogger("examgate.payments")

_INT4 = range(-2**31, 2**31)  # payment_notifications.amount_fen is an integer column
_NOTICE_TEXT = ("event_id", "order_no", "trade_no", "app_id", "merchant_id", "status")


class Incoming(NamedTuple):
    """One notification to settle: a verified ``notice``, or a ``reason`` it was rejected before."""

    provider: str
    notice: Any | None  # payments Notice (verified), None when rejected by the adapter
    reason: str | None  # why the adapter rejected it (bad_signature, malformed, ...)
    payload: Mapping[str, Any]  # what was received (a rejected one: its summary), for the ledger
    record: bool = True  # False: a rejection only counted, with no ledger row (payments.rejections)


class Outcome(NamedTuple):
    """What settling one notification did."""

    result: str  # paid | duplicate | accepted | refund_pending | rejected
    reason: str | None = None
    order_no: str | None = None
    ticket_no: str | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether the provider is told "received" (it stops retrying); rejections are not."""
        return self.result != "rejected"


class Expected(NamedTuple):
    """Our identity at each provider: notifications for anyone else are rejected."""

    app_ids: Mapping[str, str]  # provider → app id
    merchant_ids: Mapping[str, str]  # provider → merchant id (providers without one absent)


class _OrderRow(NamedTuple):
    order_no: str
    registration_id: int
    provider: str
    amount_fen: int
    status: str
    expires_at: datetime
    trade_no: str | None
    exam_id: int
    registration_status: str
    site_id: int | None


class _LedgerRow(NamedTuple):
    provider: str
    event_id: str
    order_no: str | None
    amount_fen: int | None
    app_id: str | None
    outcome: str
    reason: str | None
    payload: Mapping[str, Any]


_ORDERS = """
SELECT o.order_no, o.registration_id, o.provider, o.amount_fen, o.status, o.expires_at, o.provider_trade_no,
       r.exam_id, r.status AS registration_status, r.site_id
  FROM orders o JOIN registrations r ON r.id = o.registration_id
 WHERE o.order_no = ANY($1::text[])
 ORDER BY o.order_no
   FOR UPDATE OF o, r
"""
_SEEN = """
SELECT provider, event_id FROM payment_notifications
 WHERE (provider, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
_PAY_ORDERS = """
UPDATE orders AS o SET status = 'paid', paid_at = v.paid_at, provider_trade_no = v.trade_no
  FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS v(order_no, paid_at, trade_no)
 WHERE o.order_no = v.order_no AND o.status = 'pending'
"""
# The lifecycle's approved → paid, audited like every transition (core.lifecycle).
_PAY_REGISTRATIONS = """
WITH paid AS (
    UPDATE registrations AS r
       SET status = 'paid', site_id = v.site_id, hold_expires_at = NULL, updated_at = now(), version = r.version + 1
      FROM unnest($1::bigint[], $2::bigint[]) AS v(id, site_id)
     WHERE r.id = v.id
 RETURNING r.id, r.version)
INSERT INTO registration_events (registration_id, action, from_status, to_status, version, actor)
SELECT id, 'pay', 'approved', 'paid', version, 'system:payments' FROM paid
"""
_REFUND_ORDERS = """
UPDATE orders AS o SET status = 'refund_pending', provider_trade_no = COALESCE(o.provider_trade_no, v.trade_no)
  FROM unnest($1::text[], $2::text[]) AS v(order_no, trade_no)
 WHERE o.order_no = v.order_no AND o.status IN ('pending', 'closed')
"""
_LEDGER = """
INSERT INTO payment_notifications (provider, event_id, order_no, amount_fen, app_id, outcome, reason, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::jsonb[])
ON CONFLICT (provider, event_id) DO NOTHING
"""


def rejected_event_id(payload: Mapping[str, Any]) -> str:
    """The ledger id of a rejected notification: a digest of what was received, never its claimed id."""
    return "rejected:" + hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:40]


def paid_at(notice: Any, default: datetime) -> datetime:
    """When the candidate paid, as the provider states it (``gmt_payment`` / ``success_time``); else ``default``."""
    payload = notice.payload or {}
    raw = payload.get("gmt_payment") or payload.get("success_time")
    if not isinstance(raw, str):
        return default
    try:
        if "T" in raw:
            moment = datetime.fromisoformat(raw)
            # Without an offset it is Beijing time; a naive datetime would break the comparisons.
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=SHANGHAI)
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    except ValueError:
        return default


def storable_item(item: Incoming) -> Incoming:
    """``item`` as the ledger can hold it: itself unless a string in it cannot be stored (one serialisation)."""
    notice = item.notice
    fields = () if notice is None else tuple(getattr(notice, name) for name in _NOTICE_TEXT)
    # A verified item's payload is usually its notice's: checked once then.
    extra = None if notice is None or notice.payload is item.payload else notice.payload
    if is_storable((fields, item.payload, extra)):
        return item
    if notice is not None:
        texts = {name: storable_text(value) for name, value in zip(_NOTICE_TEXT, fields, strict=True)}
        notice = dataclasses.replace(notice, payload=storable(notice.payload), **texts)
    return item._replace(notice=notice, payload=storable(item.payload))


def _mismatch(notice: Any, order: _OrderRow | None, expected: Expected) -> str | None:
    """Why a verified notice does not belong to us or to its order; None when it does."""
    if order is None:
        return "unknown_order"
    if notice.provider != order.provider:
        return "provider_mismatch"
    if notice.app_id != expected.app_ids.get(notice.provider):
        return "app_id_mismatch"
    merchant = expected.merchant_ids.get(notice.provider)
    if merchant is not None and notice.merchant_id != merchant:
        return "seller_id_mismatch" if notice.provider == "alipay" else "merchant_mismatch"
    if notice.amount_fen != order.amount_fen:
        return "amount_mismatch"
    return None


class _Payment(NamedTuple):
    outcome_index: int  # in the group's outcomes (``index`` would shadow tuple.index)
    item: Incoming
    notice: Any
    paid_at: datetime


class _Group:
    """The decisions of one transaction, made item by item in arrival order."""

    def __init__(self, orders: dict[str, _OrderRow], seen: set[tuple[str, str]], expected: Expected,
                 now: datetime) -> None:
        self.orders = orders
        self.seen = seen
        self.expected = expected
        self.now = now
        self.outcomes: list[Outcome | None] = []  # None: a payment waiting for its seat
        self.ledger: list[_LedgerRow] = []
        self.to_pay: dict[str, _Payment] = {}
        self.refunds: list[tuple[str, str]] = []  # (order, trade) to mark refund_pending
        self.to_refund: list[refund_rows.Wanted] = []  # every payment that goes back, a paid order's too
        self.duplicates: list[tuple[int, int]] = []  # (outcome index, index of the event's first copy)
        self._first: dict[tuple[str, str], int] = {}

    def answer(self, outcome: Outcome | None, index: int | None = None) -> None:
        if index is None:
            self.outcomes.append(outcome)
        else:
            self.outcomes[index] = outcome

    def record(self, provider: str, event_id: str, notice: Any | None, outcome: str, reason: str | None,
               payload: Mapping[str, Any]) -> None:
        amount = None if notice is None or notice.amount_fen not in _INT4 else notice.amount_fen
        self.ledger.append(_LedgerRow(
            provider, event_id, None if notice is None else notice.order_no, amount,
            None if notice is None else notice.app_id, outcome, reason, payload))

    def decide(self, item: Incoming) -> None:
        notice = item.notice
        if notice is None:
            if item.record:
                self.record(item.provider, rejected_event_id(item.payload), None, "rejected", item.reason,
                            item.payload)
            self.answer(Outcome("rejected", item.reason))
            return
        key = (notice.provider, notice.event_id)
        if key in self.seen:
            self.answer(Outcome("duplicate", None, notice.order_no))
            return
        if key in self._first:  # the same event twice in one group: the later copy is a duplicate
            self.duplicates.append((len(self.outcomes), self._first[key]))
            self.answer(None)
            return
        self._first[key] = len(self.outcomes)
        order = self.orders.get(notice.order_no)
        reason = _mismatch(notice, order, self.expected)
        if reason is not None:
            self.record(notice.provider, rejected_event_id(item.payload), notice, "rejected", reason, item.payload)
            self.answer(Outcome("rejected", reason, notice.order_no))
            return
        assert order is not None
        if not notice.paid:  # a provider telling of a trade that is not (or no longer) paid
            reason = f"status_{notice.status}".lower()
            self.record(notice.provider, notice.event_id, notice, "accepted", reason, item.payload)
            self.answer(Outcome("accepted", reason, order.order_no))
            return
        self._paid(item, notice, order)

    def _paid(self, item: Incoming, notice: Any, order: _OrderRow) -> None:
        if order.status == "paid" or order.order_no in self.to_pay:
            earlier = self.to_pay.get(order.order_no)
            trade = earlier.notice.trade_no if earlier else order.trade_no
            if trade in (None, notice.trade_no):
                self.record(notice.provider, notice.event_id, notice, "accepted", "already_paid", item.payload)
                self.answer(Outcome("accepted", "already_paid", order.order_no))
            else:  # a second trade paid for one order: the money goes back
                self.refund(item, notice, order, "second_payment")
            return
        when = paid_at(notice, self.now)
        if order.status != "pending":
            self.refund(item, notice, order, "order_closed")
        elif when > order.expires_at:
            self.refund(item, notice, order, "order_expired")
        elif order.registration_status != "approved":
            self.refund(item, notice, order, f"registration_{order.registration_status}")
        else:
            self.to_pay[order.order_no] = _Payment(len(self.outcomes), item, notice, when)
            self.answer(None)

    def refund(self, item: Incoming, notice: Any, order: _OrderRow, reason: str, index: int | None = None) -> None:
        self.record(notice.provider, notice.event_id, notice, "refund_pending", reason, item.payload)
        self.answer(Outcome("refund_pending", reason, order.order_no), index)
        if order.status != "paid":
            self.refunds.append((order.order_no, notice.trade_no))
        self.to_refund.append(refund_rows.Wanted(order.order_no, notice.trade_no, notice.provider, notice.amount_fen,
                                                 reason, refund_rows.SYSTEM, notice.event_id))

    def finish(self) -> list[Outcome]:
        for index, first in self.duplicates:
            earlier = self.outcomes[first]
            assert earlier is not None
            self.outcomes[index] = earlier._replace(result="duplicate") if earlier.acknowledged else earlier
        assert all(outcome is not None for outcome in self.outcomes)
        return self.outcomes  # type: ignore[return-value]


async def settle(pool: asyncpg.Pool, seats: Seats, items: Sequence[Incoming], expected: Expected, *,
                 now: datetime | None = None) -> list[Outcome]:
    """Settle a group of notifications in one transaction; one ``Outcome`` per item, in order."""
    moment = now or utcnow()
    items = [storable_item(item) for item in items]
    verified = [item.notice for item in items if item.notice is not None]
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            orders = {row["order_no"]: _OrderRow(*row.values()) for row in
                      await conn.fetch(_ORDERS, sorted({n.order_no for n in verified}))} if verified else {}
            seen: set[tuple[str, str]] = set()
            if verified:
                seen = {(row["provider"], row["event_id"]) for row in await conn.fetch(
                    _SEEN, [n.provider for n in verified], [n.event_id for n in verified])}
            group = _Group(orders, seen, expected, moment)
            for item in items:
                group.decide(item)
            await _pay(conn, seats, group)
            if group.refunds:
                await conn.execute(_REFUND_ORDERS, [o for o, _ in group.refunds], [t for _, t in group.refunds])
            if group.to_refund:
                await refund_rows.request_refunds(conn, group.to_refund, now=moment)
            if group.ledger:
                rows = group.ledger
                await conn.execute(_LEDGER, [r.provider for r in rows], [r.event_id for r in rows],
                                   [r.order_no for r in rows], [r.amount_fen for r in rows],
                                   [r.app_id for r in rows], [r.outcome for r in rows], [r.reason for r in rows],
                                   [r.payload for r in rows])
    return group.finish()


async def _pay(conn: Conn, seats: Seats, group: _Group) -> None:
    """Seats made permanent, orders and registrations paid, tickets allocated, for ``group.to_pay``."""
    if not group.to_pay:
        return
    payments = list(group.to_pay.values())
    orders = [group.orders[p.notice.order_no] for p in payments]
    sites = await asyncio.gather(*(seats.keep(o.exam_id, o.registration_id, o.site_id) for o in orders))
    paid: list[tuple[_OrderRow, _Payment, int]] = []
    for payment, site in zip(payments, sites, strict=True):
        order = group.orders[payment.notice.order_no]
        if site is None:  # the hold lapsed and the site has filled up since
            group.refund(payment.item, payment.notice, order, "seat_released", payment.outcome_index)
            continue
        paid.append((order, payment, site))
        group.record(payment.notice.provider, payment.notice.event_id, payment.notice, "accepted", None,
                     payment.item.payload)
    if not paid:
        return
    await conn.execute(_PAY_ORDERS, [o.order_no for o, _, _ in paid], [p.paid_at for _, p, _ in paid],
                       [p.notice.trade_no for _, p, _ in paid])
    await conn.execute(_PAY_REGISTRATIONS, [o.registration_id for o, _, _ in paid], [s for _, _, s in paid])
    allocated = await tickets.allocate(conn, [tickets.Paid(o.registration_id, o.exam_id, s) for o, _, s in paid])
    numbers = {t.registration_id: t.ticket_no for t in allocated}
    missing = [o.registration_id for o, _, _ in paid if o.registration_id not in numbers]
    if missing:  # a registration paid before through another order keeps its ticket
        numbers.update({row["registration_id"]: row["ticket_no"] for row in await conn.fetch(
            "SELECT registration_id, ticket_no FROM admission_tickets WHERE registration_id = ANY($1::bigint[])",
            missing)})
    for order, payment, _ in paid:
        group.answer(Outcome("paid", None, order.order_no, numbers.get(order.registration_id)), payment.outcome_index)


class GroupCommitter:
    """Notifications arriving while a group is being committed wait and form the next group.

    One group is in flight per process; ``max_group`` bounds its size. A group that fails
    for any reason but the store being down is retried one notification at a time, so one
    poison notification cannot fail the others. ``max_group`` 1 disables grouping: each
    notification commits on its own, concurrently (the design this one is measured against).
    """

    def __init__(self, run: Callable[[Sequence[Incoming]], Awaitable[list[Outcome]]], max_group: int) -> None:
        self._run = run
        self.max_group = max_group
        self._waiting: list[tuple[Incoming, asyncio.Future[Outcome]]] = []
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        self.settled = 0

    async def submit(self, item: Incoming) -> Outcome:
        """Settle ``item`` with whatever else arrives meanwhile; its own outcome, after the commit."""
        if self.max_group <= 1:
            (outcome,) = await self._run([item])
            self.groups += 1
            self.settled += 1
            return outcome
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="payments-group-commit")
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.max_group], self._waiting[self.max_group:]
                await self._commit(batch)
        finally:
            self._task = None

    async def _commit(self, batch: list[tuple[Incoming, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1 or _store_down(exc):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            log.warning("group of %d notifications failed (%s); settling them one by one", len(batch), exc)
            for entry in batch:
                await self._commit([entry])
            return
        self.groups += 1
        self.settled += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


def _store_down(exc: BaseException) -> bool:
    return isinstance(exc, (StorageUnavailable, ConnectionError, TimeoutError, OSError))


async def refunds(pool: asyncpg.Pool, *, limit: int = 100) -> list[dict[str, Any]]:
    """Refunds (``payments.refunds.list_refunds``), newest first: kept for callers of the earlier list."""
    return await refund_rows.list_refunds(pool, limit=limit)
