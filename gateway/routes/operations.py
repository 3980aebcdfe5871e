"""The operators' tools beside the live config: live stats, load-test tokens, reconciliation, dead letters,
refunds (listed, shown with their ledger, executed again), and prewarming an exam's lookups. Every route
needs an admin token.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import asyncpg
from aiohttp import web
from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from captcha import loadtest
from core.db import Conn
from core.timeutil import iso_local
from gateway import keys
from gateway.adminauth import ADMIN_NAME
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.catalogue import ExamNotFound
from gateway.errors import Conflict, NotFoundError, ValidationFailed
from gateway.heartbeats import read_workers
from gateway.liveconfig import DEFAULT
from gateway.models import Body, Int, Reply, Text
from gateway.pathids import path_id
from gateway.routing import OPERATOR, Answer, Param, Routes
from gateway.stats import read_stats
from lookups.prewarm import prewarm
from payments import refunds
from payments.errors import RefundFinished, RefundNotFound
from queueing import writebehind
from queueing.reconcile import reconcile as reconcile_holds

routes = Routes("Operations")
# Replays take a JSON body under either type, as the config PATCH does.
REPLAY_TYPES = ("application/merge-patch+json", "application/json")

STATS_WINDOW_S = 10


LOADTEST_TTL_MAX_S = 24 * 3600


LOADTEST_NAME_MAX_CHARS = 100


LOADTEST_AUDIT_PATH = "loadtest_tokens"


DEAD_LETTERS_MAX = 1000


REFUNDS_MAX = 1000


# At most 19 digits a part: a stream id's parts are 64-bit, and Redis refuses a larger one with an error.
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"


_STREAM_ID = re.compile(STREAM_ID).fullmatch


class WorkerSeen(Reply):
    """A worker heard from in the last day."""

    id: str
    last_seen_s: float
    alive: bool


class Stats(Reply):
    """Live figures of all processes; every registered provider adds its section (queues, seats, hold_streams)."""

    window_s: float
    routes: dict[str, dict[str, float]]
    totals: dict[str, float]
    config_version: int
    workers: list[WorkerSeen]


class SiteDrift(Reply):
    """A drifted site: what PostgreSQL implies and what Redis had (null: the key was missing)."""

    site_id: int
    capacity: int
    held: int
    expected_left: int
    found_left: int | None


class ExamDrift(Reply):
    """What reconcile found and repaired in one exam."""

    exam_id: int
    drifted: bool
    holds_expected: int
    holds_added: int
    holds_removed: int
    holds_changed: int
    holds_in_flight: int = Field(description="registrations whose latest hold event is not yet in PostgreSQL")
    oversold_sites: list[int]
    sites: list[SiteDrift]


class DriftReport(Reply):
    """The drift found and repaired; only drifted sites are listed."""

    drifted: bool
    events_drained: int
    exams: list[ExamDrift]


class DeadLetter(Reply):
    """A hold event the write-behind gave up on."""

    id: str
    stream: str
    entry_id: str
    deliveries: int
    error: str
    fields: dict[str, str]


class DeadLetters(Reply):
    """Dead letters, oldest first."""

    dead_letters: list[DeadLetter]


class Replayed(Reply):
    """How many dead letters went back on their streams."""

    replayed: int = Field(ge=0)


RefundStatus = Literal["pending", "requested", "succeeded", "failed"]  # payments.refunds.STATUSES
REFUND_ID = r"^RF[0-9]{24}$"
_REFUND_ID = re.compile(REFUND_ID).fullmatch


class Refund(Reply):
    """A refund: a payment that must go back (or a cancellation's fee), and how sending it went."""

    refund_id: str
    status: RefundStatus = Field(description="pending → requested → succeeded | failed (failed is retried "
                                             "while next_attempt_at is set)")
    attempts: int = Field(ge=0, description="requests sent to the provider")
    last_error: str | None = Field(description="why the last attempt failed, as the provider said")
    next_attempt_at: datetime | None = Field(description="when the worker sends it or asks about it next; "
                                                         "null: nothing due (execute it to send it again)")
    provider_refund_no: str | None
    requested_by: str = Field(description="the operator who asked for it, or system")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    id: int | None = Field(description="the payment notification that made it (null for a cancellation)")
    provider: str
    event_id: str | None
    order_no: str
    registration_id: int
    amount_fen: int
    reason: str = Field(description="order_closed, order_expired, second_payment, seat_released, cancellation, "
                                    "registration_<status>")
    order_status: str
    trade_no: str = Field(description="the provider's trade the money goes back from")
    received_at: datetime = Field(description="when the payment notification came (else when the refund was made)")


class Refunds(Reply):
    """Refunds, newest first."""

    refunds: list[Refund]


class RefundEvent(Reply):
    """One line of a refund's ledger: a request sent, an answer or notification received, an operator's action."""

    id: int
    kind: Literal["created", "queued", "request", "answer", "query", "notification", "error"]
    provider: str | None
    event_id: str | None = Field(description="the provider's notification id (recorded once)")
    outcome: str | None
    detail: str | None
    actor: str
    payload: dict[str, Any]
    at: datetime


class RefundDetail(Refund):
    """A refund with its ledger, oldest first."""

    events: list[RefundEvent]


class Prewarmed(Reply):
    """What a prewarm loaded."""

    scores: int
    tickets: int
    seconds: float


class LoadtestToken(Reply):
    """A load-test token; the token itself is shown once and never stored."""

    token: str
    expires_at: datetime
    token_id: str
    name: str


def _absent_only(schema: dict[str, Any]) -> None:
    """Leave out the null defaults: such a field may be absent, never null (pydantic does not check defaults)."""
    for field_schema in schema.get("properties", {}).values():
        if "default" in field_schema and field_schema["default"] is None:
            del field_schema["default"]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("required", "must not be blank")
    return text


class LoadtestRequest(Body):
    """A load-test token request: how long it lasts and its label."""

    model_config = ConfigDict(json_schema_extra=_absent_only)

    ttl_s: Int = Field(ge=1, le=LOADTEST_TTL_MAX_S, description="seconds the token lasts")
    name: Annotated[Text(1, LOADTEST_NAME_MAX_CHARS, "label; default the operator's name"),  # type: ignore[valid-type]
                    AfterValidator(_not_blank)] = None


DEAD_LETTER_IDS = "must be a list of dead-letter ids like 1700000000000-0"


def _dead_letter_ids(value: Any) -> list[str]:
    # One answer for the whole list, whichever item is wrong (docs/api.md): the list is replayed or refused whole.
    if type(value) is not list or not all(type(item) is str and _STREAM_ID(item) for item in value):
        raise PydanticCustomError("invalid_ids", DEAD_LETTER_IDS)
    return value


DeadLetterIds = Annotated[list[str], PlainValidator(_dead_letter_ids), WithJsonSchema(
    {"type": "array", "items": {"type": "string", "pattern": STREAM_ID}})]


class Replay(Body):
    """Which dead letters to replay: the ids given, or every one when ``ids`` is absent (not null)."""

    model_config = ConfigDict(json_schema_extra=_absent_only)

    ids: DeadLetterIds = None  # type: ignore[assignment]  # null is refused: only an absent ids means every one
    field_codes: ClassVar[dict[str, str]] = {"ids": DEAD_LETTER_IDS}


@routes.get("/admin/api/v1/stats", "admin.stats",
            summary="Live figures across processes: per-route request and rejection rates, provider sections",
            answers={200: Answer(Stats, "stats")}, caller=OPERATOR)
async def stats(request: web.Request) -> web.Response:
    """Live figures of all processes: request and rejection rates, every provider's section, the workers' heartbeats."""
    app = request.app
    figures = await read_stats(app[keys.REDIS_PY], STATS_WINDOW_S)
    figures.update(await app[keys.STATS].sections())
    figures["config_version"] = app[keys.LIVE].current.version
    workers = await read_workers(app[keys.REDIS_PY], app[keys.SETTINGS].worker_heartbeat_s)
    figures["workers"] = [worker._asdict() for worker in workers]
    return json_response(figures)


async def audit_note(conn: Conn, actor: str, change: dict[str, Any]) -> None:
    """One config_audit row noting a change made beside the config (``change``: ``{path, old, new}``).

    The row carries the config in force, unchanged, because the newest row is what
    ``ConfigStore.rebuild`` restores: the table lock orders it after any config change
    still being stored, so it never records a config older than the stored one.
    """
    await conn.execute("LOCK TABLE config_audit IN SHARE ROW EXCLUSIVE MODE")
    row = await conn.fetchrow("SELECT version, config FROM config_audit ORDER BY id DESC LIMIT 1")
    version, config = (row["version"], row["config"]) if row is not None else (0, copy.deepcopy(DEFAULT))
    await conn.execute("INSERT INTO config_audit (version, actor, diff, config) VALUES ($1, $2, $3, $4)",
                       version, actor, [change], config)


async def _audit_loadtest_token(pg: asyncpg.Pool, actor: str, claims: loadtest.LoadtestClaims,
                                expires_at: str) -> None:
    """One config_audit row naming the token (id, name, expiry; never the token itself)."""
    change = {"path": LOADTEST_AUDIT_PATH, "old": None,
              "new": {"token_id": claims.token_id, "name": claims.name, "expires_at": expires_at}}
    async with pg.acquire() as conn, conn.transaction():
        await audit_note(conn, actor, change)


@routes.post("/admin/api/v1/loadtest-tokens", "admin.loadtest_tokens.create",
             summary="Issue a load-test token: sent as X-Loadtest-Token it lets captcha pass until it expires "
                     "(audited)",
             body=LoadtestRequest, answers={201: Answer(LoadtestToken, "the token")},
             errors={422: "validation_failed: ttl_s out of range, a blank or long name, an unknown field"},
             caller=OPERATOR)
async def create_loadtest_token(request: web.Request) -> web.Response:
    """Issue a signed token that lets captcha pass while it lasts; audited before it is handed out."""
    admin = request[ADMIN_NAME]
    asked = await read_body(request, LoadtestRequest)
    name = (asked.name or admin).strip()
    token = loadtest.issue(request.app[keys.LOADTEST_KEY], ttl_s=asked.ttl_s, name=name)
    claims = loadtest.read(request.app[keys.LOADTEST_KEY], token)
    assert claims is not None
    expires_at = iso_local(datetime.fromtimestamp(claims.expires_at_s, UTC))
    await _audit_loadtest_token(request.app[keys.PG], admin, claims, expires_at)
    return json_response({"token": token, "expires_at": expires_at, "token_id": claims.token_id,
                          "name": claims.name}, status=201, headers=NO_STORE)


@routes.post("/admin/api/v1/reconcile", "admin.reconcile",
             summary="Rebuild seat inventory and holds in Redis from PostgreSQL; the drift found and repaired",
             params=(Param("exam_id", "query", {"type": "integer", "minimum": 0, "maximum": 9_999_999_999},
                           "one exam (default every exam)"),),
             answers={200: Answer(DriftReport, "the drift report")},
             errors={404: "exam_not_found", 409: "reconcile_contention: the seats kept changing; retry",
                     422: "validation_failed: exam_id is not an id"}, caller=OPERATOR)
async def reconcile(request: web.Request) -> web.Response:
    """Rebuild seat inventory and holds in Redis from PostgreSQL (``?exam_id=N`` for one exam): the drift report."""
    raw = request.query.get("exam_id")
    exam_id = None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 10):
            raise ValidationFailed({"exam_id": "must be an exam id"}, "invalid query parameter")
        exam_id = int(raw)
        if await request.app[keys.PG].fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
            raise ExamNotFound(exam_id)
    report = await reconcile_holds(request.app[keys.PG], request.app[keys.REDIS_PY], exam_id)
    return json_response(report.as_dict())


