"""Score review requests (复核) over HTTP: candidates ask and read their answers; operators answer.

Candidates ask within the exam's review window for subjects they have a score in, each subject
once (``core.score_reviews``); the refusals are 409 with a code naming the rule (``not_open``,
``closed``, ``no_score``, ``already_requested``). Reviewers (within their provinces) and admins
list the requests and answer each once: the first answer stored wins, another is 409
``already_decided``. A correction is a one-row ``scores`` import, batch ``review-<id>``, with the
gateway's import hooks, so the score lookups answer the new score once it commits. Admins set an
exam's review window, noted in the config audit (``GET /admin/api/v1/audit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field
from pydantic_core import PydanticCustomError

from core import score_reviews
from core.errors import NotFound
from core.timeutil import iso_local
from gateway import adminauth, auth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.catalogue import ExamNotFound
from gateway.errors import Conflict, NotFoundError, ValidationFailed
from gateway.imports import import_hooks
from gateway.models import Body, Id, Reply, Text
from gateway.pathids import path_id
from gateway.routes.operations import audit_note
from gateway.routes.reviews import AFTER, LIMIT, page_limit, query_id
from gateway.routing import CANDIDATE, OPERATOR, Answer, Param, Routes

routes = Routes("Score reviews")
DECIDERS = ("reviewer", "admin")
WINDOW_AUDIT_PATH = "exams.{exam_id}.score_review_window"
SubjectCode = Text(1, 32)
WINDOW_YEARS = (2000, 2099)
MAX_SCORE = 999.9  # numeric(5,1) with one decimal; the subject's full mark is checked when deciding


def _within_years(moment: datetime) -> datetime:
    if not WINDOW_YEARS[0] <= moment.astimezone(UTC).year <= WINDOW_YEARS[1]:
        raise PydanticCustomError("out_of_range", "年份须在 {low} 至 {high} 之间",
                                  {"low": WINDOW_YEARS[0], "high": WINDOW_YEARS[1]})
    return moment


WindowTime = Annotated[AwareDatetime, AfterValidator(_within_years), Field(
    description=f"with an offset; years {WINDOW_YEARS[0]} to {WINDOW_YEARS[1]} (422 out_of_range)")]


class ReviewRequest(Body):
    """The exam and the subjects (codes, each once) whose scores the candidate asks to have reviewed."""

    exam_id: Id
    subjects: Annotated[list[SubjectCode], Field(  # type: ignore[valid-type]
        min_length=1, max_length=score_reviews.SUBJECTS_MAX, json_schema_extra={"uniqueItems": True})]


class ScoreReviewDecision(Body):
    """The answer: unchanged, or corrected with the new score (one decimal at most, not above the subject's full
    mark, not the current score); a reason either way (the candidate reads it)."""

    model_config = ConfigDict(**Body.model_config, json_schema_extra={"oneOf": [
        {"properties": {"outcome": {"const": "unchanged"}}, "not": {"required": ["score"]}},
        {"properties": {"outcome": {"const": "corrected"}}, "required": ["score"]}]})
    outcome: Literal["unchanged", "corrected"]
    score: Annotated[float, Field(ge=0, le=MAX_SCORE)] = None  # type: ignore[assignment]
    reason: Text(1, score_reviews.REASON_MAX_CHARS)  # type: ignore[valid-type]


class ScoreReviewWindow(Body):
    """When candidates may ask for reviews (both null: not at all); closes_at after opens_at."""

    model_config = ConfigDict(**Body.model_config, json_schema_extra={"oneOf": [
        {"properties": {"opens_at": {"type": "null"}, "closes_at": {"type": "null"}}},
        {"properties": {"opens_at": {"type": "string"}, "closes_at": {"type": "string"}}}]})
    opens_at: WindowTime | None
    closes_at: WindowTime | None


class ScoreReview(Reply):
    """One review request as its candidate sees it."""

    review_id: int
    exam_id: int
    exam_name: str
    subject: str
    subject_name: str
    status: Literal["pending", "unchanged", "corrected"]
    score_before: float
    score_after: float | None
    reason: str | None
    requested_at: datetime
    decided_at: datetime | None


class Requested(Reply):
    """The requests made, one per subject."""

    reviews: list[ScoreReview]


class ScoredExam(Reply):
    """An exam the candidate has scores in: its window (none, not_open, open, closed) and the subjects."""

    exam_id: int
    exam_name: str
    window: Literal["none", "not_open", "open", "closed"]
    opens_at: datetime | None
    closes_at: datetime | None
    subjects: list[dict[str, Any]] = Field(description="[{subject, subject_name, score, requested}]")


class Mine(Reply):
    """The candidate's requests (every exam) and the exams they may ask about."""

    reviews: list[ScoreReview]
    exams: list[ScoredExam]


class QueuedScoreReview(ScoreReview):
    """One review request as operators see it."""

    registration_id: int
    province: str
    candidate_name: str
    id_number: str = Field(description="masked")
    full_mark: float
    score_now: float | None = Field(description="the score stored now")
    batch_id: str | None
    decided_by: str | None


