"""Request and answer models: pydantic v2, parsed in one pass, errors in the API's ``details.fields`` shape.

Request bodies subclass ``Body`` (unknown fields refused, no coercion of strings to numbers);
``gateway.bodies.read_body`` parses them with ``model_validate_json`` and turns pydantic's
errors into today's codes (``required``, ``unknown_field``, ``must_be_string``, ``too_long``, …)
with ``fields_of``. A custom check raises ``PydanticCustomError(code, message)``: its type is
the code the client sees. A model may name the code one field answers for any wrong value
(``field_codes``), where the contract promised one before models existed.

Answer models (``Reply``) exist for the OpenAPI document and the conformance test; handlers
build their answers as dicts and encode them with orjson, which costs a fraction of
serialising a model on the peak paths.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

__all__ = [
    "MAX_ID", "Body", "CaptchaValue", "Id", "Int", "Reply", "Text", "fields_of",
]  # fmt: skip

# Ids are what a bigint column holds; path ids are canonical positive integers of at most 18 digits.
MAX_ID = 999_999_999_999_999_999
_INT64_LIMIT = float(2**63)


def _whole(value: Any) -> Any:
    """2.0 and 2e0 are the integer 2 in JSON: made ints before the strict integer check (within 64 bits)."""
    if type(value) is float and value.is_integer() and -_INT64_LIMIT <= value < _INT64_LIMIT:
        return int(value)
    return value


# An integer that JSON may write as 2.0; strings and booleans stay refused.
Int = Annotated[int, BeforeValidator(_whole)]
# Constraints before the validator: after it, pydantic would apply them to its output and document them as "ge"/"le".
Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_whole)]
# JSON Schema patterns are not anchored: at least one character that is not white space, as Python's strip sees it.
NOT_BLANK = r"[^\s\u001c-\u001f\u0085]"


def Text(min_chars: int, max_chars: int, description: str = "") -> Any:
    """A string of ``min_chars``-``max_chars`` characters, not all white space (checked by the handler's rules)."""
    return Annotated[str, Field(min_length=min_chars, max_length=max_chars, description=description or None,
                                json_schema_extra={"pattern": NOT_BLANK} if min_chars else None)]


CAPTCHA_SCHEMA: dict[str, Any] = {
    "description": "required when live config guards the route and no valid X-Loadtest-Token is sent",
    "oneOf": [
        {"type": "object", "required": ["kind", "id", "answer"], "properties": {
            "kind": {"const": "image"}, "id": {"type": "string"}, "answer": {"type": "string"}}},
        {"type": "object", "required": ["kind", "payload"], "properties": {
            "kind": {"const": "pow"}, "payload": {"type": "string", "description": "base64 ALTCHA payload"}}},
    ],
}
# Checked by ``captcha.check`` (400 captcha_invalid), not by the model: a malformed captcha is a failed one.
CaptchaValue = Annotated[Any, WithJsonSchema(CAPTCHA_SCHEMA)]


class Body(BaseModel):
    """A request body: unknown fields refused, strict types (no "5" for 5), whole floats taken as ints."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)
    # field path → the one code it answers for any wrong value (required and unknown_field excepted)
    field_codes: ClassVar[dict[str, str]] = {}


class Reply(BaseModel):
    """An answer's documented shape (others' fields allowed: answers may grow)."""

    model_config = ConfigDict(extra="allow")


# pydantic's error types → the codes of ``details.fields`` (API.md); custom errors carry their own code.
CODES: dict[str, str] = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "string_type": "must_be_string",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "string_pattern_mismatch": "invalid_format",
    "int_type": "must_be_integer",
    "int_parsing": "must_be_integer",
    "int_from_float": "must_be_integer",
    "bool_type": "must_be_boolean",
    "bool_parsing": "must_be_boolean",
    "float_type": "must_be_number",
    "dict_type": "must_be_object",
    "model_type": "must_be_object",
    "model_attributes_type": "must_be_object",
    "list_type": "must_be_list",
    "tuple_type": "must_be_list",
    "too_short": "too_few",
    "too_long": "too_many",
    "greater_than": "too_small",
    "greater_than_equal": "too_small",
    "less_than": "too_large",
    "less_than_equal": "too_large",
    "literal_error": "invalid_choice",
    "enum": "invalid_choice",
    "union_tag_invalid": "invalid_choice",
    "union_tag_not_found": "required",
    "value_error": "invalid",
}


def fields_of(error: ValidationError, field_codes: dict[str, str] | None = None) -> dict[str, str]:
    """``details.fields`` of a validation error: each field path (dotted) → its first problem's code."""
    fields: dict[str, str] = {}
    for problem in error.errors(include_input=False, include_context=False):
        path = ".".join(str(part) for part in problem["loc"]) or "body"
        if path in fields:
            continue
        kind = problem["type"]
        # pydantic's own errors link to its docs; a custom error (PydanticCustomError) is the code itself.
        code = CODES.get(kind, kind) if "url" in problem else kind
        if field_codes and kind not in ("missing", "extra_forbidden") and path in field_codes:
            code = field_codes[path]
        fields[path] = code
    return fields