LIMIT = {"type": "integer", "minimum": 1, "maximum": DEAD_LETTERS_MAX, "default": 100}


@routes.get("/admin/api/v1/dead-letters", "admin.dead_letters.list",
            summary="Hold events the write-behind gave up on, oldest first",
            params=(Param("limit", "query", LIMIT),
                    Param("after", "query", {"type": "string", "pattern": f"^-$|{STREAM_ID}"},
                          "the last id of the page before")),
            answers={200: Answer(DeadLetters, "dead letters")},
            errors={422: "validation_failed: bad limit or after"}, caller=OPERATOR)
async def list_dead_letters(request: web.Request) -> web.Response:
    """Hold events the write-behind gave up on, oldest first (``?limit=``, ``?after=<id>`` to page on)."""
    raw = request.query.get("limit", "100")
    after = request.query.get("after", "-")
    problems: dict[str, str] = {}
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= DEAD_LETTERS_MAX):
        problems["limit"] = f"must be an integer from 1 to {DEAD_LETTERS_MAX}"
    if after != "-" and _STREAM_ID(after) is None:
        problems["after"] = "must be a dead-letter id like 1700000000000-0"
    if problems:
        raise ValidationFailed(problems, "invalid query parameter")
    letters = await writebehind.list_dead_letters(request.app[keys.REDIS_PY], count=int(raw), after=after)
    return json_response({"dead_letters": [letter._asdict() for letter in letters]})