class ScoreReviewPage(Reply):
    """A page of requests; ``next_after`` is the ``after`` of the next page (null: the last one)."""

    reviews: list[QueuedScoreReview]
    next_after: int | None


class ScoreReviewDecided(QueuedScoreReview):
    """The request as answered; a correction names its import (batch_id, already_applied on a retry)."""

    already_applied: bool | None = None


class ScoreReviewWindowReply(Reply):
    """The exam's review window as stored."""

    exam_id: int
    opens_at: datetime | None
    closes_at: datetime | None


def _shown(item: dict[str, Any]) -> dict[str, Any]:
    """Decimals as numbers and times as +08:00 ISO strings."""
    return {k: float(v) if isinstance(v, Decimal) else iso_local(v) if isinstance(v, datetime) else v
            for k, v in item.items()}


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else iso_local(moment)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """``core.score_reviews`` refusals as the API's errors."""
    try:
        yield
    except score_reviews.WindowNotOpen as exc:
        message = "该考试未开放成绩复核申请" if exc.opens_at is None else "成绩复核申请尚未开始"
        raise Conflict(message, code="not_open",
                       details={"opens_at": _time(exc.opens_at), "closes_at": _time(exc.closes_at)}) from None
    except score_reviews.WindowClosed as exc:
        raise Conflict("成绩复核申请已截止", code="closed",
                       details={"opens_at": _time(exc.opens_at), "closes_at": _time(exc.closes_at)}) from None
    except score_reviews.NoScore as exc:
        raise Conflict("所选科目没有成绩，不能申请复核", code="no_score", details={"subjects": exc.subjects}) from None
    except score_reviews.AlreadyRequested as exc:
        raise Conflict("所选科目已申请过成绩复核", code="already_requested",
                       details={"subjects": exc.subjects}) from None
    except score_reviews.ReviewNotFound:
        raise NotFoundError("复核申请不存在", code="score_review_not_found") from None
    except score_reviews.AlreadyDecided as exc:
        raise Conflict("该复核申请已处理", code="already_decided", details={"status": exc.status}) from None
    except score_reviews.CorrectionInvalid as exc:
        raise ValidationFailed({"score": exc.problem}, "复核后的成绩须不同于现有成绩且不超过满分") from None
    except score_reviews.NoTicket:
        raise Conflict("该考生没有准考证，无法更正成绩", code="no_ticket") from None
    except score_reviews.CorrectionConflict as exc:
        raise Conflict("该复核的成绩更正已按另一成绩导入，或未通过导入校验", code="correction_conflict",
                       details={"applied_score": None if exc.applied is None else float(exc.applied),
                                "reasons": exc.reasons}) from None
    except NotFound as exc:
        if exc.what == "exam":
            raise ExamNotFound(str(exc.key)) from None
        raise


# -- candidates ---------------------------------------------------------------------------------------


@routes.post("/api/v1/score-reviews", "score_reviews.create", caller=CANDIDATE, body=ReviewRequest,
             summary="Ask for a review (复核) of scores of one exam, within its review window",
             answers={201: Answer(Requested, "the requests, one per subject, pending")},
             errors={404: "exam_not_found",
                     409: "not_open (no window, or not yet: details.opens_at), closed (details.closes_at), "
                          "no_score (details.subjects without a score), already_requested (details.subjects; "
                          "nothing of the request is stored)",
                     422: "validation_failed: details.fields (subjects: duplicate, too_few, too_many, …)"})
async def create(request: web.Request) -> web.Response:
    """Store one pending request per subject, all or none."""
    candidate = await auth.candidate_id(request)
    body = parse_body(await json_bytes(request), ReviewRequest)
    subjects = [str(s) for s in body.subjects]
    twice = {f"subjects.{i}": "duplicate" for i, s in enumerate(subjects) if s in subjects[:i]}
    if twice:
        raise ValidationFailed(twice)
    with _refusals():
        made = await score_reviews.request(request.app[keys.PG], candidate, body.exam_id, subjects)
    return json_response({"reviews": [_shown(r) for r in made]}, status=201, headers=NO_STORE)


@routes.get("/api/v1/score-reviews", "score_reviews.list", caller=CANDIDATE,
            summary="The candidate's review requests (every exam) with their answers, and the exams scored",
            answers={200: Answer(Mine, "requests, oldest first; exams, newest first")})
async def list_mine(request: web.Request) -> web.Response:
    """Pending, unchanged or corrected, with the score before and after, the reason and the times."""
    candidate = await auth.candidate_id(request)
    pg = request.app[keys.PG]
    reviews, exams = await score_reviews.mine(pg, candidate), await score_reviews.scored_exams(pg, candidate)
    return json_response({"reviews": [_shown(r) for r in reviews],
                          "exams": [{**_shown(e), "subjects": [_shown(s) for s in e["subjects"]]} for e in exams]},
                         headers=NO_STORE)


# -- operators ----------------------------------------------------------------------------------------


def _review_id(request: web.Request) -> int:
    found = path_id(request.match_info["review_id"])
    if found is None:
        raise NotFoundError("复核申请不存在", code="score_review_not_found")
    return found


