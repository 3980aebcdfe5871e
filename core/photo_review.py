"""Photo review: operators' decisions, candidates' change requests, the audit, and the confirmation gate.

The checks at upload (``core.photos.process``) approve a photo or send it to review
(``needs_review``); a sample of the approved ones is marked for a human look too. An operator
approves a photo (it is locked) or rejects it with a reason (the candidate uploads another). Each
photo is decided by a human once: a second decision is ``PhotoConflict("already_reviewed")``,
and a photo replaced meanwhile is ``photo_superseded``.

An approved photo is locked (``core.photos.PgPhotoStore.save`` refuses to replace it). The
candidate asks for a change with a reason; an operator grants or refuses it; a granted request lets
exactly one new upload in and is then used. One request is open per candidate at a time.

Operators' reads and decisions are scoped like registration reviews: a provincial operator sees the
photos of candidates whose id number belongs to a province of its scope (its first two digits);
anything else answers as if it did not exist.

Every upload, decision, request and grant is written to ``photo_events`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import asyncpg

from core.db import Conn, transaction
from core.errors import CoreError, NotFound, storage_errors
from core.photos import candidate_actor
from core.reviews import masked_id
from core.timeutil import iso_local

__all__ = [
    "REJECT_REASONS", "REASON_MAX_CHARS", "QUEUES", "PhotoConflict", "PhotoRequired",
    "photo_status", "require_approved", "queue", "photo", "decide", "request_change", "change_requests",
    "decide_change", "events", "reason_text",
]  # fmt: skip

PG = asyncpg.Pool | Conn
REASON_MAX_CHARS = 200

# The reasons an operator picks from when rejecting; anything else they type is kept as their words.
REJECT_REASONS = {
    "not_id_photo": "不是本人近期正面免冠证件照",
    "face_unclear": "面部不清晰或被遮挡（帽子、墨镜、头发等）",
    "background": "背景不是浅色纯色背景",
    "poor_quality": "照片模糊、过暗、过曝或有明显压缩痕迹",
    "edited": "照片经过美颜、修图或拼接",
    "other_person": "照片与报名人不符",
}

# The review queues: which current photos each shows.
QUEUES = {
    "needs_review": "p.status = 'needs_review' AND p.reviewed_at IS NULL",
    "sampled": "p.sampled AND p.reviewed_at IS NULL",
    "pending": "p.reviewed_at IS NULL AND (p.status = 'needs_review' OR p.sampled)",
    "approved": "p.status = 'approved'",
    "rejected": "p.status = 'rejected'",
}


class PhotoConflict(CoreError):
    """A photo or change-request action refused by the state it found: ``code`` names it, ``details`` says more."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details


class PhotoRequired(CoreError):
    """A registration cannot be confirmed without an approved current photo; ``status`` is the photo's (None: none)."""

    def __init__(self, candidate_id: int, status: str | None) -> None:
        super().__init__(f"candidate {candidate_id} has no approved photo (current: {status})")
        self.candidate_id, self.status = candidate_id, status


def reason_text(reason: str) -> str:
    """A reason code's message, or the operator's own words (whitespace collapsed)."""
    text = " ".join(reason.split())
    return REJECT_REASONS.get(text, text)


def _scoped(scope: Collection[str] | None) -> list[str] | None:
    return None if scope is None else sorted(scope)


_SCOPE = "($1::text[] IS NULL OR left(c.id_number, 2) = ANY($1::text[]))"


async def _event(conn: Conn, candidate_id: int, photo_id: int | None, request_id: int | None, action: str,
                 actor: str, reason: str | None = None) -> None:
    await conn.execute("""INSERT INTO photo_events (candidate_id, photo_id, request_id, action, actor, reason)
                          VALUES ($1, $2, $3, $4, $5, $6)""", candidate_id, photo_id, request_id, action, actor, reason)


# -- the candidate's side -------------------------------------------------------------------------


async def photo_status(pg: PG, candidate_id: int) -> dict[str, Any] | None:
    """The current photo's review facts and the latest change request, or None without a photo."""
    async with storage_errors():
        row = await pg.fetchrow(
            """SELECT p.id, p.status, p.problems, p.locked, p.uploaded_at, p.reviewed_at, p.review_reason,
                      r.id AS request_id, r.status AS request_status, r.reason AS request_reason,
                      r.requested_at, r.decided_at, r.decision_reason
                 FROM photos p
                 LEFT JOIN LATERAL (SELECT * FROM photo_change_requests r WHERE r.candidate_id = p.candidate_id
                                     ORDER BY r.id DESC LIMIT 1) r ON true
                WHERE p.candidate_id = $1 AND p.current""", candidate_id)
    if row is None:
        return None
    request = None if row["request_id"] is None else {
        "request_id": row["request_id"], "status": row["request_status"], "reason": row["request_reason"],
        "requested_at": iso_local(row["requested_at"]),
        "decided_at": None if row["decided_at"] is None else iso_local(row["decided_at"]),
        "decision_reason": row["decision_reason"]}
    return {"photo_id": row["id"], "status": row["status"], "problems": list(row["problems"]),
            "locked": row["locked"], "uploaded_at": iso_local(row["uploaded_at"]),
            "reviewed": row["reviewed_at"] is not None,
            "review_reason": row["review_reason"], "change_request": request}


