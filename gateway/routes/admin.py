"""The operators' API: live config (read, merge-patch), its audit, live stats, load-test tokens. Admin token required."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

import asyncpg
from aiohttp import web

from captcha import loadtest
from core.timeutil import iso_local
from gateway import keys
from gateway.adminauth import ADMIN_NAME, admin_only
from gateway.bodies import json_response, read_json
from gateway.errors import ApiError, ValidationFailed
from gateway.heartbeats import read_workers
from gateway.liveconfig import DEFAULT
from gateway.pathids import path_id
from gateway.stats import read_stats
from lookups.prewarm import prewarm
from payments import settle
from queueing import writebehind
from queueing.reconcile import reconcile as reconcile_holds

PATCH_TYPES = ("application/merge-patch+json", "application/json")
AUDIT_LIMIT_MAX = 500
STATS_WINDOW_S = 10
LOADTEST_TTL_MAX_S = 24 * 3600
LOADTEST_NAME_MAX_CHARS = 100
LOADTEST_AUDIT_PATH = "loadtest_tokens"


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


@admin_only
async def get_config(request: web.Request) -> web.Response:
    """The stored live config and its version."""
    version, doc = await request.app[keys.CONFIG_STORE].get()
    return _config_response(version, doc)


@admin_only
async def patch_config(request: web.Request) -> web.Response:
    """Apply a JSON merge patch to the live config: validated, versioned, audited, published."""
    if_match = _if_match(request)
    patch = await read_json(request, PATCH_TYPES)
    live = await request.app[keys.CONFIG_STORE].patch(patch, request[ADMIN_NAME], if_match)
    return _config_response(live.version, live.document)


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


def _loadtest_request(body: dict[str, Any], admin: str) -> tuple[int, str]:
    problems: dict[str, str] = {}
    ttl_s = body.get("ttl_s")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= LOADTEST_TTL_MAX_S:
        problems["ttl_s"] = f"must be an integer number of seconds from 1 to {LOADTEST_TTL_MAX_S}"
    name = body.get("name", admin)
    if not isinstance(name, str) or not name.strip() or len(name) > LOADTEST_NAME_MAX_CHARS:
        problems["name"] = f"must be a label of 1-{LOADTEST_NAME_MAX_CHARS} characters"
    for key in body:
        if key not in ("ttl_s", "name"):
            problems[key] = "is not a known field"
    if problems:
        raise ValidationFailed(problems, "invalid load-test token request")
    return int(ttl_s), name.strip()  # type: ignore[arg-type, union-attr]


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


@admin_only
async def create_loadtest_token(request: web.Request) -> web.Response:
    """Issue a signed token that lets captcha pass while it lasts; audited before it is handed out."""
    admin = request[ADMIN_NAME]
    ttl_s, name = _loadtest_request(await read_json(request), admin)
    token = loadtest.issue(request.app[keys.LOADTEST_KEY], ttl_s=ttl_s, name=name)
    claims = loadtest.read(request.app[keys.LOADTEST_KEY], token)
    assert claims is not None
    expires_at = iso_local(datetime.fromtimestamp(claims.expires_at_s, timezone.utc))
    await _audit_loadtest_token(request.app[keys.PG], admin, claims, expires_at)
    return json_response({"token": token, "expires_at": expires_at, "token_id": claims.token_id,
                          "name": claims.name}, status=201, headers={"Cache-Control": "no-store"})


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


DEAD_LETTERS_MAX = 1000
# At most 19 digits a part: a stream id's parts are 64-bit, and Redis refuses a larger one with an error.
_STREAM_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}").fullmatch


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


@admin_only
async def replay_dead_letters(request: web.Request) -> web.Response:
    """Put dead letters back on their streams: ``{"ids": [...]}``, or every one when ``ids`` is absent."""
    # body_exists, not can_read_body: a body the gateway waited for is read already, yet still the request's.
    body = await read_json(request, PATCH_TYPES) if request.body_exists else {}
    ids = body.get("ids")
    unknown = {key: "is not a known field" for key in body if key != "ids"}
    # Only an absent ids means every dead letter: a null is a mistake, not a request to replay them all.
    if "ids" in body and (not isinstance(ids, list) or not all(isinstance(i, str) and _STREAM_ID(i) for i in ids)):
        unknown["ids"] = "must be a list of dead-letter ids like 1700000000000-0"
    if unknown:
        raise ValidationFailed(unknown, "invalid replay request")
    replayed = await writebehind.replay_dead_letters(request.app[keys.REDIS_PY], ids)
    return json_response({"replayed": replayed})


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


@admin_only
async def list_refunds(request: web.Request) -> web.Response:
    """Payments that must go back (late, for a closed order, or a second one), newest first (``?limit=``)."""
    raw = request.query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= REFUNDS_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {REFUNDS_MAX}"}, "invalid query parameter")
    return json_response({"refunds": await settle.refunds(request.app[keys.PG], limit=int(raw))})


REFUNDS_MAX = 1000


def setup(app: web.Application) -> None:
    """Add the operator routes."""
    app.router.add_get("/admin/api/v1/config", get_config, name="admin.config.get")
    app.router.add_patch("/admin/api/v1/config", patch_config, name="admin.config.patch")
    app.router.add_get("/admin/api/v1/audit", list_audit, name="admin.audit")
    app.router.add_get("/admin/api/v1/stats", stats, name="admin.stats")
    app.router.add_post("/admin/api/v1/reconcile", reconcile, name="admin.reconcile")
    app.router.add_get("/admin/api/v1/dead-letters", list_dead_letters, name="admin.dead_letters.list")
    app.router.add_post("/admin/api/v1/dead-letters/replay", replay_dead_letters, name="admin.dead_letters.replay")
    app.router.add_get("/admin/api/v1/refunds", list_refunds, name="admin.refunds.list")
    app.router.add_post("/admin/api/v1/exams/{exam_id}/prewarm", prewarm_exam, name="admin.prewarm")
    app.router.add_post("/admin/api/v1/loadtest-tokens", create_loadtest_token, name="admin.loadtest_tokens.create")
