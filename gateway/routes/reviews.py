"""Operators' side of the lifecycle: the review queue and decisions, and the data the automatic review reads.

Reviewers (a province's exam authority) see and decide only registrations of the provinces in
their scope: anything else is 404, as if it did not exist. A decision names the version it was
made on (``If-Match``): a registration that moved since is 412, one already decided is 409, so
however many operators race, each review gets exactly one decision. Documents, eligibility rules,
review rules, review points and the integrity archive are maintained by operators and admins.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import Field

from core import documents, lifecycle, qualification, reviews
from core.documents import ArchiveEntry
from core.errors import NotFound
from core.identity import normalise_id_number
from core.timeutil import iso_local
from gateway import adminauth, keys
from gateway.bodies import NO_STORE, json_bytes, json_response, parse_body
from gateway.errors import ApiError, NotFoundError, ValidationFailed
from gateway.models import Body, Id, Reply, Text
from gateway.pathids import path_id
from gateway.routes.registrations import after_transition
from gateway.routing import OPERATOR, Answer, Param, Routes
from payments import refunds

routes = Routes("Reviews")
REVIEWERS = ("reviewer", "operator", "admin")
PAGE_MAX = 200
BULK_MAX = 500
ARCHIVE_IMPORT_MAX = 10_000
PROVINCE_PATTERN = "^[1-8][0-9]$"
_STATES = "(draft|under_review|onsite_review|approved|rejected|paid|cancelled|expired)"
STATUS_LIST = f"^{_STATES}(,{_STATES})*$"
AFTER = Param("after", "query", {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999},
              "the last id of the previous page")
_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')
Province = Annotated[str, Field(pattern=r"^[1-8][0-9]$")]


class Decision(Body):
    """approve, or reject with at least one reason: codes from GET /admin/api/v1/review-reasons or free text."""

    decision: Literal["approve", "reject"]
    reasons: list[Text(1, reviews.REASON_MAX_CHARS)] = Field([], max_length=10)  # type: ignore[valid-type]


class BulkApproval(Body):
    """Registrations to approve at once (each one still decided once)."""

    registration_ids: Annotated[list[Id], Field(min_length=1, max_length=BULK_MAX)]


class Decided(Reply):
    """The decision taken."""

    registration_id: int
    status: Literal["approved", "rejected"]
    version: int
    reasons: list[dict[str, str]]


class ReviewItem(Reply):
    """A registration as the review queue shows it."""

    registration_id: int
    exam_id: int
    province: str
    city: str
    level: str
    specialty: str
    subjects: list[str]
    work_years: int
    status: str
    version: int
    reasons: list[dict[str, str]]
    review_mode: str | None
    review_point: int | None
    submitted_at: datetime | None
    candidate_name: str
    id_number: str = Field(description="masked")


class ReviewPage(Reply):
    """A page of the queue; ``next_after`` is the ``after`` of the next page (null: the last one)."""

    registrations: list[ReviewItem]
    next_after: int | None


class ReviewDetails(ReviewItem):
    """One registration to decide on, with the candidate's education, the commitment and the history."""

    educations: list[dict[str, Any]]
    commitment: dict[str, Any] | None
    history: list[dict[str, Any]]


class BulkResults(Reply):
    """Per registration id: approved (with its version), already_decided (with its status) or not_found."""

    results: dict[str, dict[str, Any]]
    approved: int


class Published(Reply):
    """The new document version."""

    exam_id: int
    kind: str
    version: int
    sha256: str


class RulesDocument(Reply):
    """A level's eligibility rules."""

    paths: list[dict[str, Any]]
    majors_same: list[str]
    majors_related: list[str]
    required_subjects: list[str]
    exemptions: list[dict[str, Any]]


class ReviewRuleReply(Reply):
    """The province's review rule as stored."""

    exam_id: int
    province: str
    review_mode: str
    manual_mode: str
    commitment: bool
    withdraw_rule: str


class ReviewPointMade(Reply):
    """The new review point."""

    review_point_id: int
    province: str
    city: str
    name: str
    address: str


class Imported(Reply):
    """How many records were new, and how many were there already."""

    imported: int
    already_there: int


