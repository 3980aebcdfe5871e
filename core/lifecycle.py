"""The registration lifecycle: its states, which action may move a registration from which state, and each transition.

::

    draft ──confirm──▶ approved ──pay──▶ paid ──(cancellation approved)──▶ cancelled
      ▲  │                ▲   │
      │  └─confirm──▶ under_review / onsite_review ──decide──▶ approved | rejected
      │                     │                                            │
      └──────withdraw───────┴───────────── edit / confirm again ─────────┘
    any state before payment ──cancel (放弃报名) / withdraw the commitment──▶ cancelled
    any state before payment ──(registration closed a grace period ago: the worker)──▶ expired

Every transition is one call that locks the registration's row, checks the action is allowed
from its state (``TransitionRefused``, HTTP 409 naming the state, otherwise), writes the new
state with ``version`` + 1 and one ``registration_events`` row, in one PostgreSQL transaction;
closing the pending order of a registration that stops being payable is part of it. What lives in
Redis (the seat right and the hold) follows the transition's answer (``Moved``), carrying its
version: see ``queueing.holds``. Payment (approved → paid) is written by ``payments.settle``
in its group commit, which checks the same state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.db import Conn, transaction
from core.errors import CoreError, NotFound, storage_errors
from core.photo_review import require_approved
from core.qualification import (
    MajorMismatch,
    Reason,
    archive_record,
    educations,
    load_rules,
    review,
    review_rule,
)
from core.registrations import RegistrationRequest
from core.timeutil import SHANGHAI, utcnow

__all__ = [
    "ACTIONS", "BEFORE_PAYMENT", "STATES", "STATUS_NAMES",
    "AlreadyDecided", "CommitmentNotAllowed", "CommitmentRequired", "MajorMismatch", "Moved", "StaleVersion",
    "TransitionRefused",
    "approve_cancellation", "cancel", "cancellations", "confirm", "decide", "due_for_expiry", "edit", "events",
    "expire", "refuse_cancellation",
    "sign_commitment", "withdraw", "withdraw_commitment",
]  # fmt: skip

PG = asyncpg.Pool | Conn

STATES = ("draft", "under_review", "onsite_review", "approved", "rejected", "paid", "cancelled", "expired")
STATUS_NAMES = {
    "draft": "待确认", "under_review": "网上审核中", "onsite_review": "待现场审核", "approved": "审核通过",
    "rejected": "审核未通过", "paid": "已缴费", "cancelled": "已放弃报名", "expired": "已过期",
}
BEFORE_PAYMENT = frozenset({"draft", "under_review", "onsite_review", "approved", "rejected"})
UNDER_REVIEW = frozenset({"under_review", "onsite_review"})

# action → (the states it may start from, what the candidate or operator reads it as, its error code)
ACTIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "edit": (frozenset({"draft", "rejected"}), "修改报名信息", "registration_locked"),
    "sign_commitment": (frozenset({"draft", "rejected"}), "签署告知承诺书", "invalid_state"),
    "confirm": (frozenset({"draft", "rejected"}), "确认报名信息", "cannot_confirm"),
    "decide": (UNDER_REVIEW, "作出审核决定", "already_decided"),
    "withdraw": (frozenset({"under_review", "onsite_review", "approved"}), "撤回确认", "withdraw_not_allowed"),
    "cancel": (BEFORE_PAYMENT | {"paid"}, "放弃报名", "invalid_state"),
    "withdraw_commitment": (BEFORE_PAYMENT, "撤回告知承诺", "invalid_state"),
    "approve_cancellation": (frozenset({"paid"}), "批准放弃报名并退费", "invalid_state"),
    "expire": (BEFORE_PAYMENT, "在报名结束后保留", "invalid_state"),
}
EXPIRY_ACTOR = "system:expiry"
# Which states a province's withdrawal rule lets a confirmation be withdrawn from.
WITHDRAW_FROM = {
    "until_payment": frozenset({"under_review", "onsite_review", "approved"}),
    "until_review": UNDER_REVIEW,
    "locked": frozenset(),
}


# -- errors ------------------------------------------------------------------------------------------


class TransitionRefused(CoreError):
    """The action is not allowed from the registration's state (HTTP 409; ``code`` per action, ``status`` now)."""

    def __init__(self, registration_id: int, action: str, status: str, *, why: str = "") -> None:
        _, verb, code = ACTIONS[action]
        super().__init__(f"registration {registration_id} is {status}: {action} refused")
        self.registration_id = registration_id
        self.action = action
        self.status = status
        self.code = code
        self.message = f"当前报名状态为“{STATUS_NAMES.get(status, status)}”，不能{verb}" + (f"：{why}" if why else "")


