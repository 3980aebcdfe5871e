"""The OpenAPI 3.1 document of the routes this gateway serves, kept beside the code."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json("running", {"type": "object"})}}},
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis, PostgreSQL and migrations",
            "responses": {"200": _json("ready", {"type": "object"}), "503": _error("what is missing")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics aggregated across processes",
            "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}},
        }
    },
    "/api/v1/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})}}
    },
    "/api/v1/exams": {
        "get": {
            "summary": "Exams with windows, structure and provinces",
            "responses": {"200": _json("exams", {"type": "array", "items": {"$ref": "#/components/schemas/Exam"}})},
        }
    },
    "/api/v1/exams/{exam_id}/sites": {
        "get": {
            "summary": "Exam sites with seats available",
            "parameters": [
                {"name": "exam_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "province", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{2}$"}},
            ],
            "responses": {
                "200": _json("sites", {"type": "array", "items": {"$ref": "#/components/schemas/Site"}}),
                "404": _error("no such exam"),
                "422": _error("bad province code"),
                "503": _error("Redis unavailable"),
            },
        }
    },
    "/admin/api/v1/config": {
        "get": {
            "summary": "The live operator config and its version (admin bearer token)",
            "responses": {
                "200": _json("version and config", {"type": "object", "required": ["version", "config"]}),
                "401": _error("no or wrong admin token"),
            },
        },
        "patch": {
            "summary": "Change the live config with a JSON merge patch (RFC 7396); optional If-Match: <version>",
            "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            }},
            "responses": {
                "200": _json("the new version and config", {"type": "object", "required": ["version", "config"]}),
                "401": _error("no or wrong admin token"),
                "412": _error("version_mismatch: details.current_version"),
                "415": _error("not a JSON merge patch"),
                "422": _error("invalid_config: details.fields maps each JSON path to its problem"),
            },
        },
    },
    "/admin/api/v1/audit": {
        "get": {
            "summary": "Live config changes, newest first (who, when, diff)",
            "parameters": [{"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
            "responses": {
                "200": _json("changes", {"type": "object", "required": ["changes"]}),
                "401": _error("no or wrong admin token"),
                "422": _error("limit out of range"),
            },
        }
    },
    "/admin/api/v1/stats": {
        "get": {
            "summary": "Live figures across processes: per-route request and rejection rates, provider sections",
            "responses": {
                "200": _json("stats", {"type": "object", "required": ["window_s", "routes", "totals",
                                                                       "config_version"]}),
                "401": _error("no or wrong admin token"),
            },
        }
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "Exam": {
        "type": "object",
        "required": ["id", "code", "name", "registration_opens_at", "registration_closes_at",
                     "fee_per_subject_fen", "levels", "provinces"],
        "properties": {
            "id": {"type": "integer"},
            "code": {"type": "string"},
            "name": {"type": "string"},
            "registration_opens_at": {"type": "string", "format": "date-time"},
            "registration_closes_at": {"type": "string", "format": "date-time"},
            "ticket_print_opens_at": {"type": "string", "format": "date-time"},
            "ticket_print_closes_at": {"type": "string", "format": "date-time"},
            "exam_starts_at": {"type": "string", "format": "date-time"},
            "score_release_at": {"type": "string", "format": "date-time"},
            "fee_per_subject_fen": {"type": "integer"},
            "levels": {"type": "array", "items": {"type": "object"}},
            "provinces": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Site": {
        "type": "object",
        "required": ["site_id", "province", "city", "name", "address", "capacity", "available"],
        "properties": {
            "site_id": {"type": "integer"},
            "province": {"type": "string"},
            "city": {"type": "string"},
            "name": {"type": "string"},
            "address": {"type": "string"},
            "capacity": {"type": "integer"},
            "available": {"type": "integer"},
        },
    },
}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "examgate", "version": "1.0.0",
                 "description": "Peak-hour edge of the exam registration system (HTTP contract v1)."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }
