"""Score review requests (复核): a candidate asks within the exam's review window, an operator answers.

1. The window is the exam's ``score_review_opens_at``/``score_review_closes_at`` (both NULL: no
   reviews). A request outside it is refused (``WindowNotOpen``, ``WindowClosed``).
2. A request names an exam and subjects; it is for the candidate's registration of that exam that
   has scores, and only for subjects with a score (``NoScore``). Each subject is asked about once
   (``AlreadyRequested``): the subjects of one request are stored together or not at all, and the
   unique (registration, subject) key decides between two requests racing.
3. An operator answers ``unchanged`` or ``corrected`` with a reason. Whoever marks the pending row
   first decides (``UPDATE … WHERE status = 'pending'``); the other gets ``AlreadyDecided``.
4. A correction is a one-row ``scores`` import (batch ``review-<id>``): the score changes through
   the one path every score takes (``score_changes`` keeps the old value, the import's hook
   refreshes the lookups). The review row is marked inside the import's transaction, before the
   other hooks run, so the score and the answer commit together: a lost race rolls the import back.
   A batch already applied (a retry after the answer was lost) is ``already_applied``, and the row
   still pending is marked then: the decision is idempotent by its batch id.
5. Every request and answer is written to ``registration_events`` (the registration's audit trail),
   in the transaction that makes it.

Reviewers see and decide only requests of registrations in their provinces (``scope``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from core import imports
from core.db import Conn, transaction
from core.errors import CoreError, NotFound, storage_errors
from core.imports import BatchConflict, ChangedHook, ImportResult
from core.reviews import masked_id
from core.timeutil import utcnow

__all__ = [
    "AlreadyDecided", "AlreadyRequested", "CorrectionConflict", "CorrectionInvalid", "NoScore", "NoTicket",
    "ReviewNotFound", "ScoreReviewError", "Window", "WindowClosed", "WindowNotOpen",
    "REASON_MAX_CHARS", "STATUSES", "SUBJECTS_MAX", "batch_id_of", "correct", "correction_csv", "keep", "mine",
    "queue", "request", "review_window", "set_window",
]  # fmt: skip

PG = asyncpg.Pool | Conn
STATUSES = ("pending", "unchanged", "corrected")
REASON_MAX_CHARS = 500  # as score_reviews.reason checks it
SUBJECTS_MAX = 20
CSV_HEADER = ("exam_code", "ticket_no", "id_number", "subject_code", "score")
EVENT_ACTION = "score_review"


class ScoreReviewError(CoreError):
    """Base class of the refusals of this module."""


class WindowNotOpen(ScoreReviewError):
    """The exam's review window has not opened (``opens_at`` None: the exam has none)."""

    def __init__(self, opens_at: datetime | None, closes_at: datetime | None) -> None:
        super().__init__("score review window not open")
        self.opens_at, self.closes_at = opens_at, closes_at


class WindowClosed(ScoreReviewError):
    """The exam's review window has closed."""

    def __init__(self, opens_at: datetime, closes_at: datetime) -> None:
        super().__init__("score review window closed")
        self.opens_at, self.closes_at = opens_at, closes_at


class NoScore(ScoreReviewError):
    """The candidate has no score in these subjects of the exam (all of them when no registration has scores)."""

    def __init__(self, subjects: Sequence[str]) -> None:
        super().__init__(f"no score for {', '.join(subjects)}")
        self.subjects = list(subjects)


class AlreadyRequested(ScoreReviewError):
    """A review of these subjects was asked for before: nothing of the request was stored."""

    def __init__(self, subjects: Sequence[str]) -> None:
        super().__init__(f"already requested: {', '.join(subjects)}")
        self.subjects = list(subjects)


class ReviewNotFound(ScoreReviewError):
    """No such review request, or not in the operator's scope."""

    def __init__(self, review_id: int) -> None:
        super().__init__(f"score review {review_id} not found")
        self.review_id = review_id


class AlreadyDecided(ScoreReviewError):
    """The request was answered already (by another operator, or before)."""

    def __init__(self, review_id: int, status: str) -> None:
        super().__init__(f"score review {review_id} already {status}")
        self.review_id, self.status = review_id, status


class CorrectionInvalid(ScoreReviewError):
    """The corrected score is not one the subject can have, or is the current score (``problem`` says which)."""

    def __init__(self, problem: str, current: Decimal, full_mark: Decimal) -> None:
        super().__init__(f"correction refused: {problem}")
        self.problem, self.current, self.full_mark = problem, current, full_mark


class NoTicket(ScoreReviewError):
    """The registration has no admission ticket, so no scores row can name it."""

    def __init__(self, review_id: int) -> None:
        super().__init__(f"score review {review_id}: registration has no admission ticket")
        self.review_id = review_id


class CorrectionConflict(ScoreReviewError):
    """The review's batch was applied before with another score (``applied``), or the import refused the row."""

    def __init__(self, review_id: int, applied: Decimal | None, reasons: Sequence[str] = ()) -> None:
        super().__init__(f"score review {review_id}: correction conflicts")
        self.review_id, self.applied, self.reasons = review_id, applied, list(reasons)


@dataclass(frozen=True)
class Window:
    """An exam's score review window (both None: the exam takes no review requests).

    Requests are taken from ``opens_at``, but never before the scores' release (``released_at``): a window
    set earlier by mistake shows no score before its time.
    """

    exam_id: int
    opens_at: datetime | None
    closes_at: datetime | None
    released_at: datetime | None = None

    @property
    def first_request_at(self) -> datetime | None:
        """When requests are first taken: the later of the opening and the scores' release."""
        if self.opens_at is None or self.released_at is None:
            return self.opens_at
        return max(self.opens_at, self.released_at)

    def state(self, now: datetime) -> str:
        """``none``, ``not_open``, ``open`` or ``closed`` at ``now``."""
        first = self.first_request_at
        if first is None or self.closes_at is None:
            return "none"
        if now >= self.closes_at:
            return "closed"
        return "open" if now >= first else "not_open"

    def check(self, now: datetime) -> None:
        """Raise unless the window is open at ``now``."""
        state = self.state(now)
        if state in ("none", "not_open"):
            raise WindowNotOpen(self.first_request_at, self.closes_at)
        if state == "closed" and self.opens_at is not None and self.closes_at is not None:
            raise WindowClosed(self.opens_at, self.closes_at)


def batch_id_of(review_id: int) -> str:
    """The import batch id of a review's correction."""
    return f"review-{review_id}"


def correction_csv(exam_code: str, ticket_no: str, id_number: str, subject_code: str, score: Decimal) -> bytes:
    """The one-row ``scores`` file of a correction."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerow((exam_code, ticket_no, id_number, subject_code, f"{score:.1f}"))
    return out.getvalue().encode()


# -- the window --------------------------------------------------------------------------------------


async def review_window(pg: PG, exam_id: int) -> Window | None:
    """The exam's window; None when there is no such exam."""
    async with storage_errors():
        row = await pg.fetchrow("SELECT score_review_opens_at, score_review_closes_at, score_release_at FROM exams "
                                "WHERE id = $1", exam_id)
    return None if row is None else Window(exam_id, row[0], row[1], row[2])


async def set_window(conn: Conn, exam_id: int, opens_at: datetime | None,
                     closes_at: datetime | None) -> tuple[Window, Window]:
    """Set (or with two Nones, remove) the exam's window in the caller's transaction: (before, after).

    ``NotFound('exam')`` when there is no such exam; the caller checks opens_at < closes_at.
    """
    async with storage_errors():
        row = await conn.fetchrow("SELECT score_review_opens_at, score_review_closes_at FROM exams WHERE id = $1 "
                                  "FOR UPDATE", exam_id)
        if row is None:
            raise NotFound("exam", exam_id)
        await conn.execute("UPDATE exams SET score_review_opens_at = $2, score_review_closes_at = $3 WHERE id = $1",
                           exam_id, opens_at, closes_at)
    return Window(exam_id, row[0], row[1]), Window(exam_id, opens_at, closes_at)


# -- candidates ---------------------------------------------------------------------------------------

