"""Refunds: the rows that say money must go back, and their ledger.

A refund is made in the transaction that decides it (``request_refund``: a payment settled
``refund_pending`` in ``payments.settle``, a cancellation an operator approved), one per trade
of an order, and sent by the worker (``payments.refunder``) under its id. Its life:

1. ``pending`` with ``next_attempt_at`` set: due. The worker claims due rows with
   ``FOR UPDATE SKIP LOCKED`` and a lease (``lease_id``, ``lease_until``), so two workers never
   send one refund at once, and a worker that died mid-send leaves it to another when the lease
   ends;
2. ``requested``: the request is recorded (``refund_events`` kind ``request``) and the status
   set *before* it is sent, so a refund whose answer was lost is asked about before it is sent
   again; either way it goes under the same id, which the provider refunds once;
3. ``succeeded`` (final), or ``requested`` again while WeChat Pay processes it (its notification
   or a later query ends it), or ``failed``: retried with a doubling wait until
   ``max_attempts`` sends, then left for an operator (``queue``: execute it again).

Every request, answer, notification and operator action is a ``refund_events`` row; a
notification is recorded once however often the provider sends it (unique provider event id).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson

from core.db import Conn
from core.errors import storage_errors
from core.timeutil import iso_local, utcnow
from payments.errors import RefundFinished, RefundInvalid, RefundNotFound
from payments.notice import RefundNotice

__all__ = [
    "STATUSES", "Claimed", "Wanted", "claim", "get_refund", "list_refunds", "new_refund_id", "queue",
    "record_answer", "record_attempt", "record_notification", "record_query_error", "request_refund",
    "request_refunds",
]  # fmt: skip

PROVIDERS = ("alipay", "wechat")
STATUSES = ("pending", "requested", "succeeded", "failed")
SYSTEM = "system"
REASON = re.compile(r"(order_closed|order_expired|second_payment|seat_released|cancellation|registration_[a-z_]{1,32})")
EVENTS_SHOWN = 200


def new_refund_id(now: datetime) -> str:
    """``RF`` + UTC date and time to the second + 10 random digits: unique, sortable, not guessable."""
    return f"RF{now:%Y%m%d%H%M%S}{secrets.randbelow(10**10):010d}"


class Wanted(NamedTuple):
    """A refund to make: which trade of which order, how much, why, who asked."""

    order_no: str
    trade_no: str | None  # None: the order's paid trade
    provider: str
    amount_fen: int
    reason: str
    requested_by: str
    event_id: str | None = None  # the payment notification that made it, if one did


_ORDER_TRADES = "SELECT order_no, provider_trade_no FROM orders WHERE order_no = ANY($1::text[])"
_INSERT = """
INSERT INTO refunds (refund_id, order_no, provider, provider_trade_no, amount_fen, reason, event_id, requested_by,
                     next_attempt_at, created_at, updated_at)
SELECT v.refund_id, v.order_no, v.provider, v.trade_no, v.amount_fen, v.reason, v.event_id, v.requested_by, $9, $9, $9
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[])
       AS v(refund_id, order_no, provider, trade_no, amount_fen, reason, event_id, requested_by)
ON CONFLICT ON CONSTRAINT refunds_trade_key DO NOTHING
RETURNING refund_id
"""
_EXISTING = """
SELECT order_no, provider_trade_no, refund_id FROM refunds
 WHERE (order_no, provider_trade_no) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
_EVENTS = """
INSERT INTO refund_events (refund_id, kind, provider, event_id, outcome, detail, actor, payload, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::jsonb[], $9::timestamptz[])
"""


def _checked(wanted: Wanted) -> None:
    if wanted.provider not in PROVIDERS:
        raise RefundInvalid(f"unknown provider {wanted.provider!r}")
    if isinstance(wanted.amount_fen, bool) or not isinstance(wanted.amount_fen, int) or wanted.amount_fen <= 0:
        raise RefundInvalid(f"amount_fen must be a positive integer, got {wanted.amount_fen!r}")
    if not REASON.fullmatch(wanted.reason):
        raise RefundInvalid(f"unknown refund reason {wanted.reason!r}")
    if not wanted.requested_by or len(wanted.requested_by) > 100:
        raise RefundInvalid("requested_by must name who asked (1 to 100 characters)")


