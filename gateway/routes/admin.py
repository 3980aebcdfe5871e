"""The operators' API: live config (read, merge-patch), its audit, and live stats. Admin token required."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from core.timeutil import iso_local
from gateway import keys
from gateway.adminauth import ADMIN_NAME, admin_only
from gateway.bodies import json_response
from gateway.configstore import ConfigCorrupt, VersionMismatch
from gateway.errors import (
    ApiError,
    BodyTooLarge,
    MalformedBody,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.liveconfig import InvalidConfig
from gateway.stats import read_stats

PATCH_TYPES = ("application/merge-patch+json", "application/json")
AUDIT_LIMIT_MAX = 500
STATS_WINDOW_S = 10


class ConfigRejected(ApiError):
    """The changed config would be invalid; nothing was applied (422, ``details.fields``)."""

    status, code, message = 422, "invalid_config", "the config change is invalid; nothing was applied"

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(details={"fields": problems})


class VersionConflict(ApiError):
    """If-Match named a version that is no longer current (412, ``details.current_version``)."""

    status, code, message = 412, "version_mismatch", "the config changed since that version; read it again"

    def __init__(self, current: int) -> None:
        super().__init__(details={"current_version": current})


class StoredConfigUnreadable(ApiError):
    """The stored document was written around the API and cannot be read (500)."""

    status, code = 500, "config_corrupt"
    message = "the stored config cannot be read; PATCH a complete valid document to replace it"


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ApiError("If-Match must be a config version, like 7", code="invalid_if_match",
                       details={"if_match": raw[:64]})
    return int(value)


async def _read_patch(request: web.Request) -> dict[str, Any]:
    if request.content_type not in PATCH_TYPES:
        raise UnsupportedMediaType("send the patch as application/merge-patch+json",
                                   details={"expected": list(PATCH_TYPES), "got": request.content_type or None})
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(details={"max_bytes": request.app[keys.SETTINGS].max_body_bytes}) from None
    try:
        patch = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody("the body is not valid JSON", details={"reason": str(exc)}) from None
    if not isinstance(patch, dict):
        raise MalformedBody("the merge patch must be a JSON object", details={"reason": "expected a JSON object"})
    return patch


def _config_response(version: int, config: dict[str, Any]) -> web.Response:
    return json_response({"version": version, "config": config}, headers={"ETag": f'"{version}"'})


@admin_only
async def get_config(request: web.Request) -> web.Response:
    """The stored live config and its version."""
    try:
        version, doc = await request.app[keys.CONFIG_STORE].get()
    except ConfigCorrupt as exc:
        raise StoredConfigUnreadable(details={"version": exc.version, "reason": exc.reason}) from None
    return _config_response(version, doc)


@admin_only
async def patch_config(request: web.Request) -> web.Response:
    """Apply a JSON merge patch to the live config: validated, versioned, audited, published."""
    if_match = _if_match(request)
    patch = await _read_patch(request)
    try:
        live = await request.app[keys.CONFIG_STORE].patch(patch, request[ADMIN_NAME], if_match)
    except InvalidConfig as exc:
        raise ConfigRejected(exc.problems) from None
    except VersionMismatch as exc:
        raise VersionConflict(exc.current) from None
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