@routes.post("/admin/api/v1/dead-letters/replay", "admin.dead_letters.replay",
             summary="Put dead letters back on their streams: the ids given, or every one when ids is absent "
                     "(or there is no body)",
             body=Replay, body_media=REPLAY_TYPES[::-1], body_required=False,
             answers={200: Answer(Replayed, "how many")},
             errors={422: f"validation_failed: ids {DEAD_LETTER_IDS} (null included), or an unknown field"},
             caller=OPERATOR)
async def replay_dead_letters(request: web.Request) -> web.Response:
    """Put dead letters back on their streams: ``{"ids": [...]}``, or every one when ``ids`` is absent."""
    # body_exists, not can_read_body: a body the gateway waited for is read already, yet still the request's.
    asked = await read_body(request, Replay, REPLAY_TYPES) if request.body_exists else Replay()
    replayed = await writebehind.replay_dead_letters(request.app[keys.REDIS_PY], asked.ids)
    return json_response({"replayed": replayed})


@routes.post("/admin/api/v1/exams/{exam_id}/prewarm", "admin.prewarm",
             summary="Load every ticket and score record of the exam into Redis",
             answers={200: Answer(Prewarmed, "what was loaded")}, errors={404: "exam_not_found"}, caller=OPERATOR)
async def prewarm_exam(request: web.Request) -> web.Response:
    """Load the exam's ticket and score records into Redis: ``{"scores", "tickets", "seconds"}``."""
    raw = request.match_info["exam_id"]
    exam_id = path_id(raw)
    if exam_id is None:
        raise ExamNotFound(raw)
    if await request.app[keys.PG].fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
        raise ExamNotFound(exam_id)
    report = await prewarm(request.app[keys.PG], request.app[keys.REDIS_PY], exam_id)
    return json_response(report.as_dict())