async def request_refunds(conn: Conn, wanted: Sequence[Wanted], *, now: datetime | None = None) -> list[str]:
    """Make the refunds ``wanted`` (inside the caller's transaction); their ids, in order.

    Idempotent on (order, trade): a refund already made for that trade of that order is
    returned, not made again. A refund without a trade number takes the order's paid trade.
    Raises ``RefundInvalid`` (nothing written) for a bad provider, amount or reason, or an
    order with no trade to refund.
    """
    if not wanted:
        return []
    moment = now or utcnow()
    for item in wanted:
        _checked(item)
    missing = sorted({w.order_no for w in wanted if not w.trade_no})
    paid = {r["order_no"]: r["provider_trade_no"] for r in await conn.fetch(_ORDER_TRADES, missing)} if missing else {}
    trades = [w.trade_no or paid.get(w.order_no) for w in wanted]
    for item, trade in zip(wanted, trades, strict=True):
        if not trade:
            raise RefundInvalid(f"order {item.order_no} has no paid trade to refund")
    ids = [new_refund_id(moment) for _ in wanted]
    made = {row["refund_id"] for row in await conn.fetch(
        _INSERT, ids, [w.order_no for w in wanted], [w.provider for w in wanted], trades,
        [w.amount_fen for w in wanted], [w.reason for w in wanted], [w.event_id for w in wanted],
        [w.requested_by for w in wanted], moment)}
    found = {(r["order_no"], r["provider_trade_no"]): r["refund_id"] for r in await conn.fetch(
        _EXISTING, [w.order_no for w in wanted], trades)}
    new = [(i, w) for i, w in zip(ids, wanted, strict=True) if i in made]
    if new:
        await _events(conn, [(i, "created", None, None, "pending", w.reason, w.requested_by,
                              {"amount_fen": w.amount_fen, "event_id": w.event_id}) for i, w in new], moment)
    return [found[(w.order_no, trade)] for w, trade in zip(wanted, trades, strict=True)]


async def request_refund(conn: Conn, *, order_no: str, trade_no: str | None, provider: str, amount_fen: int,
                         reason: str, requested_by: str, event_id: str | None = None) -> str:
    """Make one refund inside the caller's transaction and return its id (the existing one for that trade).

    ``trade_no`` None refunds the order's paid trade; ``requested_by`` is the operator's name
    or ``"system"``; ``reason`` one of order_closed, order_expired, second_payment,
    seat_released, cancellation, registration_<status>. The worker sends it at once.
    """
    (refund_id,) = await request_refunds(conn, [Wanted(order_no, trade_no, provider, amount_fen, reason,
                                                       requested_by, event_id)])
    return refund_id


EventRow = tuple[str, str, str | None, str | None, str | None, str | None, str, Mapping[str, Any]]


async def _events(conn: Conn, rows: Sequence[EventRow], at: datetime) -> None:
    """Ledger rows: (refund id, kind, provider, event id, outcome, detail, actor, payload)."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(_EVENTS, *columns[:7], [dict(p) for p in columns[7]], [at] * len(rows))


# --- what operators see ---------------------------------------------------------------------------------

_LIST = """
SELECT f.refund_id, f.order_no, f.provider, f.provider_trade_no, f.amount_fen, f.reason, f.event_id, f.status,
       f.attempts, f.next_attempt_at, f.last_error, f.provider_refund_no, f.requested_by, f.created_at,
       f.updated_at, f.finished_at, o.registration_id, o.status AS order_status, n.id AS notification_id,
       n.received_at
  FROM refunds f
  JOIN orders o ON o.order_no = f.order_no
  LEFT JOIN payment_notifications n ON n.provider = f.provider AND n.event_id = f.event_id