class CommitmentRequired(CoreError):
    """The commitment route is the candidate's and the commitment is not signed (HTTP 409 ``commitment_required``)."""

    code = "commitment_required"

    def __init__(self, registration_id: int) -> None:
        super().__init__(f"registration {registration_id} needs the signed commitment")
        self.registration_id = registration_id


class CommitmentNotAllowed(CoreError):
    """The candidate may not take the commitment route (HTTP 403 ``commitment_not_allowed``)."""

    code = "commitment_not_allowed"

    def __init__(self, registration_id: int, reason: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(f"registration {registration_id}: commitment not allowed ({reason})")
        self.registration_id = registration_id
        self.reason = reason
        self.record = record


class StaleVersion(CoreError):
    """The decision names a version the registration has moved past (HTTP 412)."""

    code = "precondition_failed"

    def __init__(self, registration_id: int, expected: int, current: int) -> None:
        super().__init__(f"registration {registration_id} is at version {current}, not {expected}")
        self.registration_id = registration_id
        self.expected = expected
        self.current = current


class AlreadyDecided(TransitionRefused):
    """A review decision on a registration that is no longer waiting for one (HTTP 409 ``already_decided``)."""


# -- transitions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moved:
    """A registration after a transition: where it was, where it is, at which version."""

    registration_id: int
    candidate_id: int
    exam_id: int
    province: str
    previous: str
    status: str
    version: int
    reasons: tuple[dict[str, str], ...] = ()
    changed: bool = True  # False: already there, nothing written (a repeated request)


_LOCK = """
SELECT id, candidate_id, exam_id, province, status, version, subjects, work_years, level_code
  FROM registrations WHERE id = $1 FOR UPDATE
"""
# An exam offers the commitment route once it has published the commitment's text.
_HAS_COMMITMENT_TEXT = "SELECT EXISTS (SELECT 1 FROM exam_documents WHERE exam_id = $1 AND kind = 'commitment')"
_LOCK_ORDERS = "SELECT 1 FROM orders WHERE registration_id = $1 AND status = 'pending' ORDER BY order_no FOR UPDATE"
_MOVE = """
UPDATE registrations
   SET status = $2, version = version + 1, updated_at = now(), reasons = $3::jsonb,
       review_mode = COALESCE($4, review_mode), submitted_at = COALESCE($5, submitted_at),
       decided_by = $6, decided_at = $7, major_acknowledged = COALESCE($8, major_acknowledged)
 WHERE id = $1
RETURNING version
"""
_EVENT = """
INSERT INTO registration_events (registration_id, action, from_status, to_status, version, actor, reasons, address)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
"""
# A registration that stops being payable has no pending order left (a late payment of it is refunded).
_CLOSE_ORDERS = "UPDATE orders SET status = 'closed' WHERE registration_id = $1 AND status = 'pending'"


@contextlib.asynccontextmanager
async def _transaction(pg: PG) -> AsyncIterator[Conn]:
    async with storage_errors(), transaction(pg) as conn:
        yield conn


async def _locked(conn: Conn, registration_id: int, candidate_id: int | None,
                  provinces: Collection[str] | None = None) -> asyncpg.Record:
    # Its pending order first, then the registration: the order payments.settle locks them in.
    await conn.execute(_LOCK_ORDERS, registration_id)
    row = await conn.fetchrow(_LOCK, registration_id)
    if row is None or (candidate_id is not None and row["candidate_id"] != candidate_id) \
            or (provinces is not None and row["province"] not in provinces):
        raise NotFound("registration", registration_id)  # someone else's is not there at all
    return row


def _allowed(row: asyncpg.Record, action: str) -> None:
    if row["status"] not in ACTIONS[action][0]:
        error = AlreadyDecided if action == "decide" else TransitionRefused
        raise error(row["id"], action, row["status"])


def _json(reasons: Sequence[Reason | dict[str, str]]) -> tuple[list[dict[str, str]], tuple[dict[str, str], ...]]:
    """The reasons for a jsonb parameter (the pool's codec encodes them) and for the answer."""
    items = tuple(r.as_dict() if isinstance(r, Reason) else dict(r) for r in reasons)
    return list(items), items


async def _move(conn: Conn, row: asyncpg.Record, action: str, to: str, *, actor: str,
                reasons: Sequence[Reason | dict[str, str]] = (), address: str | None = None,
                review_mode: str | None = None, submitted: datetime | None = None, decided_by: str | None = None,
                acknowledged: bool | None = None) -> Moved:
    raw, items = _json(reasons)
    decided_at = utcnow() if decided_by else None
    version = await conn.fetchval(_MOVE, row["id"], to, raw, review_mode, submitted, decided_by, decided_at,
                                  acknowledged)
    await conn.execute(_EVENT, row["id"], action, row["status"], to, version, actor, raw, address)
    if to not in ("approved", "paid"):
        await conn.execute(_CLOSE_ORDERS, row["id"])
    return Moved(row["id"], row["candidate_id"], row["exam_id"], row["province"], row["status"], to, version, items)


def candidate_actor(candidate_id: int) -> str:
    """How the audit names a candidate."""
    return f"candidate:{candidate_id}"


async def edit(pg: PG, registration_id: int, candidate_id: int, request: RegistrationRequest,
               review_point_id: int | None, *, address: str | None = None) -> Moved:
    """Change a draft or rejected registration's choices; it is a draft again (must be confirmed anew)."""
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        _allowed(row, "edit")
        await conn.execute(
            """UPDATE registrations SET city = $2, level_code = $3, specialty_code = $4, subjects = $5,
                      work_years = $6, review_point_id = $7 WHERE id = $1""",
            registration_id, request.city, request.level, request.specialty, list(request.subjects),
            request.work_years, review_point_id)
        return await _move(conn, row, "edit", "draft", actor=candidate_actor(candidate_id), address=address)


async def sign_commitment(pg: PG, registration_id: int, candidate_id: int, *, version: int, text_sha256: str,
                          address: str) -> datetime:
    """Sign the exam's commitment text at ``version`` (its hash given); when it was signed.

    ``CommitmentNotAllowed`` for a candidate in the integrity archive within its period, or where
    the province does not offer the commitment route. Signing a newer text replaces the signature;
    the same text again writes nothing.
    """
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        _allowed(row, "sign_commitment")
        rule = await review_rule(conn, row["exam_id"], row["province"])
        if not rule.commitment:
            raise CommitmentNotAllowed(registration_id, "not_offered")
        record = await archive_record(conn, candidate_id, row["exam_id"], utcnow().astimezone(SHANGHAI).date())
        if record is not None:
            raise CommitmentNotAllowed(registration_id, "integrity_record", record)
        signed_at: datetime | None = await conn.fetchval(
            """INSERT INTO registration_commitments (registration_id, candidate_id, version, text_sha256, address)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (registration_id) DO UPDATE
                  SET version = EXCLUDED.version, text_sha256 = EXCLUDED.text_sha256, address = EXCLUDED.address,
                      signed_at = now(), withdrawn_at = NULL
                WHERE registration_commitments.text_sha256 <> EXCLUDED.text_sha256
                   OR registration_commitments.withdrawn_at IS NOT NULL
               RETURNING signed_at""", registration_id, candidate_id, version, text_sha256, address)
        if signed_at is None:  # the same text signed again: nothing to write, however often it is asked
            existing: datetime = await conn.fetchval(
                "SELECT signed_at FROM registration_commitments WHERE registration_id = $1", registration_id)
            return existing
        raw, _ = _json(())
        await conn.execute(_EVENT, registration_id, "sign_commitment", row["status"], row["status"], row["version"],
                           candidate_actor(candidate_id), raw, address)
        return signed_at


async def confirm(pg: PG, registration_id: int, candidate_id: int, *, acknowledge_major_mismatch: bool = False,
                  address: str | None = None) -> Moved:
    """报名信息确认: the details are final and the automatic review decides (``core.qualification.review``).

    ``PhotoRequired`` without an approved current photo. ``CommitmentRequired`` when the commitment route
    applies (the province offers it, the exam has published its text and the candidate is not in the
    integrity archive) and is not signed; ``MajorMismatch`` (nothing written) until the candidate
    acknowledges a major outside the lists.
    """
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        if row["status"] in ("approved", "under_review", "onsite_review"):  # asked again: the same answer
            current = await conn.fetchval("SELECT reasons FROM registrations WHERE id = $1", registration_id)
            return Moved(row["id"], row["candidate_id"], row["exam_id"], row["province"], row["status"],
                         row["status"], row["version"], tuple(current), changed=False)
        _allowed(row, "confirm")
        await require_approved(conn, candidate_id)
        rule = await review_rule(conn, row["exam_id"], row["province"])
        today = utcnow().astimezone(SHANGHAI).date()
        archived = await archive_record(conn, candidate_id, row["exam_id"], today) is not None
        if rule.commitment and not archived and await conn.fetchval(_HAS_COMMITMENT_TEXT, row["exam_id"]):
            signed = await conn.fetchval("""SELECT 1 FROM registration_commitments
                                            WHERE registration_id = $1 AND withdrawn_at IS NULL""", registration_id)
            if signed is None:
                raise CommitmentRequired(registration_id)
        verdict = review(await load_rules(conn, row["exam_id"], row["level_code"]),
                         await educations(conn, candidate_id), work_years=row["work_years"],
                         subjects=row["subjects"], rule=rule, archived=archived,
                         acknowledged_major=acknowledge_major_mismatch)
        mode = {"under_review": "online", "onsite_review": "onsite"}.get(verdict.status, "auto")
        return await _move(conn, row, "confirm", verdict.status, actor=candidate_actor(candidate_id),
                           reasons=verdict.reasons, address=address, review_mode=mode, submitted=utcnow(),
                           acknowledged=acknowledge_major_mismatch)


async def withdraw(pg: PG, registration_id: int, candidate_id: int, *, address: str | None = None) -> Moved:
    """Take a confirmation back to edit it, where the province's rule allows: a draft again, its order closed."""
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        _allowed(row, "withdraw")
        rule = await review_rule(conn, row["exam_id"], row["province"])
        if row["status"] not in WITHDRAW_FROM[rule.withdraw_rule]:
            why = "本地区规定确认后不能撤回" if rule.withdraw_rule == "locked" else "本地区规定审核通过后不能撤回"
            raise TransitionRefused(registration_id, "withdraw", row["status"], why=why)
        return await _move(conn, row, "withdraw", "draft", actor=candidate_actor(candidate_id), address=address)


async def cancel(pg: PG, registration_id: int, candidate_id: int, *, address: str | None = None) -> Moved:
    """放弃报名: before payment the registration is cancelled; once paid a cancellation request is recorded.

    A paid registration answers ``Moved`` with ``status`` still ``paid`` and ``changed`` True when
    the request is new.
    """
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        _allowed(row, "cancel")
        if row["status"] == "paid":
            created = await conn.fetchval(
                """INSERT INTO cancellation_requests (registration_id) VALUES ($1)
                   ON CONFLICT (registration_id) DO NOTHING RETURNING 1""", registration_id)
            if created:
                raw, _ = _json(())
                await conn.execute(_EVENT, registration_id, "request_cancellation", "paid", "paid", row["version"],
                                   candidate_actor(candidate_id), raw, address)
            return Moved(row["id"], row["candidate_id"], row["exam_id"], row["province"], "paid", "paid",
                         row["version"], changed=bool(created))
        return await _move(conn, row, "cancel", "cancelled", actor=candidate_actor(candidate_id), address=address)


async def withdraw_commitment(pg: PG, registration_id: int, candidate_id: int, *, address: str | None = None) -> Moved:
    """Withdraw the signed commitment before payment: the registration is cancelled."""
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, candidate_id)
        _allowed(row, "withdraw_commitment")
        withdrawn = await conn.fetchval("""UPDATE registration_commitments SET withdrawn_at = now()
                                           WHERE registration_id = $1 AND withdrawn_at IS NULL RETURNING 1""",
                                        registration_id)
        if withdrawn is None:
            raise NotFound("commitment", registration_id)
        return await _move(conn, row, "withdraw_commitment", "cancelled", actor=candidate_actor(candidate_id),
                           address=address)


