"""Operators' side of photos: the review queue, decisions, change requests and a photo's audit trail.

Reviewers see the photos the checks sent to review and a sample of the approved ones; they approve
(the photo is locked) or reject with a reason (the candidate uploads again). A candidate's change
request for a locked photo is granted (one new upload) or refused here. Scoped like registration
reviews: a provincial operator sees only candidates of its provinces, anything else is 404.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from core import photo_review, photos
from core.errors import NotFound
from gateway import adminauth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.errors import NotFoundError, ValidationFailed
from gateway.models import Body, Reply, Text
from gateway.pathids import path_id
from gateway.routes.photos import LINK_KEY
from gateway.routes.reviews import AFTER, LIMIT, REVIEWERS, page_limit, query_id
from gateway.routing import OPERATOR, Answer, Param, Routes

routes = Routes("Photo review")
REASON = Text(1, photo_review.REASON_MAX_CHARS,
              "a code of GET /admin/api/v1/photo-reject-reasons or the operator's own words")


class PhotoDecision(Body):
    """approve, or reject with a reason."""

    decision: Literal["approve", "reject"]
    reason: REASON | None = None  # type: ignore[valid-type]


class ChangeDecision(Body):
    """An optional note kept with the decision (the candidate reads it)."""

    reason: REASON | None = None  # type: ignore[valid-type]


class PhotoItem(Reply):
    """A photo as operators see it, with a signed link to the JPEG."""

    photo_id: int
    candidate_id: int
    candidate_name: str
    id_number: str = Field(description="masked")
    status: Literal["approved", "needs_review", "rejected"]
    problems: list[str]
    messages: list[str] = Field(description="each problem in Chinese")
    sampled: bool = Field(description="approved by the checks and picked for a human look")
    locked: bool
    uploaded_at: str
    reviewed_at: str | None
    reviewed_by: str | None
    review_reason: str | None
    url: str = Field(description="signed link to the JPEG, valid a few minutes")


class PhotoPage(Reply):
    """A page of a queue; ``next_after`` is the ``after`` of the next page (null: the last one)."""

    photos: list[PhotoItem]
    next_after: int | None


class PhotoHistory(PhotoItem):
    """One photo with the candidate's photo audit trail."""

    history: list[dict[str, object]]


class ChangeRequestItem(Reply):
    """A candidate's request to replace a locked photo."""

    request_id: int
    candidate_id: int
    candidate_name: str
    id_number: str = Field(description="masked")
    photo_id: int
    reason: str
    status: Literal["pending", "granted", "refused", "used"]
    requested_at: str
    decided_at: str | None
    decided_by: str | None
    decision_reason: str | None
    used_at: str | None
    new_photo_id: int | None


class ChangeRequestPage(Reply):
    """A page of change requests."""

    requests: list[ChangeRequestItem]
    next_after: int | None


def _photo_id(request: web.Request) -> int:
    found = path_id(request.match_info["photo_id"])
    if found is None:
        raise NotFoundError("照片不存在", code="photo_not_found")
    return found


def _request_id(request: web.Request) -> int:
    found = path_id(request.match_info["request_id"])
    if found is None:
        raise NotFoundError("更换申请不存在", code="change_request_not_found")
    return found


def _with_link(request: web.Request, item: dict[str, object]) -> dict[str, object]:
    app = request.app
    photo_id = item["photo_id"]
    assert isinstance(photo_id, int)
    item["url"], _ = photos.sign_photo_link(app[LINK_KEY], photo_id, ttl_s=app[keys.SETTINGS].photo_link_ttl_s)
    problems = item["problems"]
    assert isinstance(problems, list)
    item["messages"] = [photos.PROBLEM_MESSAGES.get(code, code) for code in problems]
    return item


def _reason(raw: str | None) -> str | None:
    text = None if raw is None else " ".join(raw.split())
    return text or None


@routes.get("/admin/api/v1/photo-reject-reasons", "admin.photos.reasons", caller=OPERATOR, roles=REVIEWERS,
            answers={200: Answer(dict[str, str], "code → message")},
            summary="The reasons operators pick from when rejecting a photo (free text is kept as typed)")
async def reject_reasons(request: web.Request) -> web.Response:
    """``{code: message}`` of the listed reasons."""
    return json_response(photo_review.REJECT_REASONS)


@routes.get("/admin/api/v1/photos", "admin.photos.list", caller=OPERATOR, roles=REVIEWERS,
            answers={200: Answer(PhotoPage, "a page")},
            params=(Param("status", "query", {"enum": sorted(photo_review.QUEUES)},
                          "needs_review (default): flagged by the checks; sampled: approved and picked for a look; "
                          "pending: both; approved; rejected"), AFTER, LIMIT),
            summary="Current photos to review (or in another state), within the operator's scope, oldest first",
            errors={422: "validation_failed: a bad filter"})
async def list_photos(request: web.Request) -> web.Response:
    """A page of photos in the queue ``status``."""
    which = request.query.get("status", "needs_review")
    if which not in photo_review.QUEUES:
        raise ValidationFailed({"status": "invalid_choice"}, "invalid query parameter")
    limit = page_limit(request)
    items = await photo_review.queue(request.app[keys.PG], which, scope=adminauth.scope(request),
                                     after=query_id(request, "after") or 0, limit=limit)
    return json_response({"photos": [_with_link(request, item) for item in items],
                          "next_after": items[-1]["photo_id"] if len(items) == limit else None}, headers=NO_STORE)