"""


def _shown(row: asyncpg.Record) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else iso_local(value)

    return {
        "refund_id": row["refund_id"], "status": row["status"], "attempts": row["attempts"],
        "last_error": row["last_error"], "next_attempt_at": when(row["next_attempt_at"]),
        "provider_refund_no": row["provider_refund_no"], "requested_by": row["requested_by"],
        "created_at": iso_local(row["created_at"]), "updated_at": iso_local(row["updated_at"]),
        "finished_at": when(row["finished_at"]),
        # What the list of refund_pending payments showed before refunds were executed:
        "id": row["notification_id"], "provider": row["provider"], "event_id": row["event_id"],
        "order_no": row["order_no"], "registration_id": row["registration_id"], "amount_fen": row["amount_fen"],
        "reason": row["reason"], "order_status": row["order_status"], "trade_no": row["provider_trade_no"],
        "received_at": iso_local(row["received_at"] or row["created_at"]),
    }


async def list_refunds(pool: asyncpg.Pool, *, limit: int = 100, status: str | None = None) -> list[dict[str, Any]]:
    """Refunds, newest first (only those in ``status`` when given), for the admin route and ``ctl refunds``."""
    async with storage_errors():
        rows = await pool.fetch(_LIST + " WHERE $2::text IS NULL OR f.status = $2"
                                        " ORDER BY f.created_at DESC, f.refund_id DESC LIMIT $1", limit, status)
    return [_shown(row) for row in rows]


async def get_refund(pool: asyncpg.Pool, refund_id: str) -> dict[str, Any]:
    """One refund with its ledger, oldest event first; ``RefundNotFound`` when there is none."""
    async with storage_errors():
        row = await pool.fetchrow(_LIST + " WHERE f.refund_id = $1", refund_id)
        if row is None:
            raise RefundNotFound(refund_id)
        events = await pool.fetch(
            "SELECT id, kind, provider, event_id, outcome, detail, actor, payload, at FROM refund_events"
            " WHERE refund_id = $1 ORDER BY id LIMIT $2", refund_id, EVENTS_SHOWN)
    shown = _shown(row)
    shown["events"] = [{**dict(e), "at": iso_local(e["at"])} for e in events]
    return shown


async def queue(pool: asyncpg.Pool, refund_id: str, actor: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Make the refund due now (an operator's "execute"): the worker sends it, or asks about it, next.

    A refund that gave up after its attempts gets one more; one being sent meanwhile is asked
    about afterwards. Raises ``RefundNotFound``, or ``RefundFinished`` when it succeeded already.
    """
    moment = now or utcnow()
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval("SELECT status FROM refunds WHERE refund_id = $1 FOR UPDATE", refund_id)
            if status is None:
                raise RefundNotFound(refund_id)
            if status == "succeeded":
                raise RefundFinished(refund_id)
            await conn.execute("UPDATE refunds SET next_attempt_at = $2, updated_at = $2 WHERE refund_id = $1",
                               refund_id, moment)
            await _events(conn, [(refund_id, "queued", None, None, status, "executed by an operator", actor, {})],
                          moment)
    return await get_refund(pool, refund_id)


# --- what the worker does ---------------------------------------------------------------------------------

class Claimed(NamedTuple):
    """A due refund the worker holds the lease of."""

    refund_id: str
    order_no: str
    provider: str
    trade_no: str
    amount_fen: int
    total_fen: int  # the order's amount: the trade's total
    reason: str
    status: str
    attempts: int
    lease_id: str


_CLAIM = """
WITH due AS (
    SELECT refund_id FROM refunds
     WHERE next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
     ORDER BY next_attempt_at, refund_id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE refunds f SET lease_id = $3, lease_until = $4
  FROM due, orders o
 WHERE f.refund_id = due.refund_id AND o.order_no = f.order_no
RETURNING f.refund_id, f.order_no, f.provider, f.provider_trade_no AS trade_no, f.amount_fen, o.amount_fen AS total_fen,
          f.reason, f.status, f.attempts
"""