async def require_approved(conn: Conn, candidate_id: int) -> None:
    """``PhotoRequired`` unless the candidate's current photo is approved; the row is share-locked until commit.

    The share lock makes an operator's rejection racing a confirmation wait for it (or the
    confirmation wait for the rejection and then refuse).
    """
    status = await conn.fetchval("SELECT status FROM photos WHERE candidate_id = $1 AND current FOR SHARE",
                                 candidate_id)
    if status != "approved":
        raise PhotoRequired(candidate_id, status)


async def request_change(pg: PG, candidate_id: int, reason: str) -> dict[str, Any]:
    """Ask to replace a locked photo: a pending request (``PhotoConflict`` when one is open or nothing is locked)."""
    async with storage_errors(), transaction(pg) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('photo:' || $1::bigint::text, 0))",
                           candidate_id)
        photo = await conn.fetchrow("SELECT id, locked FROM photos WHERE candidate_id = $1 AND current", candidate_id)
        if photo is None:
            raise NotFound("photo of candidate", candidate_id)
        if not photo["locked"]:
            raise PhotoConflict("photo_not_locked", "照片尚未锁定，可直接重新上传，无需申请更换")
        open_request = await conn.fetchrow("""SELECT id, status FROM photo_change_requests
                                              WHERE candidate_id = $1 AND status IN ('pending', 'granted')""",
                                           candidate_id)
        if open_request is not None:
            message = ("已提交更换申请，请等待审核" if open_request["status"] == "pending"
                       else "更换申请已通过，请直接上传新照片")
            raise PhotoConflict("change_request_open", message, request_id=open_request["id"],
                                status=open_request["status"])
        row = await conn.fetchrow("""INSERT INTO photo_change_requests (candidate_id, photo_id, reason)
                                     VALUES ($1, $2, $3) RETURNING id, requested_at""",
                                  candidate_id, photo["id"], reason)
        assert row is not None  # INSERT … RETURNING gives its row
        await _event(conn, candidate_id, photo["id"], row["id"], "change_request", candidate_actor(candidate_id),
                     reason)
    return {"request_id": row["id"], "status": "pending", "reason": reason,
            "requested_at": iso_local(row["requested_at"])}


# -- the operators' side --------------------------------------------------------------------------


_PHOTO_ROW = """p.id, p.candidate_id, p.status, p.problems, p.sampled, p.locked, p.uploaded_at, p.reviewed_at,
                p.reviewed_by, p.review_reason, c.name, c.id_number"""


def _photo(row: asyncpg.Record) -> dict[str, Any]:
    return {"photo_id": row["id"], "candidate_id": row["candidate_id"], "candidate_name": row["name"],
            "id_number": masked_id(row["id_number"]), "status": row["status"], "problems": list(row["problems"]),
            "sampled": row["sampled"], "locked": row["locked"], "uploaded_at": iso_local(row["uploaded_at"]),
            "reviewed_at": None if row["reviewed_at"] is None else iso_local(row["reviewed_at"]),
            "reviewed_by": row["reviewed_by"], "review_reason": row["review_reason"]}


async def queue(pg: PG, which: str, *, scope: Collection[str] | None, after: int = 0,
                limit: int = 50) -> list[dict[str, Any]]:
    """A page of current photos in queue ``which`` (a key of ``QUEUES``), by id after ``after``, within ``scope``."""
    condition = QUEUES[which]
    async with storage_errors():
        rows = await pg.fetch(
            f"""SELECT {_PHOTO_ROW} FROM photos p JOIN candidates c ON c.id = p.candidate_id
                 WHERE p.current AND {condition} AND {_SCOPE} AND p.id > $2 ORDER BY p.id LIMIT $3""",
            _scoped(scope), after, limit)
    return [_photo(row) for row in rows]


async def photo(pg: PG, photo_id: int, *, scope: Collection[str] | None) -> dict[str, Any] | None:
    """One photo's facts (current or not) within ``scope``, or None."""
    async with storage_errors():
        row = await pg.fetchrow(f"""SELECT {_PHOTO_ROW} FROM photos p JOIN candidates c ON c.id = p.candidate_id
                                     WHERE p.id = $2 AND {_SCOPE}""", _scoped(scope), photo_id)
    return None if row is None else _photo(row)