class ArchiveList(Reply):
    """Integrity-archive records, removed ones marked."""

    records: list[dict[str, Any]]


class CancellationList(Reply):
    """Cancellation requests."""

    cancellations: list[dict[str, Any]]


class CancellationDecided(Reply):
    """The decision: cancelled with the refund's id, or the request refused."""

    registration_id: int
    status: str
    refund_id: str | None = None
    cancellation: str | None = None


class DocumentBody(Body):
    """A new version of one of the exam's texts."""

    title: Text(1, 200)  # type: ignore[valid-type]
    text: Text(1, 100_000)  # type: ignore[valid-type]


class ReviewRuleBody(Body):
    """How one province reviews the exam."""

    review_mode: Literal["auto", "online", "onsite"]
    manual_mode: Literal["online", "onsite"] = "online"
    commitment: bool = True
    withdraw_rule: Literal["until_payment", "until_review", "locked"] = "until_payment"


class ReviewPointBody(Body):
    """A review point (审核点) of the exam."""

    province: Province
    city: Text(1, 32)  # type: ignore[valid-type]
    name: Text(1, 64)  # type: ignore[valid-type]
    address: Text(0, 200) = ""  # type: ignore[valid-type]


class ArchiveRecord(Body):
    """One integrity-archive record."""

    id_number: Text(5, 32)  # type: ignore[valid-type]
    exam_family: Text(1, 64) = "*"  # type: ignore[valid-type]
    violation: Text(1, 200)  # type: ignore[valid-type]
    starts_on: date
    ends_on: date


class ArchiveImport(Body):
    """Records to import, in one transaction."""

    records: Annotated[list[ArchiveRecord], Field(min_length=1, max_length=ARCHIVE_IMPORT_MAX)]


def _operator(request: web.Request) -> str:
    return adminauth.operator_of(request).name


def _registration(request: web.Request) -> int:
    found = path_id(request.match_info["registration_id"])
    if found is None:
        raise NotFoundError("报名记录不存在", code="registration_not_found")
    return found


