"""The operators' API: live config (read, merge-patch), its audit, live stats, load-test tokens; admin token only."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, cast

import asyncpg
from aiohttp import web
from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from captcha import loadtest
from core.timeutil import iso_local
from gateway import keys, routing
from gateway.adminauth import ADMIN_NAME, admin_only
from gateway.bodies import NO_STORE, json_response, read_body, read_json
from gateway.errors import ApiError, ValidationFailed
from gateway.heartbeats import read_workers
from gateway.liveconfig import DEFAULT, Document, InvalidConfig
from gateway.models import Body, Int, Reply, Text
from gateway.pathids import path_id
from gateway.routing import OPERATOR, Answer, Param, Routes
from gateway.stats import read_stats
from lookups.prewarm import prewarm
from payments import settle
from queueing import writebehind
from queueing.reconcile import reconcile as reconcile_holds
from ratelimit.errors import InvalidRule
from ratelimit.rules import COUNTS, KEY_KINDS, MODES, ON_REDIS_ERROR, parse_rule

routes = Routes("Operators")

PATCH_TYPES = ("application/merge-patch+json", "application/json")
AUDIT_LIMIT_MAX = 500
STATS_WINDOW_S = 10
LOADTEST_TTL_MAX_S = 24 * 3600
LOADTEST_NAME_MAX_CHARS = 100
LOADTEST_AUDIT_PATH = "loadtest_tokens"
DEAD_LETTERS_MAX = 1000
REFUNDS_MAX = 1000
# At most 19 digits a part: a stream id's parts are 64-bit, and Redis refuses a larger one with an error.
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
_STREAM_ID = re.compile(STREAM_ID).fullmatch
IF_MATCH = r'^\s*(\*|(W/)?"*[0-9]+"*)\s*$'
CORRUPT = "config_corrupt: the stored config cannot be read (PATCH a complete one)"


def _operator(**declared: Any) -> dict[str, Any]:
    """What every operator route declares: the admin token, and the admin shedding class."""
    return {"caller": OPERATOR, "shedding": "admin", **declared}


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``$defs`` reference written in place (an answer's schema keeps no ``$defs``)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {key: _inlined(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(value, defs) for value in schema]
    return schema


# A rule as the document states it (``ratelimit.rules`` parses it into a ``Rule``: the model has no schema of it).
_RULE: dict[str, Any] = {
    "type": "object", "required": ["id", "routes", "key", "rate", "period_s"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "routes": {"type": ["array", "string"], "items": {"type": "string"},
                   "description": "route names or shell-style patterns (scores.*)"},
        "key": {"enum": list(KEY_KINDS)},
        "rate": {"type": "integer", "minimum": 1},
        "period_s": {"type": "number", "exclusiveMinimum": 0},
        "burst": {"type": "integer", "minimum": 1},
        "mode": {"enum": list(MODES)},
        "on_redis_error": {"enum": list(ON_REDIS_ERROR)},
        "cost": {"type": "integer", "minimum": 1},
        "counts": {"enum": list(COUNTS)},
    },
}


def _config_document() -> dict[str, Any]:
    """The stored live config's schema: the live config models' (as they validate it), its rules written out."""
    schema = Document.model_json_schema(mode="validation")
    schema = _inlined(schema, schema.pop("$defs", {}))
    schema["properties"]["ratelimit"]["properties"]["rules"]["items"] = _RULE
    return cast("dict[str, Any]", schema)


CONFIG_DOCUMENT = _config_document()
PATCH_BODY = {media: {"schema": {"type": "object", "description": "a JSON merge patch (RFC 7396) of the live config"}}
              for media in PATCH_TYPES}


class LiveConfig(Reply):
    """The live operator config and its version (the ETag)."""

    version: int = Field(ge=0)
    config: Annotated[dict[str, Any], WithJsonSchema(CONFIG_DOCUMENT)]


class ConfigChange(Reply):
    """One audited change: who, when, and its diff (``[{path, old, new}]``)."""

    version: int
    actor: str
    changed_at: datetime
    diff: list[Any]


class AuditTrail(Reply):
    """Config changes, newest first."""

    changes: list[ConfigChange]


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


class Refund(Reply):
    """A payment recorded ``refund_pending``."""

    id: int
    provider: str
    event_id: str
    order_no: str | None
    registration_id: int | None
    amount_fen: int | None
    reason: str | None
    order_status: str | None
    trade_no: str | None
    received_at: datetime


class Refunds(Reply):
    """Payments that must go back, newest first."""

    refunds: list[Refund]


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


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()):
        raise ApiError("If-Match must be a config version, like 7", code="invalid_if_match",
                       details={"if_match": raw[:64]})
    return int(value)


def _config_response(version: int, config: dict[str, Any]) -> web.Response:
    return json_response({"version": version, "config": config}, headers={"ETag": f'"{version}"'})


@routes.get("/admin/api/v1/config", "admin.config.get", summary="The live operator config and its version",
            answers={200: Answer(LiveConfig, "version and config (ETag: the version)")}, errors={500: CORRUPT},
            **_operator())
@admin_only
async def get_config(request: web.Request) -> web.Response:
    """The stored live config and its version."""
    version, doc = await request.app[keys.CONFIG_STORE].get()
    return _config_response(version, doc)


def unoffered_subjects(patch: dict[str, Any], operations: dict[str, routing.Operation],
                       served: set[str]) -> dict[str, str]:
    """The rules of ``patch`` whose key no route they match offers: ``details.fields`` of the refusal.

    A merge patch replaces a list whole, so the patch's ``ratelimit.rules`` are the new rules, index
    for index. A rule matching only declared routes, none of which offers its subject, could never
    apply; one matching a route not declared in the table (or no route of this process) is let be,
    as is a malformed one (the config's own check names it).
    """
    section = patch.get("ratelimit")
    rules = section.get("rules") if isinstance(section, dict) else None
    if not isinstance(rules, list):
        return {}
    problems: dict[str, str] = {}
    for index, raw in enumerate(rules):
        try:
            rule = parse_rule(raw)
        except InvalidRule:
            continue
        matched = [name for name in served if rule.matches(name)]
        if matched and all(name in operations and rule.key not in operations[name].limits for name in matched):
            problems[f"ratelimit.rules[{index}].key"] = (
                f"no route this rule matches offers the key {rule.key!r} (it can never apply)")
    return problems


@routes.patch("/admin/api/v1/config", "admin.config.patch",
              summary="Change the live config with a JSON merge patch (RFC 7396); optional If-Match: <version>",
              params=(Param("If-Match", "header", {"type": "string", "pattern": IF_MATCH},
                            "the version the change is based on (412 when it is not the stored one)"),),
              raw_body=PATCH_BODY, answers={200: Answer(LiveConfig, "the new version and config")},
              errors={400: "malformed_body; invalid_if_match: If-Match is not a version",
                      412: "version_mismatch: details.current_version",
                      415: "unsupported_media_type: details.expected names the content types",
                      422: "invalid_config: details.fields maps each JSON path to its problem (the patch is judged "
                           "merged into the stored config, so its validity depends on that config; a rate-limit "
                           "rule whose key no route it matches offers is one); "
                           "validation_failed: a string holding U+0000 (contains_nul)",
                      500: CORRUPT},
              **_operator())
@admin_only
async def patch_config(request: web.Request) -> web.Response:
    """Apply a JSON merge patch to the live config: validated, versioned, audited, published."""
    if_match = _if_match(request)
    patch = await read_json(request, PATCH_TYPES)
    served = {route.name for route in request.app.router.routes() if route.name}
    problems = unoffered_subjects(patch, request.app[routing.OPERATION], served)
    if problems:
        raise InvalidConfig(problems)
    live = await request.app[keys.CONFIG_STORE].patch(patch, request[ADMIN_NAME], if_match)
    return _config_response(live.version, live.document)


@routes.get("/admin/api/v1/audit", "admin.audit", summary="Live config changes, newest first (who, when, diff)",
            params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT_MAX,
                                             "default": 50}),),
            answers={200: Answer(AuditTrail, "changes")}, errors={422: "validation_failed: limit out of range"},
            **_operator())
@admin_only
async def list_audit(request: web.Request) -> web.Response:
    """The latest config changes, newest first."""
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= AUDIT_LIMIT_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {AUDIT_LIMIT_MAX}"},
                               "invalid query parameter")
    rows = await request.app[keys.CONFIG_STORE].audit(int(raw))
    changes = [{"version": row["version"], "actor": row["actor"], "changed_at": iso_local(row["changed_at"]),
                "diff": row["diff"]} for row in rows]
    return json_response({"changes": changes})


@routes.get("/admin/api/v1/stats", "admin.stats",
            summary="Live figures across processes: per-route request and rejection rates, provider sections",
            answers={200: Answer(Stats, "stats")}, **_operator())
@admin_only
async def stats(request: web.Request) -> web.Response:
    """Live figures of all processes: request and rejection rates, every provider's section, the workers' heartbeats."""
    app = request.app
    figures = await read_stats(app[keys.REDIS_PY], STATS_WINDOW_S)
    figures.update(await app[keys.STATS].sections())
    figures["config_version"] = app[keys.LIVE].current.version
    workers = await read_workers(app[keys.REDIS_PY], app[keys.SETTINGS].worker_heartbeat_s)
    figures["workers"] = [worker._asdict() for worker in workers]
    return json_response(figures)


async def _audit_loadtest_token(pg: asyncpg.Pool, actor: str, claims: loadtest.LoadtestClaims,
                                expires_at: str) -> None:
    """One config_audit row naming the token (id, name, expiry; never the token itself).

    The row carries the config in force, unchanged, because the newest row is what
    ``ConfigStore.rebuild`` restores: the table lock orders it after any config change
    still being stored, so it never records a config older than the stored one.
    """
    change = {"path": LOADTEST_AUDIT_PATH, "old": None,
              "new": {"token_id": claims.token_id, "name": claims.name, "expires_at": expires_at}}
    async with pg.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE config_audit IN SHARE ROW EXCLUSIVE MODE")
        row = await conn.fetchrow("SELECT version, config FROM config_audit ORDER BY id DESC LIMIT 1")
        version, config = (row["version"], row["config"]) if row is not None else (0, copy.deepcopy(DEFAULT))
        await conn.execute("INSERT INTO config_audit (version, actor, diff, config) VALUES ($1, $2, $3, $4)",
                           version, actor, [change], config)


@routes.post("/admin/api/v1/loadtest-tokens", "admin.loadtest_tokens.create",
             summary="Issue a load-test token: sent as X-Loadtest-Token it lets captcha pass until it expires "
                     "(audited)",
             body=LoadtestRequest, answers={201: Answer(LoadtestToken, "the token")},
             errors={422: "validation_failed: ttl_s out of range, a blank or long name, an unknown field"},
             **_operator())
@admin_only
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
                     422: "validation_failed: exam_id is not an id"},
             **_operator())
@admin_only
async def reconcile(request: web.Request) -> web.Response:
    """Rebuild seat inventory and holds in Redis from PostgreSQL (``?exam_id=N`` for one exam): the drift report."""
    raw = request.query.get("exam_id")
    exam_id = None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 10):
            raise ValidationFailed({"exam_id": "must be an exam id"}, "invalid query parameter")
        exam_id = int(raw)
        if await request.app[keys.PG].fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
            raise ApiError("考试不存在", code="exam_not_found", status=404, details={"exam_id": exam_id})
    report = await reconcile_holds(request.app[keys.PG], request.app[keys.REDIS_PY], exam_id)
    return json_response(report.as_dict())


LIMIT = {"type": "integer", "minimum": 1, "maximum": DEAD_LETTERS_MAX, "default": 100}


@routes.get("/admin/api/v1/dead-letters", "admin.dead_letters.list",
            summary="Hold events the write-behind gave up on, oldest first",
            params=(Param("limit", "query", LIMIT),
                    Param("after", "query", {"type": "string", "pattern": f"^-$|{STREAM_ID}"},
                          "the last id of the page before")),
            answers={200: Answer(DeadLetters, "dead letters")},
            errors={422: "validation_failed: bad limit or after"}, **_operator())
@admin_only
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
             body=Replay, body_media=PATCH_TYPES[::-1], answers={200: Answer(Replayed, "how many")},
             errors={422: f"validation_failed: ids {DEAD_LETTER_IDS} (null included), or an unknown field"},
             **_operator())
@admin_only
async def replay_dead_letters(request: web.Request) -> web.Response:
    """Put dead letters back on their streams: ``{"ids": [...]}``, or every one when ``ids`` is absent."""
    # body_exists, not can_read_body: a body the gateway waited for is read already, yet still the request's.
    asked = await read_body(request, Replay, PATCH_TYPES) if request.body_exists else Replay()
    replayed = await writebehind.replay_dead_letters(request.app[keys.REDIS_PY], asked.ids)
    return json_response({"replayed": replayed})


@routes.post("/admin/api/v1/exams/{exam_id}/prewarm", "admin.prewarm",
             summary="Load every ticket and score record of the exam into Redis",
             answers={200: Answer(Prewarmed, "what was loaded")}, errors={404: "exam_not_found"}, **_operator())
@admin_only
async def prewarm_exam(request: web.Request) -> web.Response:
    """Load the exam's ticket and score records into Redis: ``{"scores", "tickets", "seconds"}``."""
    raw = request.match_info["exam_id"]
    exam_id = path_id(raw)
    if exam_id is None:
        raise ApiError("考试不存在", code="exam_not_found", status=404, details={"exam_id": raw})
    if await request.app[keys.PG].fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
        raise ApiError("考试不存在", code="exam_not_found", status=404, details={"exam_id": exam_id})
    report = await prewarm(request.app[keys.PG], request.app[keys.REDIS_PY], exam_id)
    return json_response(report.as_dict())


@routes.get("/admin/api/v1/refunds", "admin.refunds.list",
            summary="Payments recorded refund_pending (late, for a closed order, or a second trade), newest first",
            params=(Param("limit", "query", {**LIMIT, "maximum": REFUNDS_MAX}),),
            answers={200: Answer(Refunds, "refunds")}, errors={422: "validation_failed: bad limit"}, **_operator())
@admin_only
async def list_refunds(request: web.Request) -> web.Response:
    """Payments that must go back (late, for a closed order, or a second one), newest first (``?limit=``)."""
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= REFUNDS_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {REFUNDS_MAX}"}, "invalid query parameter")
    return json_response({"refunds": await settle.refunds(request.app[keys.PG], limit=int(raw))})