@routes.get("/admin/api/v1/score-reviews", "admin.score_reviews.list", caller=OPERATOR, roles=DECIDERS,
            answers={200: Answer(ScoreReviewPage, "a page")},
            summary="Score review requests within the operator's provinces, oldest first",
            params=(Param("exam_id", "query", {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}),
                    Param("status", "query", {"enum": [*score_reviews.STATUSES, "all"]}, "default pending"),
                    AFTER, LIMIT),
            errors={422: "validation_failed: a bad filter"})
async def list_reviews(request: web.Request) -> web.Response:
    """A page of requests in ``status`` (pending by default; ``all``)."""
    status = request.query.get("status", "pending")
    if status not in (*score_reviews.STATUSES, "all"):
        raise ValidationFailed({"status": "invalid_choice"}, "invalid query parameter")
    limit = page_limit(request)
    items = await score_reviews.queue(request.app[keys.PG], exam_id=query_id(request, "exam_id"),
                                      status=None if status == "all" else status, scope=adminauth.scope(request),
                                      after=query_id(request, "after") or 0, limit=limit)
    return json_response({"reviews": [_shown(r) for r in items],
                          "next_after": items[-1]["review_id"] if len(items) == limit else None}, headers=NO_STORE)


@routes.post("/admin/api/v1/score-reviews/{review_id}/decision", "admin.score_reviews.decide", caller=OPERATOR,
             roles=DECIDERS, body=ScoreReviewDecision,
             summary="Answer a review request: unchanged, or corrected through a one-row scores import",
             answers={200: Answer(ScoreReviewDecided, "answered")},
             errors={404: "score_review_not_found (also out of the reviewer's provinces)",
                     409: "already_decided (details.status: another operator answered first); no_ticket; "
                          "correction_conflict (batch review-<id> applied with details.applied_score, or the "
                          "import refused the row: details.reasons)",
                     422: "validation_failed: score (required, only_when_corrected, one_decimal, above_full_mark, "
                          "same_score), reason"})
async def decide(request: web.Request) -> web.Response:
    """Answer once: the first answer stored wins; a correction's score and its answer commit together."""
    review_id = _review_id(request)
    body = parse_body(await json_bytes(request), ScoreReviewDecision)
    operator, scope = adminauth.operator_of(request).name, adminauth.scope(request)
    reason = " ".join(body.reason.split())
    if not reason:
        raise ValidationFailed({"reason": "required"})
    app = request.app
    with _refusals():
        if body.outcome == "unchanged":
            if body.score is not None:
                raise ValidationFailed({"score": "only_when_corrected"})
            answered = await score_reviews.keep(app[keys.PG], review_id, reason=reason, operator=operator,
                                                scope=scope)
            return json_response(_shown(answered), headers=NO_STORE)
        if body.score is None:
            raise ValidationFailed({"score": "required"})
        tenths = round(body.score * 10)
        if abs(body.score * 10 - tenths) > 1e-6:  # 61.5 is 61.5; 61.55 has a second decimal
            raise ValidationFailed({"score": "one_decimal"})
        score = Decimal(tenths) / 10
        answered, result = await score_reviews.correct(app[keys.PG], review_id, score, reason=reason,
                                                       operator=operator, scope=scope, hooks=import_hooks(app))
    return json_response({**_shown(answered), "already_applied": result.already_applied}, headers=NO_STORE)


@routes.put("/admin/api/v1/exams/{exam_id}/score-review-window", "admin.score_review_window.put",
            caller=OPERATOR, roles=("admin",), body=ScoreReviewWindow,
            summary="Set (or with two nulls remove) the exam's score review window (noted in the config audit)",
            answers={200: Answer(ScoreReviewWindowReply, "stored")},
            errors={404: "exam_not_found",
                    422: "validation_failed: opens_at/closes_at (both or neither; closes_at after opens_at)"})
async def put_window(request: web.Request) -> web.Response:
    """Store the window; the config audit notes who changed it, from what to what."""
    exam_id = path_id(request.match_info["exam_id"])
    if exam_id is None:
        raise ExamNotFound(request.match_info["exam_id"])
    body = parse_body(await json_bytes(request), ScoreReviewWindow)
    if (body.opens_at is None) != (body.closes_at is None):
        raise ValidationFailed({"opens_at" if body.opens_at is None else "closes_at": "required"})
    if body.opens_at is not None and body.closes_at is not None and body.closes_at <= body.opens_at:
        raise ValidationFailed({"closes_at": "not_after_opens_at"})
    operator = adminauth.operator_of(request).name
    async with request.app[keys.PG].acquire() as conn, conn.transaction():
        with _refusals():
            before, after = await score_reviews.set_window(conn, exam_id, body.opens_at, body.closes_at)
        await audit_note(conn, operator, {
            "path": WINDOW_AUDIT_PATH.format(exam_id=exam_id),
            "old": {"opens_at": _time(before.opens_at), "closes_at": _time(before.closes_at)},
            "new": {"opens_at": _time(after.opens_at), "closes_at": _time(after.closes_at)}})
    return json_response({"exam_id": exam_id, "opens_at": _time(after.opens_at), "closes_at": _time(after.closes_at)})