def query_id(request: web.Request, name: str) -> int | None:
    """An id in the query string (None when absent or empty); 422 when it is not one."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    found = path_id(raw)
    if found is None:
        raise ValidationFailed({name: "must_be_integer"}, "invalid query parameter")
    return found


LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "page size, default 50")


def page_limit(request: web.Request) -> int:
    """The ``limit`` query parameter (default 50, at most ``PAGE_MAX``); 422 otherwise."""
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= PAGE_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {PAGE_MAX}"}, "invalid query parameter")
    return int(raw)


def _exam(request: web.Request) -> int:
    return request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"]).id


@routes.get("/admin/api/v1/review-reasons", "admin.review_reasons",
            answers={200: Answer(dict[str, str], "code → message")}, caller=OPERATOR, roles=REVIEWERS,
            summary="The rejection reasons operators pick from (free text is kept as other)")
async def review_reasons(request: web.Request) -> web.Response:
    """``{code: message}`` of the listed reasons."""
    return json_response(reviews.REVIEW_REASONS)


@routes.get("/admin/api/v1/reviews", "admin.reviews.list",
            answers={200: Answer(ReviewPage, "a page")}, caller=OPERATOR, roles=REVIEWERS,
            summary="Registrations to review, within the operator's scope, oldest first",
            params=(Param("exam_id", "query", {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}),
                    Param("province", "query", {"type": "string", "pattern": PROVINCE_PATTERN}),
                    Param("review_point", "query",
                          {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}),
                    Param("status", "query", {"type": "string", "pattern": STATUS_LIST},
                          "comma-separated states; default under_review,onsite_review"),
                    AFTER, LIMIT),
            errors={422: "validation_failed: a bad filter"})
async def list_reviews(request: web.Request) -> web.Response:
    """A page of registrations waiting for review (or in ``status``)."""
    query = request.query
    statuses = [s for s in query.get("status", "under_review,onsite_review").split(",") if s]
    if not statuses or not set(statuses) <= set(lifecycle.STATES):
        raise ValidationFailed({"status": "invalid_choice"}, "invalid query parameter")
    province = query.get("province") or None
    if province is not None and not re.fullmatch(r"[1-8][0-9]", province):
        raise ValidationFailed({"province": "must be a two-digit province code"}, "invalid query parameter")
    limit = page_limit(request)
    items = await reviews.queue(request.app[keys.PG], statuses=statuses, exam_id=query_id(request, "exam_id"),
                                province=province, review_point=query_id(request, "review_point"),
                                scope=adminauth.scope(request), after=query_id(request, "after") or 0,
                                limit=limit)
    return json_response({"registrations": items,
                          "next_after": items[-1]["registration_id"] if len(items) == limit else None},
                         headers=NO_STORE)


@routes.get("/admin/api/v1/registrations/{registration_id}", "admin.registrations.get",
            answers={200: Answer(ReviewDetails, "the registration")}, caller=OPERATOR,
            roles=REVIEWERS, summary="One registration with the candidate's education and its history (ETag: version)",
            errors={404: "registration_not_found (or out of scope)"})
async def get_registration(request: web.Request) -> web.Response:
    """The registration to decide on; its ``ETag`` is the version to send as ``If-Match``."""
    registration_id = _registration(request)
    found = await reviews.details(request.app[keys.PG], registration_id, adminauth.scope(request))
    if found is None:
        raise NotFoundError("报名记录不存在", code="registration_not_found")
    found["history"] = [{**e, "at": iso_local(e["at"])}
                        for e in await lifecycle.events(request.app[keys.PG], registration_id)]
    return json_response(found, headers={**NO_STORE, "ETag": f'"{found["version"]}"'})


@routes.post("/admin/api/v1/registrations/{registration_id}/review", "admin.registrations.review", caller=OPERATOR,
             roles=REVIEWERS, body=Decision,
             params=(Param("If-Match", "header", {"type": "string"}, "the registration's version (its ETag)"),),
             summary="Approve, or reject with reasons, a registration under review",
             answers={200: Answer(Decided, "decided")},
             errors={404: "registration_not_found (or out of scope)", 409: "already_decided: details.status",
                     412: "precondition_failed: the registration changed since (details.version)",
                     422: "validation_failed: a rejection needs reasons"})
async def review(request: web.Request) -> web.Response:
    """Decide one review; ``If-Match`` makes a decision on a stale page fail instead of overruling."""
    registration_id = _registration(request)
    decision = parse_body(await json_bytes(request), Decision)
    if decision.decision == "reject" and not decision.reasons:
        raise ValidationFailed({"reasons": "required"}, "驳回时请至少填写一条原因")
    expected: int | None = None
    if "If-Match" in request.headers:
        match = _IF_MATCH.match(request.headers["If-Match"])
        if match is None:
            raise ApiError("If-Match 应为报名记录的版本号", code="precondition_failed", status=412)
        expected = int(match.group(1))
    moved = await _decide(request, registration_id, decision.decision == "approve",
                          reviews.reasons_of(decision.reasons), expected)
    return json_response({"registration_id": registration_id, "status": moved.status, "version": moved.version,
                          "reasons": list(moved.reasons)}, headers=NO_STORE)


async def _decide(request: web.Request, registration_id: int, approve: bool, reasons: list[qualification.Reason],
                  expected: int | None) -> lifecycle.Moved:
    try:
        moved = await lifecycle.decide(request.app[keys.PG], registration_id, approve=approve, reasons=reasons,
                                       operator=_operator(request), provinces=adminauth.scope(request),
                                       expected_version=expected)
    except NotFound:
        raise NotFoundError("报名记录不存在", code="registration_not_found") from None
    await after_transition(request.app, moved)
    return moved


@routes.post("/admin/api/v1/reviews/approve", "admin.reviews.approve",
             answers={200: Answer(BulkResults, "per id")}, caller=OPERATOR, roles=REVIEWERS,
             body=BulkApproval, summary="Approve many registrations under review at once",
             errors={422: "validation_failed: 1-500 registration ids"})
async def bulk_approve(request: web.Request) -> web.Response:
    """Approve each listed registration still under review; every id answers approved, already_decided or not_found."""
    approval = parse_body(await json_bytes(request), BulkApproval)
    results: dict[str, Any] = {}
    for registration_id in dict.fromkeys(approval.registration_ids):
        try:
            moved = await _decide(request, registration_id, True, [], None)
            results[str(registration_id)] = {"result": "approved", "version": moved.version}
        except lifecycle.AlreadyDecided as exc:
            results[str(registration_id)] = {"result": "already_decided", "status": exc.status}
        except NotFoundError:
            results[str(registration_id)] = {"result": "not_found"}
    return json_response({"results": results, "approved": sum(r["result"] == "approved" for r in results.values())},
                         headers=NO_STORE)


# -- cancellations after payment ---------------------------------------------------------------------


class CancellationDecision(Body):
    """Approve a paid candidate's cancellation (the registration is cancelled and refunded), or refuse it."""

    decision: Literal["approve", "refuse"]
    note: Text(0, reviews.REASON_MAX_CHARS) = ""  # type: ignore[valid-type]


