"""The reusable parts of the OpenAPI document: component schemas, headers, and builders of answers and parameters.

Request schemas state what the handlers check before looking anything up (types, required
fields, lengths, patterns, choices, unknown fields refused); what depends on stored state or
cannot be written in JSON Schema (a check digit, a password's character classes, the exam's
own levels and subjects) is said in the descriptions and answered 422 with ``details.fields``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BODY_ID", "CAPTCHA", "ERROR", "HEADERS", "JSON_TYPES", "SCHEMAS", "STREAM_ID",
    "error", "id_param", "json_answer", "json_body", "obj", "ref", "text", "text_or_error",
]  # fmt: skip

# Path ids are canonical positive integers of at most 18 digits (gateway.pathids); anything else is 404.
MAX_ID = 999_999_999_999_999_999
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
JSON_TYPES = ("application/json", "application/merge-patch+json")
# An id in a body: what a bigint column holds, refused beyond it (gateway.bodies keeps such numbers floats).
BODY_ID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
# JSON Schema patterns are not anchored: at least one character that is not white space, as the server
# trims it (Python's, which also counts U+001C-U+001F and U+0085).
NOT_BLANK = r"[^\s\u001c-\u001f\u0085]"


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def id_param(name: str, description: str = "") -> dict[str, Any]:
    """A numeric id in the path."""
    param: dict[str, Any] = {"name": name, "in": "path", "required": True,
                             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
    if description:
        param["description"] = description
    return param


def text(min_chars: int, max_chars: int, description: str = "") -> dict[str, Any]:
    """A string of ``min_chars``-``max_chars`` characters that is not all white space."""
    schema: dict[str, Any] = {"type": "string", "minLength": min_chars, "maxLength": max_chars,
                              "pattern": NOT_BLANK}
    if description:
        schema["description"] = description
    return schema


ERROR = ref("Error")
CAPTCHA = ref("Captcha")


def error(description: str) -> dict[str, Any]:
    """An answer with the API's error body."""
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON answer of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body of ``schema``."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema with these required names and properties (others allowed)."""
    return {"type": "object", "required": required, "properties": properties}


def text_or_error(description: str) -> dict[str, Any]:
    """A payment provider's plain-text reply, or the API's JSON error when the gateway refuses first."""
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}},
                                                    "application/json": {"schema": ERROR}}}


FREE_TEXT = "white space runs count as one space; control, format, private-use and unassigned characters are refused"
PASSWORD_RULES = ("8-32 visible ASCII characters with at least three of upper case, lower case, digits and symbols, "
                  "containing neither the username nor the id number (422 too_few_character_classes, "
                  "contains_username, contains_id_number)")

HEADERS: dict[str, Any] = {
    "RequestId": {"description": "the request's id (echoed when the client sent a valid one)", "required": True,
                  "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
    "RetryAfter": {"description": "whole seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}},
    "RateLimitPolicy": {"description": "the throttle's policy (IETF httpapi ratelimit-headers draft)",
                        "schema": {"type": "string"}},
    "RateLimit": {"description": "what is left of the throttle's quota (IETF httpapi ratelimit-headers draft)",
                  "schema": {"type": "string"}},
    "WWWAuthenticate": {"description": "the bearer challenge", "schema": {"type": "string"}},
}

_EDUCATION_LEVELS = ["doctorate", "master", "bachelor", "college", "secondary"]
_EDUCATION_MODES = ["full_time", "part_time", "self_study", "online"]
_ID_TYPES = ["resident_id", "passport", "military_officer", "hk_macau_permit", "taiwan_permit"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "message": {"type": "string", "minLength": 1, "description": "for people, in Chinese"},
                "details": {"type": "object", "description": "422: fields maps each field to its problem; "
                                                             "429: retry_after_s and rules"},
            },
        }},
    },
    "Captcha": {
        "description": "required when live config guards the route and no valid X-Loadtest-Token is sent",
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
        "additionalProperties": False,
        "required": ["cert_no", "school", "graduated_on", "major", "level", "mode"],
        "properties": {
            "cert_no": text(1, 64, "unique within the body (422 duplicate)"),
            "school": text(1, 64, FREE_TEXT),
            "graduated_on": {"type": "string", "pattern": "^(195[1-9]|19[6-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])$",
                             "description": "YYYY-MM from 1951-01, not in the future (422 in_future)"},
            "major": text(1, 64, FREE_TEXT),
            "level": {"enum": _EDUCATION_LEVELS},
            "mode": {"enum": _EDUCATION_MODES},
        },
    },
    "Registration": {
        "type": "object",
        "additionalProperties": False,
        "required": ["username", "password", "name", "id_type", "id_number", "phone", "email",
                     "security_question", "security_answer", "educations"],
        "properties": {
            "username": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{5,19}$",
                         "description": "case-insensitive"},
            "password": {"type": "string", "pattern": "^[!-~]{8,32}$", "description": PASSWORD_RULES},
            "name": {"type": "string", "minLength": 2, "maxLength": 64, "pattern": NOT_BLANK,
                     "description": "Chinese characters (2-30; a rare one in brackets, parts joined by ·), or Latin "
                                    "letters for a passport (up to 64); otherwise 422 invalid_characters"},
            "id_type": {"enum": _ID_TYPES},
            "id_number": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": NOT_BLANK,
                          "description": "per id_type: a resident id is 18 characters with a valid GB 11643 check "
                                         "digit (422 invalid_length, invalid_format, invalid_region, "
                                         "invalid_birth_date, invalid_check_digit)"},
            "phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"},
            "email": {"type": "string", "format": "email", "minLength": 3, "maxLength": 254,
                      "description": "422 invalid_format unless an address with a dotted domain"},
            "security_question": text(2, 64, FREE_TEXT),
            "security_answer": text(1, 64, FREE_TEXT),
            "educations": {"type": "array", "minItems": 1, "maxItems": 10, "items": ref("Education")},
            "captcha": CAPTCHA,
        },
        "examples": [{
            "username": "zhangsan2026", "password": "Qiu#2026pass", "name": "张三", "id_type": "resident_id",
            "id_number": "11010519491231002X", "phone": "13912345678", "email": "zhangsan@example.com",
            "security_question": "我的小学校名？", "security_answer": "实验小学",
            "educations": [{"cert_no": "10001120120600123", "school": "北京大学", "graduated_on": "2012-06",
                            "major": "经济学", "level": "bachelor", "mode": "full_time"}],
        }],
    },
    "Profile": {
        "type": "object",
        "required": ["candidate_id", "username", "name", "id_type", "id_number", "phone", "email",
                     "security_question", "created_at", "educations"],
        "properties": {
            "candidate_id": {"type": "integer"}, "username": {"type": "string"}, "name": {"type": "string"},
            "id_type": {"enum": _ID_TYPES}, "id_number": {"type": "string", "description": "masked"},
            "phone": {"type": "string"}, "email": {"type": "string"}, "security_question": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "educations": {"type": "array", "items": {"type": "object"}},
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
            "levels": {"type": "array", "items": {"type": "object", "required": ["code", "name", "specialties"]}},
            "provinces": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]{2}$"}},
        },
    },
    "Site": {
        "type": "object",
        "required": ["site_id", "province", "city", "name", "address", "capacity", "available"],
        "properties": {
            "site_id": {"type": "integer"}, "province": {"type": "string"}, "city": {"type": "string"},
            "name": {"type": "string"}, "address": {"type": "string"},
            "capacity": {"type": "integer", "minimum": 0}, "available": {"type": "integer"},
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
    "Enrolment": {
        "type": "object",
        "additionalProperties": False,
        "required": ["exam_id", "province", "city", "level", "specialty", "subjects", "work_years", "commitment"],
        "description": "province, level, specialty and subjects must be the exam's (422 invalid_choice; "
                       "unknown_exam for an exam that does not exist)",
        "properties": {
            "exam_id": BODY_ID,
            "province": {"type": "string"},
            "city": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": NOT_BLANK, "description": FREE_TEXT},
            "level": {"type": "string"}, "specialty": {"type": "string"},
            "subjects": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
            "work_years": {"type": "integer", "minimum": 0, "maximum": 60}, "commitment": {"const": True},
            "captcha": {"description": "accepted and ignored"},
        },
        "examples": [{"exam_id": 1, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin",
                      "subjects": ["101"], "work_years": 5, "commitment": True}],
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
    "Order": {
        "type": "object",
        "required": ["order_no", "provider", "amount_fen", "pay_url", "expires_at"],
        "properties": {"order_no": {"type": "string"}, "provider": {"enum": ["alipay", "wechat"]},
                       "amount_fen": {"type": "integer", "minimum": 0}, "pay_url": {"type": "string"},
                       "expires_at": {"type": "string", "format": "date-time"}},
    },
    "TicketLookup": {
        "type": "object",
        "additionalProperties": False,
        "required": ["exam_id", "name", "id_number"],
        "properties": {"exam_id": BODY_ID, "name": text(1, 64),
                       "id_number": text(1, 32), "captcha": CAPTCHA},
    },
    "ScoreLookup": {
        "type": "object",
        "additionalProperties": False,
        "required": ["exam_id", "name"],
        "description": "by id number or by ticket number, not both (null counts as absent)",
        "properties": {"exam_id": BODY_ID, "name": text(1, 64),
                       "id_number": {**text(1, 32), "type": ["string", "null"]},
                       "ticket_no": {**text(1, 32), "type": ["string", "null"]}, "captcha": CAPTCHA},
        "oneOf": [{"required": ["id_number"], "properties": {"id_number": {"type": "string"}}},
                  {"required": ["ticket_no"], "properties": {"ticket_no": {"type": "string"}}}],
    },
    "WechatReply": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"const": "FAIL"}, "message": {"type": "string"}},
    },
    "LiveConfig": {
        "type": "object",
        "required": ["version", "config"],
        "properties": {
            "version": {"type": "integer", "minimum": 0},
            "config": {"type": "object", "required": ["ratelimit", "captcha", "queue", "seats", "shedding",
                                                      "maintenance"]},
        },
    },
}