async def claim(pool: asyncpg.Pool, *, limit: int, lease_s: float, now: datetime | None = None) -> list[Claimed]:
    """Take the lease of up to ``limit`` due refunds, those due longest first; rows another holds are skipped."""
    moment = now or utcnow()
    lease_id = secrets.token_hex(8)
    async with storage_errors():
        rows = await pool.fetch(_CLAIM, moment, limit, lease_id, moment + timedelta(seconds=lease_s))
    return sorted((Claimed(**dict(row.items()), lease_id=lease_id) for row in rows), key=lambda c: c.refund_id)


async def record_attempt(pool: asyncpg.Pool, refund: Claimed, request: Mapping[str, Any], *,
                         now: datetime | None = None) -> int | None:
    """Before sending: the refund ``requested``, one attempt more, the request in the ledger; the attempt's number.

    None when the lease was lost (the worker took too long, another took it over): send nothing.
    """
    moment = now or utcnow()
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            attempt = await conn.fetchval(
                "UPDATE refunds SET status = 'requested', attempts = attempts + 1, updated_at = $3"
                " WHERE refund_id = $1 AND lease_id = $2 AND status <> 'succeeded' RETURNING attempts",
                refund.refund_id, refund.lease_id, moment)
            if attempt is not None:
                await _events(conn, [(refund.refund_id, "request", refund.provider, None, None,
                                      f"attempt {attempt}", "worker", request)], moment)
    return attempt


_SUCCEEDED = """
UPDATE refunds SET status = 'succeeded', finished_at = $2, updated_at = $2, next_attempt_at = NULL, last_error = NULL,
       provider_refund_no = COALESCE($3, provider_refund_no), lease_id = NULL, lease_until = NULL
 WHERE refund_id = $1 AND status <> 'succeeded'
"""
_PROCESSING = """
UPDATE refunds SET status = 'requested', updated_at = $2, next_attempt_at = $4, last_error = NULL,
       provider_refund_no = COALESCE($3, provider_refund_no), lease_id = NULL, lease_until = NULL
 WHERE refund_id = $1 AND lease_id = $5 AND status <> 'succeeded'
"""
# The wait doubles from $5 at each attempt after the first, at most $7 (2^30 × a day still fits a double).
_FAILED = """
UPDATE refunds SET status = 'failed', updated_at = $2, last_error = $3, lease_id = NULL, lease_until = NULL,
       next_attempt_at = CASE WHEN attempts < $4 THEN $2::timestamptz + make_interval(
           secs => LEAST($5::float8 * 2 ^ LEAST(GREATEST(attempts - 1, 0), 30), $7::float8)) END
 WHERE refund_id = $1 AND lease_id = $6 AND status <> 'succeeded'
"""
RETRY_MAX_S = 3600.0


async def record_answer(pool: asyncpg.Pool, refund: Claimed, *, kind: str, state: str, status: str,
                        provider_refund_no: str | None, reply: Mapping[str, Any], error: str | None = None,
                        max_attempts: int, retry_s: float, query_after_s: float,
                        now: datetime | None = None) -> None:
    """After the provider answered (``kind`` answer) or was asked (``kind`` query): the refund moved, the ledger row.

    ``state`` succeeded → final; processing → asked about again after ``query_after_s``; failed
    (``error`` says why) → sent again after ``retry_s`` × 2^(attempts − 1) (at most an hour) while
    fewer than ``max_attempts`` were made, else left for an operator.
    """
    moment = now or utcnow()
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            if state == "succeeded":
                await conn.execute(_SUCCEEDED, refund.refund_id, moment, provider_refund_no)
            elif state == "processing":
                await conn.execute(_PROCESSING, refund.refund_id, moment, provider_refund_no,
                                   moment + timedelta(seconds=query_after_s), refund.lease_id)
            else:
                await conn.execute(_FAILED, refund.refund_id, moment, (error or status)[:500], max_attempts,
                                   min(retry_s, RETRY_MAX_S), refund.lease_id, RETRY_MAX_S)
            await _events(conn, [(refund.refund_id, kind, refund.provider, None, state, (error or status)[:500],
                                  "worker", _jsonable(reply))], moment)


