"""The OpenAPI 3.1 document of the routes this gateway serves, kept beside the code.

Each operation lists what is particular to it; ``_with_shared_responses`` then adds, once for
every operation, the answers any route can give: 429 (a throttle: live config can put a rule on
any route; too many requests in flight from one address) and 503 (overload shedding, maintenance
switches, a store or the live config away), 413 (Content-Length over the limit, checked before any
route runs), 400 (not valid HTTP), 401 where a security scheme is declared, and for a request body
408 (sent too slowly) and, when it is JSON, 415.
Every answer carries ``X-Request-Id``. Tests run schemathesis over the whole document against
the running gateway (tests/hardening/test_openapi_conformance.py).
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.openapi_admin import ADMIN_PATHS
from gateway.openapi_schemas import (
    BODY_ID,
    CAPTCHA,
    ERROR,
    HEADERS,
    JSON_TYPES,
    SCHEMAS,
    error,
    id_param,
    json_answer,
    json_body,
    obj,
    ref,
    text,
    text_or_error,
)

__all__ = ["PATHS", "SCHEMAS"]

SESSION = [{"session": []}]
# Routes that read their body raw (the payment providers' formats), never as the API's JSON.
RAW_BODY = frozenset({("post", "/api/v1/payments/notify/alipay"), ("post", "/api/v1/payments/notify/wechat")})

LOADTEST_HEADER = {"name": "X-Loadtest-Token", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "an operator-issued load-test token; lets captcha pass while valid"}
EXAM_ID = id_param("exam_id")
REGISTRATION_ID = id_param("registration_id")

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": {
        "summary": "Liveness: this process runs",
        "responses": {"200": json_answer("running", obj(["status", "pid", "config_version"], {
            "status": {"const": "ok"}, "pid": {"type": "integer"}, "config_version": {"type": "integer"}}))},
    }},
    "/readyz": {"get": {
        "summary": "Readiness: Redis, PostgreSQL and migrations required; the worker and the ticket font degrade it",
        "responses": {
            "200": json_answer("ready, or degraded (checks and degraded name what is missing)", {
                "type": "object", "required": ["status", "checks"], "properties": {
                    "status": {"enum": ["ready", "degraded"]},
                    "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                    "degraded": {"type": "array", "items": {"type": "string"}}}}),
            "503": error("not_ready: details.missing and details.checks say what is missing; or shed"),
        },
    }},
    "/metrics": {"get": {
        "summary": "Prometheus metrics aggregated across processes (the scraper's or an operator's bearer token)",
        "security": [{"metrics": []}, {"admin": []}],
        "responses": {"200": {"description": "Prometheus text exposition",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
    "/api/v1/openapi.json": {"get": {
        "summary": "This document",
        "responses": {"200": json_answer("OpenAPI 3.1", {"type": "object", "required": ["openapi", "paths"]})},
    }},
    "/api/v1/exams": {"get": {
        "summary": "Exams with windows, structure and provinces",
        "responses": {"200": json_answer("exams", {"type": "array", "items": ref("Exam")})},
    }},
    "/api/v1/exams/{exam_id}/sites": {"get": {
        "summary": "Exam sites with seats available",
        "parameters": [EXAM_ID, {"name": "province", "in": "query",
                                 "schema": {"type": "string", "pattern": "^[0-9]{2}$"}}],
        "responses": {
            "200": json_answer("sites", {"type": "array", "items": ref("Site")}),
            "404": error("exam_not_found"),
            "422": error("validation_failed: bad province code"),
        },
    }},
    "/api/v1/captcha/image": {"get": {
        "summary": "A pre-drawn image captcha (5 digits), single use",
        "responses": {
            "200": json_answer("image", obj(["id", "image", "expires_in"], {
                "id": {"type": "string"}, "image": {"type": "string", "pattern": "^data:image/png;base64,"},
                "expires_in": {"type": "integer", "description": "seconds the answer is accepted"}})),
            "503": error("service_unavailable: the image pool is empty (details.reason captcha_pool_empty); or shed"),
        },
    }},
    "/api/v1/captcha/pow": {"get": {
        "summary": "An ALTCHA proof-of-work challenge; maxnumber is live config",
        "responses": {"200": json_answer("challenge", ref("PowChallenge"))},
    }},
    "/api/v1/accounts": {"post": {
        "summary": "Register a candidate (captcha per live config)",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body(ref("Registration")),
        "responses": {
            "201": json_answer("registered", obj(["candidate_id"], {"candidate_id": {"type": "integer"}})),
            "400": error("malformed_body, captcha_invalid"),
            "409": error("id_number_taken, phone_taken, username_taken (details.field)"),
            "422": error("validation_failed: details.fields maps each field to its problem"),
            "503": error("overloaded: the password hashing pool is full (Retry-After); or shed"),
        },
    }},
    "/api/v1/sessions": {"post": {
        "summary": "Sign in (captcha per live config)",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body({"type": "object", "additionalProperties": False, "required": ["username", "password"],
                                  "properties": {"username": {"type": "string", "minLength": 1, "maxLength": 64},
                                                 "password": {"type": "string", "minLength": 1, "maxLength": 256},
                                                 "captcha": CAPTCHA},
                                  "examples": [{"username": "zhangsan2026", "password": "Qiu#2026pass"}]}),
        "responses": {
            "201": json_answer("signed in", obj(["token", "expires_in"], {
                "token": {"type": "string"}, "expires_in": {"type": "integer"}})),
            "400": error("malformed_body, captcha_invalid; captcha_required (details.captcha: the kind to solve) "
                         "once the username's wrong passwords spent its allowance"),
            "401": error("invalid_credentials: unknown user and wrong password alike"),
            "422": error("validation_failed: username or password missing, not a string or too long"),
            "429": error("too_many_attempts (Retry-After, RateLimit headers)"),
            "503": error("overloaded: the password hashing pool is full (Retry-After); or shed"),
        },
    }},
    "/api/v1/sessions/current": {"delete": {
        "summary": "Sign out",
        "security": SESSION,
        "responses": {"204": {"description": "signed out"}},
    }},
    "/api/v1/me": {"get": {
        "summary": "The signed-in candidate's profile, id number masked",
        "security": SESSION,
        "responses": {"200": json_answer("profile", ref("Profile"))},
    }},
    "/api/v1/password-resets/question": {"post": {
        "summary": "Start a reset by security question (the id number's question; a decoy for an unknown one)",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body({"type": "object", "additionalProperties": False, "required": ["name", "id_number"],
                                  "properties": {"name": text(1, 64),
                                                 "id_number": text(1, 32), "captcha": CAPTCHA}}),
        "responses": {
            "200": json_answer("reset started", obj(["reset_id", "question"], {
                "reset_id": {"type": "string"}, "question": {"type": "string"}})),
            "400": error("malformed_body, captcha_invalid"),
            "422": error("validation_failed"),
        },
    }},
    "/api/v1/password-resets/question/{reset_id}": {"post": {
        "summary": "Answer the security question and set a new password (ends every session)",
        "parameters": [{"name": "reset_id", "in": "path", "required": True, "schema": {"type": "string"}},
                       LOADTEST_HEADER],
        "requestBody": json_body({"type": "object", "additionalProperties": False,
                                  "required": ["answer", "new_password"],
                                  "properties": {"answer": text(1, 64),
                                                 "new_password": {"type": "string", "pattern": "^[!-~]{8,32}$",
                                                                  "description": "the password policy of registration"},
                                                 "captcha": CAPTCHA}}),
        "responses": {
            "204": {"description": "password changed"},
            "400": error("reset_invalid (unknown, expired or used reset id, or wrong answer); "
                         "reset_attempts_exhausted; captcha_invalid; malformed_body"),
            "422": error("validation_failed: details.fields.new_password names the policy problem"),
            "503": error("overloaded (hashing pool full); or shed"),
        },
    }},
    "/api/v1/password-resets/sms": {"post": {
        "summary": "Send a reset code to the phone if name, id number and phone are one account's",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body({"type": "object", "additionalProperties": False,
                                  "required": ["name", "id_number", "phone"],
                                  "properties": {"name": text(1, 64),
                                                 "id_number": text(1, 32),
                                                 "phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"},
                                                 "captcha": CAPTCHA}}),
        "responses": {
            "202": json_answer("accepted (sent only when the three match)",
                               obj(["expires_in"], {"expires_in": {"type": "integer"}})),
            "400": error("malformed_body, captcha_invalid"),
            "422": error("validation_failed"),
            "429": error("too_many_requests: codes to this phone too frequent (details.reason sms_per_phone), "
                         "or a throttle (Retry-After)"),
        },
    }},
    "/api/v1/password-resets/sms/confirm": {"post": {
        "summary": "Check the SMS code and set a new password (ends every session)",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body({"type": "object", "additionalProperties": False,
                                  "required": ["phone", "code", "new_password"],
                                  "properties": {"phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"},
                                                 "code": text(1, 16),
                                                 "new_password": {"type": "string", "pattern": "^[!-~]{8,32}$",
                                                                  "description": "the password policy of registration"},
                                                 "captcha": CAPTCHA}}),
        "responses": {
            "204": {"description": "password changed"},
            "400": error("code_invalid (wrong, expired, used or out of attempts); captcha_invalid; malformed_body"),
            "422": error("validation_failed: details.fields.new_password names the policy problem"),
            "503": error("overloaded (hashing pool full); or shed"),
        },
    }},
    "/api/v1/exams/{exam_id}/queue": {"post": {
        "summary": "Take (or find again) a place in the exam's waiting room (when enabled by live config)",
        "security": SESSION,
        "parameters": [EXAM_ID],
        "responses": {
            "202": json_answer("the place; position 0 until the pre-opening draw", ref("QueuePlace")),
            "403": error("registration_closed: the exam's registration has closed"),
            "404": error("exam_not_found, queue_not_enabled"),
        },
    }},
    "/api/v1/exams/{exam_id}/queue/{ticket}": {"get": {
        "summary": "Poll a place; once admitted, an admission token for the seat routes",
        "security": SESSION,
        "parameters": [EXAM_ID, {"name": "ticket", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": json_answer("waiting, or admitted with a token", {"oneOf": [
                ref("QueueStatus"),
                obj(["admitted", "admission_token", "expires_in"], {
                    "admitted": {"const": True}, "admission_token": {"type": "string"},
                    "expires_in": {"type": "integer"}})]}),
            "404": error("exam_not_found, queue_not_enabled, queue_ticket_not_found (unknown or not yours)"),
            "410": error("queue_place_expired: not polled within the place TTL, or the admission expired"),
        },
    }},
    "/api/v1/registrations": {"post": {
        "summary": "Enrol in an exam: a draft registration",
        "security": SESSION,
        "requestBody": json_body(ref("Enrolment")),
        "responses": {
            "201": json_answer("created", obj(["registration_id", "status"], {
                "registration_id": {"type": "integer"}, "status": {"const": "draft"}})),
            "403": error("registration_closed: outside the registration window"),
            "409": error("already_registered: one registration per candidate and exam"),
            "422": error("validation_failed: details.fields"),
        },
    }},
    "/api/v1/registrations/{registration_id}": {"get": {
        "summary": "The candidate's own registration; site_id and hold_expires_at are the live hold",
        "security": SESSION,
        "parameters": [REGISTRATION_ID],
        "responses": {
            "200": json_answer("the registration", ref("EnrolmentRecord")),
            "404": error("registration_not_found (or not yours)"),
        },
    }},
    "/api/v1/registrations/{registration_id}/seat": {
        "put": {
            "summary": "Hold a seat at a site: take, move (the old seat is returned atomically) or refresh",
            "security": SESSION,
            "parameters": [REGISTRATION_ID, {"name": "X-Admission-Token", "in": "header", "required": False,
                                             "schema": {"type": "string"},
                                             "description": "required while the exam's waiting room is enabled"}],
            "requestBody": json_body({"type": "object", "additionalProperties": False, "required": ["site_id"],
                                      "properties": {"site_id": BODY_ID}}),
            "responses": {
                "200": json_answer("held", obj(["site_id", "hold_expires_at"], {
                    "site_id": {"type": "integer"},
                    "hold_expires_at": {"type": ["string", "null"], "format": "date-time",
                                        "description": "null when the seat is paid (permanent)"}})),
                "403": error("admission_required; registration_closed"),
                "404": error("registration_not_found, site_not_found (not a site of the exam), exam_not_found"),
                "409": error("site_full, seat_locked (paid), registration_inactive, hold_contention"),
                "422": error("validation_failed: site_id missing or not an integer; other_province"),
                "503": error("service_unavailable: seat inventory loading (Retry-After); or shed"),
            },
        },
        "delete": {
            "summary": "Give the seat back (no admission token needed)",
            "security": SESSION,
            "parameters": [REGISTRATION_ID],
            "responses": {
                "204": {"description": "released (or there was none)"},
                "404": error("registration_not_found"),
                "409": error("seat_locked: a paid seat is not released"),
            },
        },
    },
    "/api/v1/registrations/{registration_id}/confirm": {"post": {
        "summary": "Make the registration's details final (needs a live seat hold)",
        "security": SESSION,
        "parameters": [REGISTRATION_ID],
        "responses": {
            "200": json_answer("confirmed", obj(["registration_id", "status", "site_id", "hold_expires_at"], {
                "registration_id": {"type": "integer"}, "status": {"const": "confirmed"},
                "site_id": {"type": ["integer", "null"]},
                "hold_expires_at": {"type": ["string", "null"], "format": "date-time"}})),
            "404": error("registration_not_found"),
            "409": error("hold_required (no live hold), cannot_confirm (paid, cancelled or expired)"),
        },
    }},
    "/api/v1/registrations/{registration_id}/orders": {"post": {
        "summary": "Open the registration's order (or return its pending one) and the provider's pay URL",
        "security": SESSION,
        "parameters": [REGISTRATION_ID],
        "requestBody": json_body({"type": "object", "required": ["provider"], "additionalProperties": False,
                                  "properties": {"provider": {"enum": ["alipay", "wechat"]}}}),
        "responses": {
            "201": json_answer("order opened", ref("Order")),
            "200": json_answer("the pending order, as opened before", ref("Order")),
            "404": error("registration_not_found"),
            "409": error("not_confirmed, already_paid, registration_inactive, hold_required, payment_processing, "
                         "order_rejected_by_provider"),
            "422": error("validation_failed (provider)"),
            "503": error("service_unavailable (payment provider unreachable, or payment keys missing); or shed"),
        },
    }},
    "/api/v1/tickets/lookup": {"post": {
        "summary": "The admission ticket inside the print window, with a signed PDF link",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body(ref("TicketLookup")),
        "responses": {
            "200": json_answer("the ticket", obj(["ticket_no", "name", "exam", "site", "room", "seat_no", "subjects",
                                                  "pdf_url"], {"subjects": {"type": "array"},
                                                               "pdf_url": {"type": "string"}})),
            "400": error("malformed_body, captcha_invalid"),
            "404": error("not_found (same body for a wrong id or name), exam_not_found"),
            "422": error("validation_failed"),
            "425": error("not_yet_available (details.available_from, available_until)"),
            "503": error("overloaded (PostgreSQL fallback full); or shed"),
        },
    }},
    "/api/v1/tickets/{ticket_no}.pdf": {"get": {
        "summary": "The admission ticket as a PDF, behind the signed expiring link the ticket lookup gave",
        "parameters": [{"name": "ticket_no", "in": "path", "required": True, "schema": {"type": "string"}},
                       {"name": "exam", "in": "query", "required": True, "schema": {"type": "integer"}},
                       {"name": "exp", "in": "query", "required": True, "schema": {"type": "integer"}},
                       {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "the PDF", "content": {"application/pdf": {"schema": {"type": "string"}}}},
            "403": error("link_invalid (tampered, another ticket's, or expired)"),
            "404": error("not_found, exam_not_found"),
            "503": error("service_unavailable: the PDF cannot be made (ticket font missing); or shed"),
        },
    }},
    "/api/v1/scores/lookup": {"post": {
        "summary": "The candidate's scores once released, by id number or ticket number",
        "parameters": [LOADTEST_HEADER],
        "requestBody": json_body(ref("ScoreLookup")),
        "responses": {
            "200": json_answer("the scores", obj(["exam_id", "name", "ticket_no", "subjects", "passed_all"], {
                "subjects": {"type": "array"}, "passed_all": {"type": "boolean"}})),
            "400": error("malformed_body, captcha_invalid"),
            "404": error("not_found (same body for a wrong id, ticket number or name), exam_not_found"),
            "422": error("validation_failed"),
            "425": error("not_yet_released (details.release_at)"),
            "503": error("overloaded (PostgreSQL fallback full); or shed"),
        },
    }},
    "/api/v1/payments/notify/alipay": {"post": {
        "summary": "Alipay asynchronous notification (RSA2-signed form); text success only after the commit",
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}},
        "responses": {
            "200": {"description": "success: recorded (paid, duplicate or refund_pending)",
                    "content": {"text/plain": {"schema": {"const": "success"}}}},
            "400": text_or_error("fail: rejected and recorded (bad signature, unknown order, app id, amount); "
                                 "malformed_request (JSON) when the body's framing is broken"),
            "429": text_or_error("too_many_requests: a throttle (Alipay retries)"),
            "503": text_or_error("fail: not committed (store down), payment keys missing, or shed; Alipay retries"),
        },
    }},
    "/api/v1/payments/notify/wechat": {"post": {
        "summary": "WeChat Pay v3 notification (signed headers, AES-256-GCM resource); 204 only after the commit",
        "requestBody": json_body({"type": "object"}),
        "responses": {
            "204": {"description": "recorded (paid, duplicate or refund_pending)"},
            "400": json_answer("rejected and recorded; malformed_request (the API's error) when the body's framing "
                               "is broken", {"oneOf": [ref("WechatReply"), ERROR]}),
            "500": json_answer("not committed (store down); WeChat Pay retries", ref("WechatReply")),
            "503": error("service_unavailable: payment keys missing; or shed"),
        },
    }},
}

SECURITY_SCHEMES = {
    "session": {"type": "http", "scheme": "bearer",
                "description": "a candidate session token from POST /api/v1/sessions"},
    "admin": {"type": "http", "scheme": "bearer", "description": "an operator's token (EXAMGATE_ADMIN_TOKENS)"},
    "metrics": {"type": "http", "scheme": "bearer",
                "description": "the metrics scraper's token (EXAMGATE_METRICS_TOKEN)"},
}

_HEADER = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}
_RETRY = {"Retry-After": _HEADER["RetryAfter"]}
SHARED: dict[str, dict[str, Any]] = {
    "400": error("malformed_request: not valid HTTP (details.reason)"),
    "401": {**error("unauthorized: no bearer token, or not a valid one"),
            "headers": {"WWW-Authenticate": _HEADER["WWWAuthenticate"]}},
    "408": error("request_timeout: the body was not received in time"),
    "413": error("body_too_large: details.max_bytes"),
    "429": {**error("too_many_requests: a throttle (details.retry_after_s, details.rules)"),
            "headers": {**_RETRY, "RateLimit-Policy": _HEADER["RateLimitPolicy"], "RateLimit": _HEADER["RateLimit"]}},
    "503": {**error("overloaded (shed), maintenance (the operator's message), service_unavailable or "
                    "config_unavailable (a store or the live config away)"), "headers": _RETRY},
}
JSON_BODY: dict[str, dict[str, Any]] = {
    "400": error("malformed_body: not a JSON object; malformed_request: not valid HTTP"),
    "415": error("unsupported_media_type: details.expected names the content type"),
}


def _shared_for(path: str, method: str, operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shared = {status: SHARED[status] for status in ("400", "413", "429", "503")}
    if operation.get("security"):
        shared["401"] = SHARED["401"]
    body = operation.get("requestBody")
    if body is not None:
        shared["408"] = SHARED["408"]
        if (method, path) not in RAW_BODY and any(media in body["content"] for media in JSON_TYPES):
            shared.update(JSON_BODY)
    return shared


def _with_shared_responses(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every operation with the shared answers added (its own description kept) and X-Request-Id on each."""
    paths = copy.deepcopy(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, shared in _shared_for(path, method, operation).items():
                own = responses.setdefault(status, copy.deepcopy(shared))
                own.setdefault("headers", {}).update(shared.get("headers", {}))
            for response in responses.values():
                response.setdefault("headers", {})["X-Request-Id"] = _HEADER["RequestId"]
            operation["responses"] = dict(sorted(responses.items()))
    return paths


PATHS = _with_shared_responses({**PATHS, **ADMIN_PATHS})