async def decide(pg: PG, photo_id: int, *, approve: bool, reason: str | None, operator: str,
                 scope: Collection[str] | None) -> dict[str, Any]:
    """Approve (and lock) or reject (with ``reason``, unlocked) a current photo not yet decided by a human."""
    if not approve and not reason:
        raise ValueError("a rejection needs a reason")
    async with storage_errors(), transaction(pg) as conn:
        row = await conn.fetchrow(
            f"""SELECT {_PHOTO_ROW}, p.current FROM photos p JOIN candidates c ON c.id = p.candidate_id
                 WHERE p.id = $2 AND {_SCOPE} FOR UPDATE OF p""", _scoped(scope), photo_id)
        if row is None:
            raise NotFound("photo", photo_id)
        if not row["current"]:
            raise PhotoConflict("photo_superseded", "考生已上传新照片，请审核新照片", photo_id=photo_id)
        if row["reviewed_at"] is not None:
            raise PhotoConflict("already_reviewed", "该照片已审核", status=row["status"],
                                reviewed_by=row["reviewed_by"])
        text = None if approve or reason is None else reason_text(reason)
        decided = await conn.fetchrow(
            f"""UPDATE photos p SET status = $2, locked = $3, reviewed_at = now(), reviewed_by = $4,
                       review_reason = $5
                  FROM candidates c WHERE p.id = $1 AND c.id = p.candidate_id RETURNING {_PHOTO_ROW}""",
            photo_id, "approved" if approve else "rejected", approve, operator, text)
        assert decided is not None  # the row is locked above
        await _event(conn, row["candidate_id"], photo_id, None, "approve" if approve else "reject", operator, text)
    return _photo(decided)


_REQUEST_ROW = """r.id, r.candidate_id, r.photo_id, r.reason, r.status, r.requested_at, r.decided_at, r.decided_by,
                  r.decision_reason, r.used_at, r.new_photo_id, c.name, c.id_number"""


def _request(row: asyncpg.Record) -> dict[str, Any]:
    return {"request_id": row["id"], "candidate_id": row["candidate_id"], "candidate_name": row["name"],
            "id_number": masked_id(row["id_number"]), "photo_id": row["photo_id"], "reason": row["reason"],
            "status": row["status"], "requested_at": iso_local(row["requested_at"]),
            "decided_at": None if row["decided_at"] is None else iso_local(row["decided_at"]),
            "decided_by": row["decided_by"], "decision_reason": row["decision_reason"],
            "used_at": None if row["used_at"] is None else iso_local(row["used_at"]),
            "new_photo_id": row["new_photo_id"]}


async def change_requests(pg: PG, status: str, *, scope: Collection[str] | None, after: int = 0,
                          limit: int = 50) -> list[dict[str, Any]]:
    """A page of change requests in ``status``, by id after ``after``, within ``scope``."""
    async with storage_errors():
        rows = await pg.fetch(
            f"""SELECT {_REQUEST_ROW} FROM photo_change_requests r JOIN candidates c ON c.id = r.candidate_id
                 WHERE r.status = $4 AND {_SCOPE} AND r.id > $2 ORDER BY r.id LIMIT $3""",
            _scoped(scope), after, limit, status)
    return [_request(row) for row in rows]


async def decide_change(pg: PG, request_id: int, *, grant: bool, operator: str, reason: str | None,
                        scope: Collection[str] | None) -> dict[str, Any]:
    """Grant (one new upload allowed) or refuse a pending change request."""
    async with storage_errors(), transaction(pg) as conn:
        row = await conn.fetchrow(
            f"""SELECT {_REQUEST_ROW} FROM photo_change_requests r JOIN candidates c ON c.id = r.candidate_id
                 WHERE r.id = $2 AND {_SCOPE} FOR UPDATE OF r""", _scoped(scope), request_id)
        if row is None:
            raise NotFound("photo change request", request_id)
        if row["status"] != "pending":
            raise PhotoConflict("already_decided", "该更换申请已处理", status=row["status"])
        decided = await conn.fetchrow(
            f"""UPDATE photo_change_requests r SET status = $2, decided_at = now(), decided_by = $3,
                       decision_reason = $4
                  FROM candidates c WHERE r.id = $1 AND c.id = r.candidate_id RETURNING {_REQUEST_ROW}""",
            request_id, "granted" if grant else "refused", operator, reason)
        assert decided is not None  # the row is locked above
        await _event(conn, row["candidate_id"], row["photo_id"], request_id,
                     "change_grant" if grant else "change_refuse", operator, reason)
    return _request(decided)


async def events(pg: PG, candidate_id: int) -> list[dict[str, Any]]:
    """The candidate's photo audit trail, oldest first."""
    async with storage_errors():
        rows = await pg.fetch("""SELECT photo_id, request_id, action, actor, reason, at FROM photo_events
                                 WHERE candidate_id = $1 ORDER BY id""", candidate_id)
    return [{**dict(row), "at": iso_local(row["at"])} for row in rows]