async def decide(pg: PG, registration_id: int, *, approve: bool, reasons: Sequence[Reason | dict[str, str]],
                 operator: str, provinces: Collection[str] | None, expected_version: int | None) -> Moved:
    """An operator's review decision; ``provinces`` None is a national scope, else out of scope is ``NotFound``.

    ``expected_version`` (If-Match) older than the registration's is ``StaleVersion``; a registration
    no longer under review is ``AlreadyDecided`` — one decision per review, however many operators race.
    """
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, None, provinces)
        if expected_version is not None and expected_version != row["version"]:
            raise StaleVersion(registration_id, expected_version, row["version"])
        _allowed(row, "decide")
        return await _move(conn, row, "decide", "approved" if approve else "rejected", actor=f"operator:{operator}",
                           reasons=reasons, decided_by=operator)


@dataclass(frozen=True, slots=True)
class PaidOrder:
    """The paid order a cancellation refunds."""

    order_no: str
    provider: str
    trade_no: str | None
    amount_fen: int


async def approve_cancellation(conn: Conn, registration_id: int, *, operator: str,
                               provinces: Collection[str] | None) -> tuple[Moved, PaidOrder]:
    """Approve a paid candidate's cancellation request: cancelled, its ticket withdrawn; the order to refund.

    Runs in the caller's transaction, which also requests the refund of the returned order.
    """
    row = await _locked(conn, registration_id, None, provinces)
    _allowed(row, "approve_cancellation")
    asked = await conn.fetchval("""UPDATE cancellation_requests SET status = 'approved', decided_by = $2,
                                          decided_at = now()
                                    WHERE registration_id = $1 AND status = 'pending' RETURNING 1""",
                                registration_id, operator)
    if asked is None:
        raise NotFound("cancellation request", registration_id)
    order = await conn.fetchrow("""SELECT order_no, provider, provider_trade_no, amount_fen FROM orders
                                   WHERE registration_id = $1 AND status = 'paid'""", registration_id)
    assert order is not None, "a paid registration has its paid order"
    await conn.execute("DELETE FROM admission_tickets WHERE registration_id = $1", registration_id)
    moved = await _move(conn, row, "approve_cancellation", "cancelled", actor=f"operator:{operator}")
    return moved, PaidOrder(order["order_no"], order["provider"], order["provider_trade_no"], order["amount_fen"])