_REGISTRATION_WITH_SCORES = """
SELECT r.id, r.status, r.version FROM registrations r
 WHERE r.candidate_id = $1 AND r.exam_id = $2 AND EXISTS (SELECT 1 FROM scores s WHERE s.registration_id = r.id)
 ORDER BY r.id DESC LIMIT 1
"""
_INSERT = """
INSERT INTO score_reviews (registration_id, candidate_id, exam_id, subject_code, score_before)
SELECT $1, $2, $3, s.subject_code, s.score FROM scores s
 WHERE s.registration_id = $1 AND s.subject_code = ANY($4::text[])
 ORDER BY s.subject_code
ON CONFLICT ON CONSTRAINT score_reviews_subject_key DO NOTHING
RETURNING id, subject_code
"""
_EVENT = """
INSERT INTO registration_events (registration_id, action, from_status, to_status, version, actor, reasons)
SELECT r.id, $2, r.status, r.status, r.version, $3, $4::jsonb FROM registrations r WHERE r.id = $1
"""
_REVIEWS = """
SELECT v.id, v.exam_id, e.name AS exam_name, v.subject_code, sub.name AS subject_name, v.status, v.score_before,
       v.score_after, v.reason, v.requested_at, v.decided_at
  FROM score_reviews v JOIN exams e ON e.id = v.exam_id
  JOIN exam_subjects sub ON sub.exam_id = v.exam_id AND sub.code = v.subject_code
 WHERE {where}
 ORDER BY v.id
"""


def _review(row: asyncpg.Record) -> dict[str, Any]:
    return {"review_id": row["id"], "exam_id": row["exam_id"], "exam_name": row["exam_name"],
            "subject": row["subject_code"], "subject_name": row["subject_name"], "status": row["status"],
            "score_before": row["score_before"], "score_after": row["score_after"], "reason": row["reason"],
            "requested_at": row["requested_at"], "decided_at": row["decided_at"]}