@routes.get("/admin/api/v1/cancellations", "admin.cancellations.list",
            answers={200: Answer(CancellationList, "requests")}, caller=OPERATOR,
            params=(Param("status", "query", {"enum": ["pending", "approved", "refused"]}, "default pending"),),
            summary="Paid candidates' cancellation requests (放弃报名 after payment), oldest first",
            errors={422: "validation_failed: unknown status"})
async def list_cancellations(request: web.Request) -> web.Response:
    """Requests in ``status`` within the operator's scope."""
    status = request.query.get("status", "pending")
    if status not in ("pending", "approved", "refused"):
        raise ValidationFailed({"status": "invalid_choice"}, "invalid query parameter")
    found = await lifecycle.cancellations(request.app[keys.PG], status=status, scope=adminauth.scope(request))
    return json_response({"cancellations": [
        {**r, "requested_at": iso_local(r["requested_at"]),
         "decided_at": None if r["decided_at"] is None else iso_local(r["decided_at"])} for r in found]},
        headers=NO_STORE)


@routes.post("/admin/api/v1/registrations/{registration_id}/cancellation", "admin.cancellations.decide",
             answers={200: Answer(CancellationDecided, "refused"),
                      202: Answer(CancellationDecided, "cancelled, refund requested")},
             caller=OPERATOR, body=CancellationDecision,
             summary="Approve a cancellation request into a refund (202), or refuse it",
             errors={404: "registration_not_found; cancellation_request_not_found (none pending)",
                     409: "invalid_state: the registration is not paid; refund_not_possible (no paid trade)"})
async def decide_cancellation(request: web.Request) -> web.Response:
    """Approve: cancelled, ticket withdrawn, seat released, the payment refunded through its provider."""
    registration_id = _registration(request)
    body = parse_body(await json_bytes(request), CancellationDecision)
    operator, scope = _operator(request), adminauth.scope(request)
    app = request.app
    if body.decision == "refuse":
        await lifecycle.refuse_cancellation(app[keys.PG], registration_id, operator=operator, provinces=scope,
                                            note=body.note)
        return json_response({"registration_id": registration_id, "status": "paid", "cancellation": "refused"})
    async with app[keys.PG].acquire() as conn, conn.transaction():
        moved, order = await lifecycle.approve_cancellation(conn, registration_id, operator=operator,
                                                            provinces=scope)
        refund_id = await refunds.request_refund(conn, order_no=order.order_no, trade_no=order.trade_no,
                                                 provider=order.provider, amount_fen=order.amount_fen,
                                                 reason="cancellation", requested_by=operator)
        await conn.execute("UPDATE cancellation_requests SET refund_id = $2 WHERE registration_id = $1",
                           registration_id, refund_id)
    await after_transition(app, moved, force_release=True)  # the paid seat goes back to the site
    return json_response({"registration_id": registration_id, "status": moved.status, "refund_id": refund_id},
                         status=202)


# -- what the automatic review reads -----------------------------------------------------------------


@routes.post("/admin/api/v1/exams/{exam_id}/documents/{kind}", "admin.documents.publish",
             answers={201: Answer(Published, "published")}, caller=OPERATOR,
             body=DocumentBody, summary="Publish a new version of the exam's notice, commitment or instructions",
             errors={404: "exam_not_found; document_not_found (unknown kind)"})