async def refuse_cancellation(pg: PG, registration_id: int, *, operator: str, provinces: Collection[str] | None,
                              note: str) -> None:
    """Refuse a paid candidate's cancellation request; the registration stays paid."""
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, None, provinces)
        refused = await conn.fetchval("""UPDATE cancellation_requests SET status = 'refused', decided_by = $2,
                                                decided_at = now(), note = $3
                                          WHERE registration_id = $1 AND status = 'pending' RETURNING 1""",
                                      registration_id, operator, note)
        if refused is None:
            raise NotFound("cancellation request", registration_id)
        reasons, _ = _json([{"code": "other", "message": note}] if note else [])
        await conn.execute(_EVENT, registration_id, "refuse_cancellation", row["status"], row["status"],
                           row["version"], f"operator:{operator}", reasons, None)


async def cancellations(pg: PG, *, status: str, scope: Collection[str] | None,
                        limit: int = 100) -> list[dict[str, Any]]:
    """Cancellation requests in ``status``, oldest first, within ``scope``."""
    async with storage_errors():
        rows = await pg.fetch("""SELECT c.registration_id, c.status, c.requested_at, c.decided_by, c.decided_at,
                                        c.note, c.refund_id, r.exam_id, r.province
                                   FROM cancellation_requests c JOIN registrations r ON r.id = c.registration_id
                                  WHERE c.status = $1 AND ($2::text[] IS NULL OR r.province = ANY($2))
                                  ORDER BY c.requested_at LIMIT $3""",
                              status, None if scope is None else sorted(scope), limit)
    return [dict(r) for r in rows]


