"""The operators' live config: read it, change it by merge patch (versioned, audited), read its audit.

Every route needs an admin token (the route table's ``caller=OPERATOR``; ``gateway.routing`` checks it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

from aiohttp import web
from pydantic import Field, WithJsonSchema

from core.timeutil import iso_local
from gateway import keys, routing
from gateway.adminauth import ADMIN_NAME
from gateway.bodies import json_response, read_json
from gateway.errors import ApiError, ValidationFailed
from gateway.liveconfig import Document, InvalidConfig
from gateway.models import Reply
from gateway.routing import OPERATOR, Answer, Param, Routes
from ratelimit.errors import InvalidRule
from ratelimit.rules import COUNTS, KEY_KINDS, MODES, ON_REDIS_ERROR, parse_rule

routes = Routes("Operators")


PATCH_TYPES = ("application/merge-patch+json", "application/json")


AUDIT_LIMIT_MAX = 500


IF_MATCH = r'^\s*(\*|(W/)?"*[0-9]+"*)\s*$'


CORRUPT = "config_corrupt: the stored config cannot be read (PATCH a complete one)"


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
            caller=OPERATOR)
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
                      500: CORRUPT}, caller=OPERATOR)
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
            caller=OPERATOR)
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