async def record_query_error(pool: asyncpg.Pool, refund: Claimed, error: str, *, retry_s: float,
                             now: datetime | None = None) -> None:
    """Asking about a sent refund failed (provider unreachable): still ``requested``, asked again later."""
    moment = now or utcnow()
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE refunds SET last_error = $3, updated_at = $2, next_attempt_at = $4, lease_id = NULL,"
                " lease_until = NULL WHERE refund_id = $1 AND lease_id = $5 AND status <> 'succeeded'",
                refund.refund_id, moment, error[:500], moment + timedelta(seconds=min(retry_s, RETRY_MAX_S)),
                refund.lease_id)
            await _events(conn, [(refund.refund_id, "error", refund.provider, None, None, error[:500], "worker", {})],
                          moment)


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(value, default=str))
    return loaded


# --- notifications ------------------------------------------------------------------------------------------

class NotificationOutcome(NamedTuple):
    """What recording a refund notification did: succeeded | failed | duplicate | rejected (with why)."""

    result: str
    reason: str | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether the provider is told "received" (it stops resending)."""
        return self.result != "rejected"


_REFUND_ROW = """
SELECT f.refund_id, f.order_no, f.provider, f.provider_trade_no, f.amount_fen, f.status
  FROM refunds f WHERE f.refund_id = $1 FOR UPDATE
"""
_NOTIFIED = """
INSERT INTO refund_events (refund_id, kind, provider, event_id, outcome, detail, actor, payload, at)
VALUES ($1, 'notification', $2, $3, $4, $5, $2, $6, $7)
ON CONFLICT ON CONSTRAINT refund_events_notification_key DO NOTHING
RETURNING id
"""
_NOTIFIED_FAILED = """
UPDATE refunds SET status = 'failed', last_error = $3, updated_at = $2, next_attempt_at = NULL,
       provider_refund_no = COALESCE($4, provider_refund_no)
 WHERE refund_id = $1 AND status <> 'succeeded'
"""


def _notice_mismatch(notice: RefundNotice, row: asyncpg.Record, merchant_id: str) -> str | None:
    if notice.merchant_id != merchant_id:
        return "merchant_mismatch"
    if notice.provider != row["provider"]:
        return "provider_mismatch"
    if (notice.order_no, notice.trade_no) != (row["order_no"], row["provider_trade_no"]):
        return "trade_mismatch"
    if notice.amount_fen != row["amount_fen"]:
        return "amount_mismatch"
    return None


async def record_notification(pool: asyncpg.Pool, notice: RefundNotice, *, merchant_id: str,
                              now: datetime | None = None) -> NotificationOutcome:
    """Record a verified refund notification once and move its refund; the same event again changes nothing.

    REFUND.SUCCESS ends the refund ``succeeded``; ABNORMAL and CLOSED leave it ``failed`` for an
    operator (the provider will not refund that id again on its own). A notification of a refund
    we do not know, or that does not match it (merchant, trade, amount), is ``rejected``.
    """
    moment = now or utcnow()
    async with storage_errors():
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_REFUND_ROW, notice.refund_no)
            if row is None:
                return NotificationOutcome("rejected", "unknown_refund")
            mismatch = _notice_mismatch(notice, row, merchant_id)
            outcome = "rejected" if mismatch else ("succeeded" if notice.succeeded else "failed")
            inserted = await conn.fetchval(_NOTIFIED, row["refund_id"], notice.provider, notice.event_id, outcome,
                                           mismatch or notice.event_type, _jsonable(notice.payload), moment)
            if inserted is None:
                return NotificationOutcome("duplicate")
            if mismatch:
                return NotificationOutcome("rejected", mismatch)
            if notice.succeeded:
                await conn.execute(_SUCCEEDED, row["refund_id"], moment, notice.provider_refund_no)
            else:
                await conn.execute(_NOTIFIED_FAILED, row["refund_id"], moment, notice.event_type,
                                   notice.provider_refund_no)
    return NotificationOutcome(outcome)