async def publish_document(request: web.Request) -> web.Response:
    """A new version; signatures keep naming the version they signed."""
    exam_id = _exam(request)
    kind = request.match_info["kind"]
    if kind not in documents.KINDS:
        raise NotFoundError("没有这种文件", code="document_not_found", details={"kind": kind})
    body = parse_body(await json_bytes(request), DocumentBody)
    found = await documents.publish(request.app[keys.PG], exam_id, kind, body.title, body.text,
                                    actor=_operator(request))
    return json_response({"exam_id": exam_id, "kind": kind, "version": found.version, "sha256": found.sha256},
                         status=201)


@routes.get("/admin/api/v1/exams/{exam_id}/eligibility/{level}", "admin.eligibility.get",
            answers={200: Answer(RulesDocument, "the rules")}, caller=OPERATOR,
            roles=REVIEWERS, summary="A level's eligibility rules", errors={404: "exam_not_found; rules_not_found"})
async def get_rules(request: web.Request) -> web.Response:
    """The stored rules of one level."""
    exam_id = _exam(request)
    rules = await qualification.load_rules(request.app[keys.PG], exam_id, request.match_info["level"])
    if rules is None:
        raise NotFoundError("该级别未设置报考条件", code="rules_not_found")
    return json_response(rules.model_dump())


@routes.put("/admin/api/v1/exams/{exam_id}/eligibility/{level}", "admin.eligibility.put",
            answers={200: Answer(RulesDocument, "stored")}, caller=OPERATOR, body=qualification.EligibilityRules,
            summary="Set a level's eligibility rules (education paths, majors, required subjects, exemptions)",
            errors={404: "exam_not_found; level_not_found",
                    422: "validation_failed: details.fields (unknown_subject, not_required, …)"})
async def put_rules(request: web.Request) -> web.Response:
    """Store the rules the automatic review applies to the level."""
    exam = request.app[keys.CATALOGUE].exam_of_path(request.match_info["exam_id"])
    level = request.match_info["level"]
    if not any(lvl["code"] == level for lvl in exam.levels):
        raise NotFoundError("该考试没有这个级别", code="level_not_found", details={"level": level})
    shaped = parse_body(await json_bytes(request), qualification.EligibilityRules)
    rules = qualification.parse_rules(shaped.model_dump(), exam.subjects)
    await qualification.save_rules(request.app[keys.PG], exam.id, level, rules, actor=_operator(request))
    return json_response(rules.model_dump())


@routes.put("/admin/api/v1/exams/{exam_id}/review-rules/{province}", "admin.review_rules.put",
            answers={200: Answer(ReviewRuleReply, "stored")}, caller=OPERATOR, body=ReviewRuleBody,
            params=(Param("province", "path", {"type": "string", "pattern": PROVINCE_PATTERN}, "a province code"),),
            summary="How one province reviews the exam (mode, commitment, withdrawal rule)",
            errors={404: "exam_not_found", 422: "validation_failed"})
async def put_review_rule(request: web.Request) -> web.Response:
    """Store the province's review rule."""
    exam_id = _exam(request)
    province = request.match_info["province"]
    if not re.fullmatch(r"[1-8][0-9]", province):
        raise ValidationFailed({"province": "must be a two-digit province code"})
    body = parse_body(await json_bytes(request), ReviewRuleBody)
    await request.app[keys.PG].execute(
        """INSERT INTO exam_review_rules (exam_id, province, review_mode, manual_mode, commitment, withdraw_rule)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (exam_id, province) DO UPDATE SET review_mode = EXCLUDED.review_mode,
               manual_mode = EXCLUDED.manual_mode, commitment = EXCLUDED.commitment,
               withdraw_rule = EXCLUDED.withdraw_rule""",
        exam_id, province, body.review_mode, body.manual_mode, body.commitment, body.withdraw_rule)
    return json_response({"exam_id": exam_id, "province": province, **body.model_dump()})


@routes.post("/admin/api/v1/exams/{exam_id}/review-points", "admin.review_points.create",
             answers={201: Answer(ReviewPointMade, "created")}, caller=OPERATOR,
             body=ReviewPointBody, summary="Add a review point (审核点) to the exam",
             errors={404: "exam_not_found", 409: "review_point_exists", 422: "validation_failed"})