_DUE = """
SELECT r.id FROM registrations r JOIN exams e ON e.id = r.exam_id
 WHERE e.registration_closes_at < $1 AND r.status = ANY($2::text[])
 ORDER BY r.id LIMIT $3
"""


async def due_for_expiry(pg: PG, closed_before: datetime, *, limit: int = 500) -> list[int]:
    """Registrations not paid of exams whose registration closed before ``closed_before``."""
    async with storage_errors():
        return [row["id"] for row in await pg.fetch(_DUE, closed_before, sorted(BEFORE_PAYMENT), limit)]


async def expire(pg: PG, registration_id: int) -> Moved | None:
    """An unpaid registration whose exam's registration has closed: expired, its pending order closed.

    One registration per transaction, locked in the order payments take (order, then registration);
    None when it was paid or ended meanwhile.
    """
    async with _transaction(pg) as conn:
        row = await _locked(conn, registration_id, None)
        if row["status"] not in ACTIONS["expire"][0]:
            return None
        return await _move(conn, row, "expire", "expired", actor=EXPIRY_ACTOR)


async def events(pg: PG, registration_id: int) -> list[dict[str, Any]]:
    """The registration's audit trail, oldest first."""
    async with storage_errors():
        rows = await pg.fetch("""SELECT action, from_status, to_status, version, actor, reasons, at
                                 FROM registration_events WHERE registration_id = $1 ORDER BY id""", registration_id)
    return [{"action": r["action"], "from": r["from_status"], "to": r["to_status"], "version": r["version"],
             "actor": r["actor"], "reasons": r["reasons"], "at": r["at"]} for r in rows]
