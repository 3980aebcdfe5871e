"""The operators' part of the OpenAPI document: every ``/admin/api/v1/…`` operation needs the admin token."""

from __future__ import annotations

from typing import Any

from gateway.openapi_schemas import JSON_TYPES, STREAM_ID, error, id_param, json_answer, json_body, obj, ref, text

__all__ = ["ADMIN_PATHS"]

ADMIN = [{"admin": []}]
LIMIT_100 = {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}

ADMIN_PATHS: dict[str, dict[str, Any]] = {
    "/admin/api/v1/config": {
        "get": {
            "summary": "The live operator config and its version",
            "security": ADMIN,
            "responses": {
                "200": json_answer("version and config", ref("LiveConfig")),
                "500": error("config_corrupt: the stored config cannot be read (PATCH a complete one)"),
            },
        },
        "patch": {
            "summary": "Change the live config with a JSON merge patch (RFC 7396); optional If-Match: <version>",
            "security": ADMIN,
            "parameters": [{"name": "If-Match", "in": "header", "schema": {
                "type": "string", "pattern": r'^\s*(\*|(W/)?"*[0-9]+"*)\s*$'}}],
            "requestBody": {"required": True, "content": {
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            }},
            "responses": {
                "200": json_answer("the new version and config", ref("LiveConfig")),
                "400": error("malformed_body; invalid_if_match: If-Match is not a version"),
                "412": error("version_mismatch: details.current_version"),
                "422": error("invalid_config: details.fields maps each JSON path to its problem (the patch is "
                             "judged merged into the stored config, so its validity depends on that config)"),
                "500": error("config_corrupt: the stored config cannot be read (PATCH a complete one)"),
            },
        },
    },
    "/admin/api/v1/audit": {"get": {
        "summary": "Live config changes, newest first (who, when, diff)",
        "security": ADMIN,
        "parameters": [{"name": "limit", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
        "responses": {
            "200": json_answer("changes", obj(["changes"], {"changes": {"type": "array", "items": obj(
                ["version", "actor", "changed_at", "diff"], {"version": {"type": "integer"},
                                                             "actor": {"type": "string"},
                                                             "changed_at": {"type": "string", "format": "date-time"},
                                                             "diff": {"type": "array"}})}})),
            "422": error("limit out of range"),
        },
    }},
    "/admin/api/v1/stats": {"get": {
        "summary": "Live figures across processes: per-route request and rejection rates, provider sections",
        "security": ADMIN,
        "responses": {"200": json_answer("stats", obj(["window_s", "routes", "totals", "config_version"], {
            "window_s": {"type": "number"}, "routes": {"type": "object"}, "totals": {"type": "object"},
            "config_version": {"type": "integer"}}))},
    }},
    "/admin/api/v1/reconcile": {"post": {
        "summary": "Rebuild seat inventory and holds in Redis from PostgreSQL; the drift found and repaired",
        "security": ADMIN,
        "parameters": [{"name": "exam_id", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                                     "maximum": 9_999_999_999},
                        "description": "one exam (default every exam)"}],
        "responses": {
            "200": json_answer("the drift report", obj(["drifted", "events_drained", "exams"], {
                "exams": {"type": "array", "items": {"type": "object"}}})),
            "404": error("exam_not_found"),
            "409": error("reconcile_contention: the seats kept changing; retry"),
            "422": error("exam_id is not an id"),
        },
    }},
    "/admin/api/v1/exams/{exam_id}/prewarm": {"post": {
        "summary": "Load every ticket and score record of the exam into Redis",
        "security": ADMIN,
        "parameters": [id_param("exam_id")],
        "responses": {
            "200": json_answer("what was loaded", obj(["scores", "tickets", "seconds"], {
                "scores": {"type": "integer"}, "tickets": {"type": "integer"}, "seconds": {"type": "number"}})),
            "404": error("exam_not_found"),
        },
    }},
    "/admin/api/v1/refunds": {"get": {
        "summary": "Payments recorded refund_pending (late, for a closed order, or a second trade), newest first",
        "security": ADMIN,
        "parameters": [LIMIT_100],
        "responses": {
            "200": json_answer("refunds", obj(["refunds"], {
                "refunds": {"type": "array", "items": {"type": "object"}}})),
            "422": error("bad limit"),
        },
    }},
    "/admin/api/v1/dead-letters": {"get": {
        "summary": "Hold events the write-behind gave up on, oldest first",
        "security": ADMIN,
        "parameters": [LIMIT_100, {"name": "after", "in": "query", "description": "the last id of the page before",
                                   "schema": {"type": "string", "pattern": f"^-$|{STREAM_ID}"}}],
        "responses": {
            "200": json_answer("dead letters", obj(["dead_letters"], {"dead_letters": {"type": "array", "items": obj(
                ["id", "stream", "entry_id", "deliveries", "error", "fields"], {
                    "id": {"type": "string"}, "stream": {"type": "string"}, "fields": {"type": "object"}})}})),
            "422": error("bad limit or after"),
        },
    }},
    "/admin/api/v1/dead-letters/replay": {"post": {
        "summary": "Put dead letters back on their streams: the ids given, or every one when ids is absent",
        "security": ADMIN,
        "requestBody": {"required": False, "content": {media: {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"ids": {"type": "array", "items": {"type": "string", "pattern": STREAM_ID}}}}}
            for media in JSON_TYPES}},
        "responses": {
            "200": json_answer("how many", obj(["replayed"], {"replayed": {"type": "integer", "minimum": 0}})),
            "422": error("validation_failed: ids is not a list of dead-letter ids, or an unknown field"),
        },
    }},
    "/admin/api/v1/loadtest-tokens": {"post": {
        "summary": "Issue a load-test token: sent as X-Loadtest-Token it lets captcha pass until it expires (audited)",
        "security": ADMIN,
        "requestBody": json_body({
            "type": "object", "additionalProperties": False, "required": ["ttl_s"],
            "properties": {"ttl_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                           "name": text(1, 100, "label; default the operator's name")}}),
        "responses": {
            "201": json_answer("the token", obj(["token", "expires_at", "token_id", "name"], {
                "token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                "token_id": {"type": "string"}, "name": {"type": "string"}})),
            "422": error("validation_failed: ttl_s out of range, a blank or long name, an unknown field"),
        },
    }},
}
