"""The OpenAPI 3.1 document of the routes this gateway serves, kept beside the code."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


CAPTCHA = {"$ref": "#/components/schemas/Captcha"}
LOADTEST_HEADER = {"name": "X-Loadtest-Token", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "an operator-issued load-test token; lets captcha pass while valid"}

EXAM_ID = {"name": "exam_id", "in": "path", "required": True, "schema": {"type": "integer"}}
REGISTRATION_ID = {"name": "registration_id", "in": "path", "required": True, "schema": {"type": "integer"}}

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
    "/api/v1/captcha/image": {
        "get": {
            "summary": "A pre-drawn image captcha (5 digits), single use",
            "responses": {
                "200": _json("image", {"type": "object", "required": ["id", "image", "expires_in"], "properties": {
                    "id": {"type": "string"}, "image": {"type": "string", "description": "data:image/png;base64,…"},
                    "expires_in": {"type": "integer", "description": "seconds the answer is accepted"}}}),
                "503": _error("service_unavailable: the image pool is empty (Retry-After)"),
            },
        }
    },
    "/api/v1/captcha/pow": {
        "get": {
            "summary": "An ALTCHA proof-of-work challenge; maxnumber is live config",
            "responses": {"200": _json("challenge", {"$ref": "#/components/schemas/PowChallenge"})},
        }
    },
    "/api/v1/accounts": {
        "post": {
            "summary": "Register a candidate (captcha per live config)",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"$ref": "#/components/schemas/Registration"}),
            "responses": {
                "201": _json("registered", {"type": "object", "required": ["candidate_id"],
                                            "properties": {"candidate_id": {"type": "integer"}}}),
                "400": _error("malformed_body, captcha_invalid"),
                "409": _error("id_number_taken, phone_taken, username_taken (details.field)"),
                "415": _error("not JSON"),
                "422": _error("validation_failed: details.fields maps each field to its problem"),
                "429": _error("too_many_requests"),
                "503": _error("overloaded: the password hashing pool is full (Retry-After)"),
            },
        }
    },
    "/api/v1/sessions": {
        "post": {
            "summary": "Sign in (captcha per live config)",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"type": "object", "required": ["username", "password"], "properties": {
                "username": {"type": "string"}, "password": {"type": "string"}, "captcha": CAPTCHA}}),
            "responses": {
                "201": _json("signed in", {"type": "object", "required": ["token", "expires_in"], "properties": {
                    "token": {"type": "string"}, "expires_in": {"type": "integer"}}}),
                "400": _error("malformed_body, captcha_invalid"),
                "401": _error("invalid_credentials: unknown user and wrong password alike"),
                "422": _error("validation_failed: username or password missing"),
                "429": _error("too_many_attempts (Retry-After, RateLimit headers)"),
                "503": _error("overloaded: the password hashing pool is full (Retry-After)"),
            },
        }
    },
    "/api/v1/sessions/current": {
        "delete": {
            "summary": "Sign out (Authorization: Bearer <session token>)",
            "security": [{"session": []}],
            "responses": {"204": {"description": "signed out"}, "401": _error("unauthorized")},
        }
    },
    "/api/v1/me": {
        "get": {
            "summary": "The signed-in candidate's profile, id number masked",
            "security": [{"session": []}],
            "responses": {"200": _json("profile", {"$ref": "#/components/schemas/Profile"}),
                          "401": _error("unauthorized")},
        }
    },
    "/api/v1/password-resets/question": {
        "post": {
            "summary": "Start a reset by security question (unknown name/id pairs get a decoy question)",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"type": "object", "required": ["name", "id_number"], "properties": {
                "name": {"type": "string"}, "id_number": {"type": "string"}, "captcha": CAPTCHA}}),
            "responses": {
                "200": _json("reset started", {"type": "object", "required": ["reset_id", "question"]}),
                "400": _error("captcha_invalid"),
                "422": _error("validation_failed"),
                "429": _error("too_many_requests"),
            },
        }
    },
    "/api/v1/password-resets/question/{reset_id}": {
        "post": {
            "summary": "Answer the security question and set a new password (ends every session)",
            "parameters": [{"name": "reset_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": _body({"type": "object", "required": ["answer", "new_password"], "properties": {
                "answer": {"type": "string"}, "new_password": {"type": "string"}}}),
            "responses": {
                "204": {"description": "password changed"},
                "400": _error("reset_invalid (unknown, expired or used reset id, or wrong answer); "
                              "reset_attempts_exhausted; captcha_invalid"),
                "422": _error("validation_failed: details.fields.new_password names the policy problem"),
                "503": _error("overloaded"),
            },
        }
    },
    "/api/v1/password-resets/sms": {
        "post": {
            "summary": "Send a reset code to the phone if name, id number and phone are one account's",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"type": "object", "required": ["name", "id_number", "phone"], "properties": {
                "name": {"type": "string"}, "id_number": {"type": "string"}, "phone": {"type": "string"},
                "captcha": CAPTCHA}}),
            "responses": {
                "202": _json("accepted (sent only when the three match)", {
                    "type": "object", "required": ["expires_in"], "properties": {"expires_in": {"type": "integer"}}}),
                "400": _error("captcha_invalid"),
                "422": _error("validation_failed"),
                "429": _error("too_many_requests: codes to this phone too frequent (Retry-After)"),
            },
        }
    },
    "/api/v1/password-resets/sms/confirm": {
        "post": {
            "summary": "Check the SMS code and set a new password (ends every session)",
            "requestBody": _body({"type": "object", "required": ["phone", "code", "new_password"], "properties": {
                "phone": {"type": "string"}, "code": {"type": "string"}, "new_password": {"type": "string"}}}),
            "responses": {
                "204": {"description": "password changed"},
                "400": _error("code_invalid (wrong, expired, used or out of attempts); captcha_invalid"),
                "422": _error("validation_failed: details.fields.new_password names the policy problem"),
                "503": _error("overloaded"),
            },
        }
    },
    "/api/v1/exams/{exam_id}/queue": {
        "post": {
            "summary": "Take (or find again) a place in the exam's waiting room (signed in; when enabled by live config)",
            "security": [{"session": []}],
            "parameters": [EXAM_ID],
            "responses": {
                "202": _json("the place; position 0 until the pre-opening draw", {"$ref": "#/components/schemas/QueuePlace"}),
                "401": _error("not signed in"),
                "403": _error("registration_closed: the exam's registration has closed"),
                "404": _error("exam_not_found, queue_not_enabled"),
            },
        }
    },
    "/api/v1/exams/{exam_id}/queue/{ticket}": {
        "get": {
            "summary": "Poll a place; once admitted, an admission token for the seat routes",
            "security": [{"session": []}],
            "parameters": [EXAM_ID, {"name": "ticket", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json("waiting, or admitted with a token", {"oneOf": [
                    {"$ref": "#/components/schemas/QueueStatus"},
                    {"type": "object", "required": ["admitted", "admission_token", "expires_in"], "properties": {
                        "admitted": {"const": True}, "admission_token": {"type": "string"},
                        "expires_in": {"type": "integer"}}}]}),
                "401": _error("not signed in"),
                "404": _error("exam_not_found, queue_not_enabled, queue_ticket_not_found (unknown or not yours)"),
                "410": _error("queue_place_expired: not polled within the place TTL; join again"),
            },
        }
    },
    "/api/v1/registrations": {
        "post": {
            "summary": "Enrol in an exam (signed in): a draft registration",
            "security": [{"session": []}],
            "requestBody": _body({"type": "object", "required": ["exam_id", "province", "city", "level", "specialty",
                                                                 "subjects", "work_years", "commitment"],
                                  "properties": {
                "exam_id": {"type": "integer"}, "province": {"type": "string"}, "city": {"type": "string"},
                "level": {"type": "string"}, "specialty": {"type": "string"},
                "subjects": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "work_years": {"type": "integer", "minimum": 0, "maximum": 60}, "commitment": {"const": True}}}),
            "responses": {
                "201": _json("created", {"type": "object", "required": ["registration_id", "status"], "properties": {
                    "registration_id": {"type": "integer"}, "status": {"const": "draft"}}}),
                "401": _error("not signed in"),
                "403": _error("registration_closed: outside the registration window"),
                "409": _error("already_registered: one registration per candidate and exam"),
                "422": _error("validation_failed: details.fields"),
            },
        }
    },
    "/api/v1/registrations/{registration_id}": {
        "get": {
            "summary": "The candidate's own registration; site_id and hold_expires_at are the live hold",
            "security": [{"session": []}],
            "parameters": [REGISTRATION_ID],
            "responses": {
                "200": _json("the registration", {"$ref": "#/components/schemas/EnrolmentRecord"}),
                "401": _error("not signed in"),
                "404": _error("registration_not_found (or not yours)"),
            },
        }
    },
    "/api/v1/registrations/{registration_id}/seat": {
        "put": {
            "summary": "Hold a seat at a site: take, move (the old seat is returned atomically) or refresh",
            "security": [{"session": []}],
            "parameters": [REGISTRATION_ID, {"name": "X-Admission-Token", "in": "header", "required": False,
                                             "schema": {"type": "string"},
                                             "description": "required while the exam's waiting room is enabled"}],
            "requestBody": _body({"type": "object", "required": ["site_id"], "properties": {
                "site_id": {"type": "integer"}}}),
            "responses": {
                "200": _json("held", {"type": "object", "required": ["site_id", "hold_expires_at"], "properties": {
                    "site_id": {"type": "integer"},
                    "hold_expires_at": {"type": ["string", "null"], "format": "date-time",
                                        "description": "null when the seat is paid (permanent)"}}}),
                "401": _error("not signed in"),
                "403": _error("admission_required; registration_closed"),
                "404": _error("registration_not_found, site_not_found (not a site of the exam)"),
                "409": _error("site_full, seat_locked (paid), registration_inactive, hold_contention"),
                "422": _error("validation_failed: site_id missing, not an integer, or in another province"),
                "503": _error("service_unavailable: seat inventory loading (Retry-After)"),
            },
        },
        "delete": {
            "summary": "Give the seat back (no admission token needed)",
            "security": [{"session": []}],
            "parameters": [REGISTRATION_ID],
            "responses": {
                "204": {"description": "released (or there was none)"},
                "401": _error("not signed in"),
                "404": _error("registration_not_found"),
                "409": _error("seat_locked: a paid seat is not released"),
            },
        },
    },
    "/api/v1/registrations/{registration_id}/orders": {
        "post": {
            "summary": "Open the registration's order (or return its pending one) and the provider's pay URL",
            "security": [{"session": []}],
            "parameters": [REGISTRATION_ID],
            "requestBody": _body({"type": "object", "required": ["provider"], "additionalProperties": False,
                                  "properties": {"provider": {"enum": ["alipay", "wechat"]}}}),
            "responses": {
                "201": _json("order opened", {"$ref": "#/components/schemas/Order"}),
                "200": _json("the pending order, as opened before", {"$ref": "#/components/schemas/Order"}),
                "401": _error("not signed in"),
                "404": _error("registration_not_found"),
                "409": _error("not_confirmed, already_paid, registration_inactive, hold_required, payment_processing, "
                              "order_rejected_by_provider"),
                "422": _error("validation_failed (provider)"),
                "503": _error("service_unavailable (payment provider unreachable, or payment keys missing)"),
            },
        }
    },
    "/api/v1/tickets/lookup": {
        "post": {
            "summary": "The admission ticket inside the print window, with a signed PDF link",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"type": "object", "required": ["exam_id", "name"],
                                  "properties": {"exam_id": {"type": "integer"}, "name": {"type": "string"},
                                                 "id_number": {"type": "string"}, "captcha": CAPTCHA}}),
            "responses": {
                "200": _json("the ticket", {"type": "object", "required": ["ticket_no", "name", "site", "room", "seat_no",
                                                                          "subjects", "pdf_url"]}),
                "400": _error("captcha_invalid"),
                "404": _error("not_found (same body for a wrong id or name), exam_not_found"),
                "422": _error("validation_failed"),
                "425": _error("not_yet_available (details.available_from, available_until)"),
                "429": _error("too_many_requests"),
                "503": _error("overloaded (PostgreSQL fallback full)"),
            },
        }
    },
    "/api/v1/tickets/{ticket_no}.pdf": {
        "get": {
            "summary": "The admission ticket as a PDF, behind the signed expiring link the ticket lookup gave",
            "parameters": [{"name": "ticket_no", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "exam", "in": "query", "required": True, "schema": {"type": "integer"}},
                           {"name": "exp", "in": "query", "required": True, "schema": {"type": "integer"}},
                           {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the PDF", "content": {"application/pdf": {}}},
                "403": _error("link_invalid (tampered, another ticket's, or expired)"),
                "404": _error("not_found"),
            },
        }
    },
    "/api/v1/scores/lookup": {
        "post": {
            "summary": "The candidate's scores once released, by id number or ticket number",
            "parameters": [LOADTEST_HEADER],
            "requestBody": _body({"type": "object", "required": ["exam_id", "name"],
                                  "properties": {"exam_id": {"type": "integer"}, "name": {"type": "string"},
                                                 "id_number": {"type": "string"}, "ticket_no": {"type": "string"}, "captcha": CAPTCHA}}),
            "responses": {
                "200": _json("the scores", {"type": "object", "required": ["exam_id", "name", "ticket_no", "subjects",
                                                                          "passed_all"]}),
                "400": _error("captcha_invalid"),
                "404": _error("not_found (same body for a wrong id, ticket number or name), exam_not_found"),
                "422": _error("validation_failed"),
                "425": _error("not_yet_released (details.release_at)"),
                "429": _error("too_many_requests"),
                "503": _error("overloaded (PostgreSQL fallback full)"),
            },
        }
    },
    "/api/v1/payments/notify/alipay": {
        "post": {
            "summary": "Alipay asynchronous notification (RSA2-signed form); text success only after the commit",
            "requestBody": {"required": True,
                            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {"description": "success: recorded (paid, duplicate or refund_pending)",
                        "content": {"text/plain": {}}},
                "400": {"description": "fail: rejected and recorded (bad signature, unknown order, app id, amount)",
                        "content": {"text/plain": {}}},
                "503": {"description": "fail: not committed (store down); Alipay retries", "content": {"text/plain": {}}},
            },
        }
    },
    "/api/v1/payments/notify/wechat": {
        "post": {
            "summary": "WeChat Pay v3 notification (signed headers, AES-256-GCM resource); 204 only after the commit",
            "requestBody": _body({"type": "object"}),
            "responses": {
                "204": {"description": "recorded (paid, duplicate or refund_pending)"},
                "400": _json("rejected and recorded", {"type": "object", "required": ["code", "message"]}),
                "500": _json("not committed (store down); WeChat Pay retries",
                             {"type": "object", "required": ["code", "message"]}),
            },
        }
    },
    "/api/v1/registrations/{registration_id}/confirm": {
        "post": {
            "summary": "Make the registration's details final (needs a live seat hold)",
            "security": [{"session": []}],
            "parameters": [REGISTRATION_ID],
            "responses": {
                "200": _json("confirmed", {"type": "object", "required": ["registration_id", "status"]}),
                "401": _error("not signed in"),
                "404": _error("registration_not_found"),
                "409": _error("hold_required (no live hold), cannot_confirm (paid, cancelled or expired)"),
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
    "/admin/api/v1/reconcile": {
        "post": {
            "summary": "Rebuild seat inventory and holds in Redis from PostgreSQL; the drift found and repaired",
            "parameters": [{"name": "exam_id", "in": "query", "schema": {"type": "integer"},
                            "description": "one exam (default every exam)"}],
            "responses": {
                "200": _json("the drift report", {"type": "object", "required": ["drifted", "events_drained", "exams"]}),
                "401": _error("no or wrong admin token"),
                "404": _error("exam_not_found"),
                "422": _error("exam_id is not an id"),
            },
        }
    },
    "/admin/api/v1/exams/{exam_id}/prewarm": {
        "post": {
            "summary": "Load every ticket and score record of the exam into Redis",
            "parameters": [EXAM_ID],
            "responses": {
                "200": _json("what was loaded", {"type": "object", "required": ["scores", "tickets", "seconds"]}),
                "401": _error("no or wrong admin token"),
                "404": _error("exam_not_found"),
            },
        }
    },
    "/admin/api/v1/refunds": {
        "get": {
            "summary": "Payments recorded refund_pending (late, for a closed order, or a second trade), newest first",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {
                "200": _json("refunds", {"type": "object", "required": ["refunds"]}),
                "401": _error("no or wrong admin token"),
                "422": _error("bad limit"),
            },
        }
    },
    "/admin/api/v1/dead-letters": {
        "get": {
            "summary": "Hold events the write-behind gave up on, oldest first",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "after", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": _json("dead letters", {"type": "object", "required": ["dead_letters"]}),
                "401": _error("no or wrong admin token"),
                "422": _error("bad limit or after"),
            },
        }
    },
    "/admin/api/v1/dead-letters/replay": {
        "post": {
            "summary": "Put dead letters back on their streams (ids, or all)",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}}}}}},
            "responses": {
                "200": _json("how many", {"type": "object", "required": ["replayed"]}),
                "401": _error("no or wrong admin token"),
                "422": _error("bad ids"),
            },
        }
    },
    "/admin/api/v1/loadtest-tokens": {
        "post": {
            "summary": "Issue a load-test token: sent as X-Loadtest-Token it lets captcha pass until it expires (audited)",
            "requestBody": _body({"type": "object", "required": ["ttl_s"], "properties": {
                "ttl_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                "name": {"type": "string", "maxLength": 100, "description": "label; default the operator's name"}}}),
            "responses": {
                "201": _json("the token", {"type": "object", "required": ["token", "expires_at"], "properties": {
                    "token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                    "token_id": {"type": "string"}, "name": {"type": "string"}}}),
                "401": _error("no or wrong admin token"),
                "422": _error("validation_failed: ttl_s out of range"),
            },
        }
    },
}

SCHEMAS: dict[str, Any] = {
    "Order": {
        "type": "object",
        "required": ["order_no", "provider", "amount_fen", "pay_url", "expires_at"],
        "properties": {"order_no": {"type": "string"}, "provider": {"enum": ["alipay", "wechat"]},
                       "amount_fen": {"type": "integer"}, "pay_url": {"type": "string"},
                       "expires_at": {"type": "string", "format": "date-time"}},
    },
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
    "Captcha": {
        "oneOf": [
            {"type": "object", "required": ["kind", "id", "answer"], "properties": {
                "kind": {"const": "image"}, "id": {"type": "string"}, "answer": {"type": "string"}}},
            {"type": "object", "required": ["kind", "payload"], "properties": {
                "kind": {"const": "pow"}, "payload": {"type": "string", "description": "base64 ALTCHA payload"}}},
        ],
    },
    "PowChallenge": {
        "type": "object",
        "required": ["algorithm", "challenge", "maxnumber", "salt", "signature"],
        "properties": {"algorithm": {"const": "SHA-256"}, "challenge": {"type": "string"},
                       "maxnumber": {"type": "integer"}, "salt": {"type": "string"}, "signature": {"type": "string"}},
    },
    "Education": {
        "type": "object",
        "required": ["cert_no", "school", "graduated_on", "major", "level", "mode"],
        "properties": {
            "cert_no": {"type": "string"}, "school": {"type": "string"},
            "graduated_on": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}, "major": {"type": "string"},
            "level": {"enum": ["doctorate", "master", "bachelor", "college", "secondary"]},
            "mode": {"enum": ["full_time", "part_time", "self_study", "online"]},
        },
    },
    "Registration": {
        "type": "object",
        "required": ["username", "password", "name", "id_type", "id_number", "phone", "email",
                     "security_question", "security_answer", "educations"],
        "properties": {
            "username": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{5,19}$"},
            "password": {"type": "string", "minLength": 8, "maxLength": 32},
            "name": {"type": "string"},
            "id_type": {"enum": ["resident_id", "passport", "military_officer", "hk_macau_permit", "taiwan_permit"]},
            "id_number": {"type": "string"},
            "phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"},
            "email": {"type": "string", "format": "email"},
            "security_question": {"type": "string"},
            "security_answer": {"type": "string"},
            "educations": {"type": "array", "minItems": 1, "maxItems": 10,
                           "items": {"$ref": "#/components/schemas/Education"}},
            "captcha": CAPTCHA,
        },
    },
    "Profile": {
        "type": "object",
        "required": ["candidate_id", "username", "name", "id_type", "id_number", "phone", "email",
                     "security_question", "created_at", "educations"],
        "properties": {
            "candidate_id": {"type": "integer"}, "username": {"type": "string"}, "name": {"type": "string"},
            "id_type": {"type": "string"}, "id_number": {"type": "string", "description": "masked"},
            "phone": {"type": "string"}, "email": {"type": "string"}, "security_question": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "educations": {"type": "array", "items": {"$ref": "#/components/schemas/Education"}},
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
    "QueuePlace": {
        "type": "object",
        "required": ["ticket", "position", "serving", "ahead", "eta_s", "poll_after_s"],
        "properties": {
            "ticket": {"type": "string"},
            "position": {"type": "integer", "description": "0 while the pre-opening draw has not happened"},
            "serving": {"type": "integer"}, "ahead": {"type": "integer"}, "eta_s": {"type": "integer"},
            "poll_after_s": {"type": "integer"}, "admitted": {"type": "boolean"},
        },
    },
    "QueueStatus": {
        "type": "object",
        "required": ["position", "serving", "ahead", "eta_s", "poll_after_s", "admitted"],
        "properties": {
            "position": {"type": "integer"}, "serving": {"type": "integer"}, "ahead": {"type": "integer"},
            "eta_s": {"type": "integer"}, "poll_after_s": {"type": "integer"}, "admitted": {"const": False},
        },
    },
    "EnrolmentRecord": {
        "type": "object",
        "required": ["registration_id", "exam_id", "status", "site_id", "hold_expires_at", "order_no", "ticket_no"],
        "properties": {
            "registration_id": {"type": "integer"}, "exam_id": {"type": "integer"},
            "status": {"enum": ["draft", "confirmed", "paid", "cancelled", "expired"]},
            "province": {"type": "string"}, "city": {"type": "string"}, "level": {"type": "string"},
            "specialty": {"type": "string"}, "subjects": {"type": "array", "items": {"type": "string"}},
            "work_years": {"type": "integer"}, "site_id": {"type": ["integer", "null"]},
            "hold_expires_at": {"type": ["string", "null"], "format": "date-time"},
            "order_no": {"type": ["string", "null"]}, "ticket_no": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
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
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"session": {"type": "http", "scheme": "bearer",
                                            "description": "a candidate session token from POST /api/v1/sessions"}},
        },
    }