@routes.get("/admin/api/v1/photos/{photo_id}", "admin.photos.get", caller=OPERATOR, roles=REVIEWERS,
            answers={200: Answer(PhotoHistory, "the photo and the candidate's photo history")},
            summary="One photo with the candidate's photo audit trail",
            errors={404: "photo_not_found (or out of scope)"})
async def get_photo(request: web.Request) -> web.Response:
    """The photo, its link and every upload, decision and change request of its candidate."""
    photo_id = _photo_id(request)
    pg = request.app[keys.PG]
    found = await photo_review.photo(pg, photo_id, scope=adminauth.scope(request))
    if found is None:
        raise NotFoundError("照片不存在", code="photo_not_found")
    item = _with_link(request, found)
    candidate_id = found["candidate_id"]
    assert isinstance(candidate_id, int)
    item["history"] = await photo_review.events(pg, candidate_id)
    return json_response(item, headers=NO_STORE)


@routes.post("/admin/api/v1/photos/{photo_id}/review", "admin.photos.review", caller=OPERATOR, roles=REVIEWERS,
             body=PhotoDecision, answers={200: Answer(PhotoItem, "decided")},
             summary="Approve (locks it) or reject with a reason (the candidate uploads again) a current photo",
             errors={404: "photo_not_found (or out of scope)",
                     409: "already_reviewed (details.status, details.reviewed_by); photo_superseded: the candidate "
                          "uploaded a newer one",
                     422: "validation_failed: a rejection needs a reason"})
async def review_photo(request: web.Request) -> web.Response:
    """Decide once on a photo."""
    photo_id = _photo_id(request)
    body = parse_body(await json_bytes(request), PhotoDecision)
    reason = _reason(body.reason)
    if body.decision == "reject" and reason is None:
        raise ValidationFailed({"reason": "required"}, "驳回照片时请填写原因")
    try:
        decided = await photo_review.decide(request.app[keys.PG], photo_id, approve=body.decision == "approve",
                                            reason=reason, operator=adminauth.operator_of(request).name,
                                            scope=adminauth.scope(request))
    except NotFound:
        raise NotFoundError("照片不存在", code="photo_not_found") from None
    return json_response(_with_link(request, decided), headers=NO_STORE)


@routes.get("/admin/api/v1/photo-change-requests", "admin.photo_changes.list", caller=OPERATOR, roles=REVIEWERS,
            answers={200: Answer(ChangeRequestPage, "a page")},
            params=(Param("status", "query", {"enum": ["pending", "granted", "refused", "used"]}, "default pending"),
                    AFTER, LIMIT),
            summary="Candidates' requests to replace a locked photo, within the operator's scope, oldest first",
            errors={422: "validation_failed: a bad filter"})
async def list_change_requests(request: web.Request) -> web.Response:
    """A page of change requests in ``status``."""
    status = request.query.get("status", "pending")
    if status not in ("pending", "granted", "refused", "used"):
        raise ValidationFailed({"status": "invalid_choice"}, "invalid query parameter")
    limit = page_limit(request)
    items = await photo_review.change_requests(request.app[keys.PG], status, scope=adminauth.scope(request),
                                               after=query_id(request, "after") or 0, limit=limit)
    return json_response({"requests": items, "next_after": items[-1]["request_id"] if len(items) == limit else None},
                         headers=NO_STORE)


async def _decide_change(request: web.Request, *, grant: bool) -> web.Response:
    request_id = _request_id(request)
    reason = _reason(parse_body(await json_bytes(request), ChangeDecision).reason) if request.can_read_body else None
    if not grant and reason is None:
        raise ValidationFailed({"reason": "required"}, "拒绝更换申请时请填写原因")
    try:
        decided = await photo_review.decide_change(request.app[keys.PG], request_id, grant=grant,
                                                   operator=adminauth.operator_of(request).name, reason=reason,
                                                   scope=adminauth.scope(request))
    except NotFound:
        raise NotFoundError("更换申请不存在", code="change_request_not_found") from None
    return json_response(decided, headers=NO_STORE)


CHANGE_ERRORS = {404: "change_request_not_found (or out of scope)",
                 409: "already_decided: details.status"}


@routes.post("/admin/api/v1/photo-change-requests/{request_id}/grant", "admin.photo_changes.grant",
             caller=OPERATOR, roles=REVIEWERS, body=ChangeDecision, body_required=False,
             answers={200: Answer(ChangeRequestItem, "granted: the candidate may upload one new photo")},
             summary="Grant a change request: exactly one new upload is allowed", errors=CHANGE_ERRORS)
async def grant_change(request: web.Request) -> web.Response:
    """Grant a pending change request."""
    return await _decide_change(request, grant=True)


@routes.post("/admin/api/v1/photo-change-requests/{request_id}/refuse", "admin.photo_changes.refuse",
             caller=OPERATOR, roles=REVIEWERS, body=ChangeDecision,
             answers={200: Answer(ChangeRequestItem, "refused: the photo stays locked")},
             summary="Refuse a change request with a reason",
             errors={**CHANGE_ERRORS, 422: "validation_failed: a refusal needs a reason"})
async def refuse_change(request: web.Request) -> web.Response:
    """Refuse a pending change request."""
    return await _decide_change(request, grant=False)