async def request(pg: PG, candidate_id: int, exam_id: int, subjects: Sequence[str], *,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    """Ask for a review of ``subjects`` (distinct codes) of the candidate's scores in the exam: the new requests.

    Raises NotFound('exam'), WindowNotOpen, WindowClosed, NoScore or AlreadyRequested; all or nothing.
    """
    now = now or utcnow()
    subjects = list(dict.fromkeys(subjects))
    async with storage_errors(), transaction(pg) as conn:
        window = await review_window(conn, exam_id)
        if window is None:
            raise NotFound("exam", exam_id)
        window.check(now)
        registration = await conn.fetchrow(_REGISTRATION_WITH_SCORES, candidate_id, exam_id)
        if registration is None:
            raise NoScore(subjects)
        scored = {r[0] for r in await conn.fetch(
            "SELECT subject_code FROM scores WHERE registration_id = $1 AND subject_code = ANY($2::text[])",
            registration["id"], list(subjects))}
        missing = [s for s in subjects if s not in scored]
        if missing:
            raise NoScore(missing)
        made = await conn.fetch(_INSERT, registration["id"], candidate_id, exam_id, list(subjects))
        taken = sorted(set(subjects) - {r["subject_code"] for r in made})
        if taken:
            raise AlreadyRequested(taken)
        await conn.execute(_EVENT, registration["id"], f"{EVENT_ACTION}.requested", "candidate",
                           [{"code": "score_review", "message": f"科目 {s}", "subject": s, "review_id": str(r)}
                            for r, s in sorted((r["id"], r["subject_code"]) for r in made)])
        rows = await conn.fetch(_REVIEWS.format(where="v.id = ANY($1::bigint[])"), [r["id"] for r in made])
    return [_review(row) for row in rows]


async def mine(pg: PG, candidate_id: int) -> list[dict[str, Any]]:
    """The candidate's review requests, every exam, oldest first."""
    async with storage_errors():
        rows = await pg.fetch(_REVIEWS.format(where="v.candidate_id = $1"), candidate_id)
    return [_review(row) for row in rows]


_SCORED_EXAMS = """
SELECT e.id AS exam_id, e.name AS exam_name, e.score_review_opens_at, e.score_review_closes_at, e.score_release_at,
       s.subject_code, sub.name AS subject_name, s.score, (v.id IS NOT NULL) AS requested
  FROM registrations r JOIN exams e ON e.id = r.exam_id
  JOIN scores s ON s.registration_id = r.id
  JOIN exam_subjects sub ON sub.exam_id = s.exam_id AND sub.code = s.subject_code
  LEFT JOIN score_reviews v ON v.registration_id = r.id AND v.subject_code = s.subject_code
 WHERE r.candidate_id = $1 AND e.score_release_at <= $2
 ORDER BY e.id DESC, sub.position, s.subject_code
"""


async def scored_exams(pg: PG, candidate_id: int, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The exams the candidate has released scores in, newest first: each with its window's state and the subjects."""
    now = now or utcnow()
    async with storage_errors():
        rows = await pg.fetch(_SCORED_EXAMS, candidate_id, now)
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        exam = found.get(row["exam_id"])
        if exam is None:
            window = Window(row["exam_id"], row["score_review_opens_at"], row["score_review_closes_at"],
                            row["score_release_at"])
            exam = found[row["exam_id"]] = {
                "exam_id": row["exam_id"], "exam_name": row["exam_name"], "window": window.state(now),
                "opens_at": window.first_request_at, "closes_at": window.closes_at, "subjects": []}
        exam["subjects"].append({"subject": row["subject_code"], "subject_name": row["subject_name"],
                                 "score": row["score"], "requested": row["requested"]})
    return list(found.values())


# -- operators ----------------------------------------------------------------------------------------

_QUEUE = """
SELECT v.id, v.exam_id, e.name AS exam_name, v.registration_id, r.province, c.name AS candidate_name,
       c.id_number, v.subject_code, sub.name AS subject_name, sub.full_mark, s.score AS score_now, v.status,
       v.score_before, v.score_after, v.reason, v.batch_id, v.requested_at, v.decided_by, v.decided_at
  FROM score_reviews v JOIN registrations r ON r.id = v.registration_id
  JOIN candidates c ON c.id = v.candidate_id JOIN exams e ON e.id = v.exam_id
  JOIN exam_subjects sub ON sub.exam_id = v.exam_id AND sub.code = v.subject_code
  LEFT JOIN scores s ON s.registration_id = v.registration_id AND s.subject_code = v.subject_code
 WHERE ($1::bigint IS NULL OR v.exam_id = $1) AND ($2::text IS NULL OR v.status = $2)
   AND ($3::text[] IS NULL OR r.province = ANY($3)) AND v.id > $4
 ORDER BY v.id LIMIT $5
"""


def _queued(row: asyncpg.Record) -> dict[str, Any]:
    return {"review_id": row["id"], "exam_id": row["exam_id"], "exam_name": row["exam_name"],
            "registration_id": row["registration_id"], "province": row["province"],
            "candidate_name": row["candidate_name"], "id_number": masked_id(row["id_number"]),
            "subject": row["subject_code"], "subject_name": row["subject_name"], "full_mark": row["full_mark"],
            "score_now": row["score_now"], "status": row["status"], "score_before": row["score_before"],
            "score_after": row["score_after"], "reason": row["reason"], "batch_id": row["batch_id"],
            "requested_at": row["requested_at"], "decided_by": row["decided_by"], "decided_at": row["decided_at"]}


def _scope(scope: Collection[str] | None) -> list[str] | None:
    return None if scope is None else sorted(scope)


async def queue(pg: PG, *, exam_id: int | None, status: str | None, scope: Collection[str] | None,
                after: int = 0, limit: int = 50) -> list[dict[str, Any]]:
    """A page of review requests by id after ``after``, within ``scope`` (None: national)."""
    async with storage_errors():
        rows = await pg.fetch(_QUEUE, exam_id, status, _scope(scope), after, limit)
    return [_queued(row) for row in rows]


async def one(pg: PG, review_id: int, scope: Collection[str] | None) -> dict[str, Any]:
    """One review request within ``scope``; ReviewNotFound otherwise."""
    async with storage_errors():
        row = await pg.fetchrow(_QUEUE.replace("AND v.id > $4", "AND v.id = $4"), None, None, _scope(scope),
                                review_id, 1)
    if row is None:
        raise ReviewNotFound(review_id)
    return _queued(row)


_MARK = """
UPDATE score_reviews SET status = $2, score_after = $3, reason = $4, batch_id = $5, decided_by = $6,
       decided_at = now()
 WHERE id = $1 AND status = 'pending'
RETURNING registration_id, subject_code, score_before
"""


async def _mark(conn: Conn, review_id: int, status: str, score_after: Decimal | None, reason: str,
                batch_id: str | None, operator: str) -> None:
    """Answer the pending request and audit it; AlreadyDecided when it is not pending any more."""
    row = await conn.fetchrow(_MARK, review_id, status, score_after, reason, batch_id, operator)
    if row is None:
        status_now = await conn.fetchval("SELECT status FROM score_reviews WHERE id = $1", review_id)
        raise AlreadyDecided(review_id, str(status_now))
    # Reasons are strings only, as every registration event's (the history routes answer them so).
    change = "" if score_after is None else f"（{row['score_before']} → {score_after}）"
    await conn.execute(_EVENT, row["registration_id"], f"{EVENT_ACTION}.{status}", operator, [{
        "code": "score_review", "message": f"科目 {row['subject_code']}：{reason}{change}",
        "subject": row["subject_code"], "review_id": str(review_id), "score_before": str(row["score_before"]),
        **({} if score_after is None else {"score_after": str(score_after)}),
        **({} if batch_id is None else {"batch_id": batch_id})}])


async def keep(pg: PG, review_id: int, *, reason: str, operator: str,
               scope: Collection[str] | None) -> dict[str, Any]:
    """Answer ``unchanged``: the score stands, for ``reason``. ReviewNotFound, AlreadyDecided."""
    found = await one(pg, review_id, scope)
    if found["status"] != "pending":
        raise AlreadyDecided(review_id, found["status"])
    async with storage_errors(), transaction(pg) as conn:
        await _mark(conn, review_id, "unchanged", None, reason, None, operator)
    return await one(pg, review_id, scope)


_CORRECTION = """
SELECT e.code AS exam_code, t.ticket_no, c.id_number FROM score_reviews v
  JOIN exams e ON e.id = v.exam_id JOIN candidates c ON c.id = v.candidate_id
  LEFT JOIN admission_tickets t ON t.registration_id = v.registration_id
 WHERE v.id = $1
"""


async def correct(pool: asyncpg.Pool, review_id: int, score: Decimal, *, reason: str, operator: str,
                  scope: Collection[str] | None,
                  hooks: Mapping[str, ChangedHook] | None = None) -> tuple[dict[str, Any], ImportResult]:
    """Answer ``corrected``: the score becomes ``score`` through a one-row scores import (module docstring, 4).

    Raises ReviewNotFound, AlreadyDecided, CorrectionInvalid (``above_full_mark``, ``same_score``), NoTicket,
    CorrectionConflict (the batch applied before with another score, or the import refused the row).
    """
    found = await one(pg=pool, review_id=review_id, scope=scope)
    if found["status"] != "pending":
        raise AlreadyDecided(review_id, found["status"])
    score = score.quantize(Decimal("0.1"))
    batch_id = batch_id_of(review_id)
    current = found["score_now"] if found["score_now"] is not None else found["score_before"]
    if score > found["full_mark"]:
        raise CorrectionInvalid("above_full_mark", current, found["full_mark"])
    applied_before = await _applied_score(pool, batch_id)
    if score == current and applied_before is None:
        raise CorrectionInvalid("same_score", current, found["full_mark"])
    async with storage_errors():
        names = await pool.fetchrow(_CORRECTION, review_id)
    if names is None or names["ticket_no"] is None:
        raise NoTicket(review_id)
    data = correction_csv(names["exam_code"], names["ticket_no"], names["id_number"], found["subject"], score)
    marked = False
    others = dict(hooks or {})
    after = others.get("scores")

    async def mark_then_refresh(conn: Conn, changed: Sequence[Any]) -> None:
        # Marked first: a lost race raises here, before any other hook has told a cache of the new score.
        nonlocal marked
        await _mark(conn, review_id, "corrected", score, reason, batch_id, operator)
        marked = True
        if after is not None:
            await after(conn, changed)

    try:
        result = await imports.run_import(pool, "scores", data, content_type="text/csv", batch_id=batch_id,
                                          actor=operator, hooks={**others, "scores": mark_then_refresh})
    except BatchConflict:
        decided = await one(pool, review_id, scope)
        if decided["status"] != "pending":  # another operator's answer got there first
            raise AlreadyDecided(review_id, decided["status"]) from None
        raise CorrectionConflict(review_id, await _applied_score(pool, batch_id)) from None
    except imports.ImportRejected as exc:
        raise CorrectionConflict(review_id, None, [reason for _, reason in exc.rows]) from None
    if not marked:
        # Applied before (a retry), or applied without changing a row: the pending request is answered now.
        async with storage_errors(), transaction(pool) as conn:
            await _mark(conn, review_id, "corrected", score, reason, batch_id, operator)
    return await one(pool, review_id, scope), result


async def _applied_score(pg: PG, batch_id: str) -> Decimal | None:
    """The score a correction batch wrote, when it was applied."""
    async with storage_errors():
        value = await pg.fetchval("SELECT new_score FROM score_changes WHERE batch_id = $1 ORDER BY id LIMIT 1",
                                  batch_id)
    return None if value is None else Decimal(value)
