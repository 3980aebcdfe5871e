"""Orders: what an approved registration pays, one pending order at a time.

The amount is the registration's number of subjects × the exam's fee per subject, in
integer fen. An order lives as long as the seat hold it was made under (``expires_at`` is
the hold's expiry); asking again while it is pending returns the same order. A pending
order found past its expiry is closed and a new one made, so a late payment of the old
one ends ``refund_pending`` (see ``payments.settle``), never a second seat.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from core.errors import CoreError, NotFound, storage_errors
from core.timeutil import utcnow

PROVIDERS = ("alipay", "wechat")
# A permanent hold (a payment being settled) has no expiry; its order still needs one.
PERMANENT_HOLD_ORDER_TTL = timedelta(minutes=30)


class OrderRefused(CoreError):
    """The registration cannot get an order now (HTTP 409 with ``code``)."""

    def __init__(self, registration_id: int, code: str, message: str, status: str | None = None) -> None:
        super().__init__(f"registration {registration_id}: {code}")
        self.registration_id = registration_id
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Order:
    """One order as the candidate sees it."""

    order_no: str
    registration_id: int
    exam_id: int
    provider: str
    amount_fen: int
    status: str
    expires_at: datetime
    created: bool  # False: an existing pending order was returned


def new_order_no(now: datetime) -> str:
    """``EG`` + UTC date and time to the second + 16 random digits: unique, sortable, not guessable.

    32 characters, WeChat Pay's longest ``out_trade_no``. With 10 random digits, 1,000 orders in one
    second met each other once in 20,000 seconds, a peak hour's orders once in six hours; a test
    making 7,000 in one second hit it.
    """
    return f"EG{now:%Y%m%d%H%M%S}{secrets.randbelow(10**16):016d}"


_REGISTRATION = """
SELECT r.id, r.exam_id, r.status, cardinality(r.subjects) AS subjects, e.fee_per_subject_fen, e.name AS exam_name
  FROM registrations r JOIN exams e ON e.id = r.exam_id
 WHERE r.id = $1 AND r.candidate_id = $2
   FOR UPDATE OF r
"""
_PENDING = """
SELECT order_no, provider, amount_fen, status, expires_at FROM orders
 WHERE registration_id = $1 AND status = 'pending'
"""
_CLOSE = "UPDATE orders SET status = 'closed' WHERE order_no = $1 AND status = 'pending'"
_INSERT = """
INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at)
VALUES ($1, $2, $3, $4, $5)
"""


def _refuse(registration_id: int, status: str) -> OrderRefused:
    if status in ("draft", "under_review", "onsite_review", "rejected"):
        return OrderRefused(registration_id, "not_approved", "资格审核通过后才能缴费", status)
    if status == "paid":
        return OrderRefused(registration_id, "already_paid", "该报名已缴费", status)
    return OrderRefused(registration_id, "registration_inactive", "该报名已取消或过期，不能缴费", status)


async def open_order(
    pg: asyncpg.Pool,
    registration_id: int,
    candidate_id: int,
    provider: str,
    *,
    hold_expires_at: datetime | None,
    has_hold: bool,
    now: datetime | None = None,
) -> tuple[Order, str]:
    """The registration's pending order, made now if there is none; also the exam's name (the trade subject).

    ``has_hold`` / ``hold_expires_at``: the registration's seat hold as Redis has it (the
    caller reads it first); no live hold raises ``HoldRequired``-like ``OrderRefused``
    (``hold_required``). Raises ``NotFound`` for someone else's or an unknown registration.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    moment = now or utcnow()
    async with storage_errors():
        async with pg.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_REGISTRATION, registration_id, candidate_id)
            if row is None:
                raise NotFound("registration", registration_id)
            if row["status"] != "approved":
                raise _refuse(registration_id, row["status"])
            pending = await conn.fetchrow(_PENDING, registration_id)
            if pending is not None and pending["expires_at"] > moment:
                return Order(pending["order_no"], registration_id, row["exam_id"], pending["provider"],
                             pending["amount_fen"], "pending", pending["expires_at"], False), row["exam_name"]
            live = has_hold and (hold_expires_at is None or hold_expires_at > moment)
            if not live:
                raise OrderRefused(registration_id, "hold_required", "座位保留已失效，请重新选择考点后再缴费")
            if pending is not None:
                await conn.execute(_CLOSE, pending["order_no"])
            expires_at = hold_expires_at or moment + PERMANENT_HOLD_ORDER_TTL
            amount = row["subjects"] * row["fee_per_subject_fen"]
            order_no = new_order_no(moment)
            await conn.execute(_INSERT, order_no, registration_id, provider, amount, expires_at)
    return Order(order_no, registration_id, row["exam_id"], provider, amount, "pending", expires_at, True), \
        row["exam_name"]
