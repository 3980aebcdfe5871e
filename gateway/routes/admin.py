"""The operators' API: live config (read, merge-patch), its audit, and live stats. Admin token required."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.timeutil import iso_local
from gateway import keys
from gateway.adminauth import ADMIN_NAME, admin_only
from gateway.bodies import json_response, read_json
from gateway.errors import ApiError, ValidationFailed
from gateway.stats import read_stats

PATCH_TYPES = ("application/merge-patch+json", "application/json")
AUDIT_LIMIT_MAX = 500
STATS_WINDOW_S = 10


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
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
    if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_LIMIT_MAX:
        raise ValidationFailed({"limit": f"must be an integer from 1 to {AUDIT_LIMIT_MAX}"},
                               "invalid query parameter")
    rows = await request.app[keys.CONFIG_STORE].audit(int(raw))
    changes = [{"version": row["version"], "actor": row["actor"], "changed_at": iso_local(row["changed_at"]),
                "diff": row["diff"]} for row in rows]
    return json_response({"changes": changes})


@admin_only
async def stats(request: web.Request) -> web.Response:
    """Live figures of all processes: request and rejection rates, plus every provider's section."""
    app = request.app
    figures = await read_stats(app[keys.REDIS_PY], STATS_WINDOW_S)
    figures.update(await app[keys.STATS].sections())
    figures["config_version"] = app[keys.LIVE].current.version
    return json_response(figures)


def setup(app: web.Application) -> None:
    """Add the operator routes."""
    app.router.add_get("/admin/api/v1/config", get_config, name="admin.config.get")
    app.router.add_patch("/admin/api/v1/config", patch_config, name="admin.config.patch")
    app.router.add_get("/admin/api/v1/audit", list_audit, name="admin.audit")
    app.router.add_get("/admin/api/v1/stats", stats, name="admin.stats")