class RefundNotFoundError(NotFoundError):
    """No refund has this id (404 ``refund_not_found``)."""

    code, message = "refund_not_found", "退款记录不存在"


def _refund_id(request: web.Request) -> str:
    raw = request.match_info["refund_id"]
    if _REFUND_ID(raw) is None:
        raise RefundNotFoundError(details={"refund_id": raw[:64]})
    return raw


REFUND_PATH = Param("refund_id", "path", {"type": "string", "pattern": REFUND_ID}, "RF + UTC time + 10 digits",
                    required=True)


@routes.get("/admin/api/v1/refunds", "admin.refunds.list",
            summary="Refunds, newest first: payments that must go back (late, for a closed order, a second trade, "
                    "a registration no longer payable) and approved cancellations, with how sending them went",
            params=(Param("limit", "query", {**LIMIT, "maximum": REFUNDS_MAX}),
                    Param("status", "query", {"enum": list(refunds.STATUSES)}, "only the refunds in this status")),
            answers={200: Answer(Refunds, "refunds")}, errors={422: "validation_failed: bad limit or status"},
            caller=OPERATOR)
async def list_refunds(request: web.Request) -> web.Response:
    """Refunds, newest first (``?limit=``, ``?status=failed``): status, attempts, the last error, when next tried."""
    raw = request.query.get("limit", "100")
    status = request.query.get("status")
    problems: dict[str, str] = {}
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= REFUNDS_MAX):
        problems["limit"] = f"must be an integer from 1 to {REFUNDS_MAX}"
    if status is not None and status not in refunds.STATUSES:
        problems["status"] = f"must be one of {', '.join(refunds.STATUSES)}"
    if problems:
        raise ValidationFailed(problems, "invalid query parameter")
    return json_response({"refunds": await refunds.list_refunds(request.app[keys.PG], limit=int(raw),
                                                                status=status)})


@routes.get("/admin/api/v1/refunds/{refund_id}", "admin.refunds.get",
            summary="One refund with its ledger: every request sent, answer and notification received, "
                    "operator's action",
            params=(REFUND_PATH,), answers={200: Answer(RefundDetail, "the refund")},
            errors={404: "refund_not_found"}, caller=OPERATOR)
async def get_refund(request: web.Request) -> web.Response:
    """One refund and its ledger, oldest event first."""
    refund_id = _refund_id(request)
    try:
        found = await refunds.get_refund(request.app[keys.PG], refund_id)
    except RefundNotFound:
        raise RefundNotFoundError(details={"refund_id": refund_id}) from None
    return json_response(found)


@routes.post("/admin/api/v1/refunds/{refund_id}/execute", "admin.refunds.execute",
             summary="Send the refund (again) now: the worker sends it, or asks the provider about it, within "
                     "EXAMGATE_REFUNDS_INTERVAL_S; one that gave up after its attempts gets one more (audited in its "
                     "ledger). The provider refunds a refund id once, however often it is sent",
             params=(REFUND_PATH,), answers={202: Answer(RefundDetail, "queued: the refund as it is now")},
             errors={404: "refund_not_found", 409: "refund_succeeded: the money went back already"},
             caller=OPERATOR)
async def execute_refund(request: web.Request) -> web.Response:
    """Queue the refund now (202), for the worker to send; 409 when it succeeded already."""
    refund_id = _refund_id(request)
    try:
        queued = await refunds.queue(request.app[keys.PG], refund_id, request[ADMIN_NAME])
    except RefundNotFound:
        raise RefundNotFoundError(details={"refund_id": refund_id}) from None
    except RefundFinished:
        raise Conflict("该退款已成功，无需再次执行", code="refund_succeeded",
                       details={"refund_id": refund_id}) from None
    return json_response(queued, status=202)