async def add_review_point(request: web.Request) -> web.Response:
    """A new review point; the catalogue shows it from its next refresh."""
    exam_id = _exam(request)
    body = parse_body(await json_bytes(request), ReviewPointBody)
    point_id = await request.app[keys.PG].fetchval(
        """INSERT INTO review_points (exam_id, province, city, name, address) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (exam_id, province, name) DO NOTHING RETURNING id""",
        exam_id, body.province, body.city, body.name, body.address)
    if point_id is None:
        raise ApiError("该省份已有同名审核点", code="review_point_exists", status=409)
    await request.app[keys.CATALOGUE].refresh()
    return json_response({"review_point_id": point_id, **body.model_dump()}, status=201)


# -- the integrity archive ---------------------------------------------------------------------------


def _csv_records(raw: bytes) -> list[dict[str, str]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed({"body": "not_utf8"}, "CSV 文件须为 UTF-8 编码") from None
    reader = csv.DictReader(io.StringIO(text))
    expected = {"id_number", "exam_family", "violation", "starts_on", "ends_on"}
    if reader.fieldnames is None or not {"id_number", "violation", "starts_on", "ends_on"} <= set(reader.fieldnames) \
            or not set(reader.fieldnames) <= expected:
        raise ValidationFailed({"header": "must be id_number,exam_family,violation,starts_on,ends_on"})
    return [{k: v for k, v in row.items() if v not in (None, "") or k != "exam_family"} for row in reader]


@routes.post("/admin/api/v1/integrity-records", "admin.integrity.add",
             answers={201: Answer(Imported, "imported")}, caller=OPERATOR,
             body=ArchiveImport,
             summary="Import integrity-archive records, all or none (also as text/csv with the header "
                     "id_number,exam_family,violation,starts_on,ends_on)",
             errors={422: "validation_failed: every bad record, as records.N.field (CSV: line numbers from 2)"})
async def import_records(request: web.Request) -> web.Response:
    """Import records in one transaction; an entry already there is kept (idempotent)."""
    raw = await json_bytes(request, ("application/json", "text/csv"))
    if request.content_type == "text/csv":
            raw = orjson.dumps({"records": _csv_records(raw)})
    body = parse_body(raw, ArchiveImport)
    bad = {f"records.{i}.ends_on": "before_starts_on" for i, r in enumerate(body.records) if r.ends_on < r.starts_on}
    if bad:
        raise ValidationFailed(bad)
    entries = [ArchiveEntry(normalise_id_number(r.id_number), r.exam_family.strip(), r.violation.strip(), r.starts_on,
                            r.ends_on) for r in body.records]
    added = await documents.add_records(request.app[keys.PG], entries, actor=_operator(request))
    return json_response({"imported": added, "already_there": len(body.records) - added}, status=201)


@routes.get("/admin/api/v1/integrity-records", "admin.integrity.list",
            answers={200: Answer(ArchiveList, "records")}, caller=OPERATOR,
            params=(Param("id_number", "query", {"type": "string"}), AFTER),
            summary="Integrity-archive records, by id (one person's with id_number)",
            errors={422: "validation_failed: after is not an id"})
async def list_records(request: web.Request) -> web.Response:
    """Records, removed ones marked."""
    asked = request.query.get("id_number")
    found = await documents.records(request.app[keys.PG], id_number=normalise_id_number(asked) if asked else None,
                                    after=query_id(request, "after") or 0)
    return json_response({"records": [{**r, "created_at": iso_local(r["created_at"]),
                                       "removed_at": None if r["removed_at"] is None
                                       else iso_local(r["removed_at"])} for r in found]})


@routes.delete("/admin/api/v1/integrity-records/{record_id}", "admin.integrity.remove", caller=OPERATOR,
               summary="Remove a record from the archive (it stays, marked removed)",
               answers={204: Answer(None, "removed")}, errors={404: "record_not_found"})
async def remove_record(request: web.Request) -> web.Response:
    """Mark a record removed."""
    record_id = path_id(request.match_info["record_id"])
    if record_id is None or not await documents.remove_record(request.app[keys.PG], record_id,
                                                               actor=_operator(request)):
        raise NotFoundError("没有这条记录", code="record_not_found")
    return web.Response(status=204)

