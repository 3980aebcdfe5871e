"""The OpenAPI 3.1 document, generated from the route table and its models.

Nothing here describes an operation: each is declared once in its route module
(``gateway.routing``), with its body model, answer models, error codes, caller and guards. This
module walks the registered operations and adds, once for every operation, the answers any
route can give: 429 (a throttle: live config can put a rule on any route; too many requests in
flight from one address) and 503 (overload shedding, maintenance switches, a store or the live
config away), 413 (Content-Length over the limit, checked before any route runs), 400 (not valid
HTTP), 401 where a caller must prove who it is, 403 where an operator's role may not call it (the
roles an operator operation admits are its ``x-roles``), and for a request body 408 (sent too slowly) and,
when it is JSON, 415 and 422. Every answer carries ``X-Request-Id``. Tests run schemathesis over
the whole document against the running gateway (tests/hardening/test_openapi_conformance.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

from gateway.adminauth import DEFAULT_ROLES
from gateway.models import MAX_ID
from gateway.routing import CANDIDATE, OPERATOR, SCRAPER, Answer, Operation, Param

__all__ = ["document", "gateway_document"]

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
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
}
ERROR = {"$ref": _REF.format(model="Error")}

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
_HEADER = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}
_RETRY = {"Retry-After": _HEADER["RetryAfter"]}

SECURITY_SCHEMES = {
    "session": {"type": "http", "scheme": "bearer",
                "description": "a candidate session token from POST /api/v1/sessions"},
    "admin": {"type": "http", "scheme": "bearer",
              "description": "an operator's token: one issued by POST /admin/api/v1/operators/{name}/tokens, or one "
                             "of EXAMGATE_ADMIN_TOKENS (national admins); each operation's x-roles names the roles "
                             "it admits"},
    "metrics": {"type": "http", "scheme": "bearer",
                "description": "the metrics scraper's token (EXAMGATE_METRICS_TOKEN)"},
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    CANDIDATE: [{"session": []}],
    OPERATOR: [{"admin": []}],
    SCRAPER: [{"metrics": []}, {"admin": []}],
}
LOADTEST_HEADER = {"name": "X-Loadtest-Token", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "an operator-issued load-test token; lets captcha pass while valid"}
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def error(description: str) -> dict[str, Any]:
    """An answer with the API's error body."""
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


SHARED: dict[str, dict[str, Any]] = {
    "400": error("malformed_request: not valid HTTP (details.reason)"),
    "401": {**error("unauthorized: no bearer token, or not a valid one"),
            "headers": {"WWW-Authenticate": _HEADER["WWWAuthenticate"]}},
    "403": error("forbidden: the operator's role is not one of the operation's x-roles (details.role, "
                 "details.allowed_roles)"),
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
    "422": error("validation_failed: details.fields maps each field (dotted path) to its problem's code"),
}
CAPTCHA_ERRORS = ("captcha_invalid; captcha_required (details.captcha: the kind to solve) when a throttle "
                  "escalates to a captcha")


class _Schemas:
    """Component schemas collected from the models the operations name."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def of(self, model: Any, mode: str) -> dict[str, Any]:
        """The schema (a $ref for a named model) of ``model``; its definitions go to the components."""
        if isinstance(model, Mapping):
            return dict(model)
        schema = TypeAdapter(model).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        if isinstance(model, type) and issubclass(model, BaseModel):
            self._add(model.__name__, schema)
            return {"$ref": _REF.format(model=model.__name__)}
        return schema

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        """A component by its model's name: two different models of one name would make one route's
        schema the other's, so that is refused when the document is built."""
        known = self.components.get(name)
        if known is not None and known != schema:
            raise ValueError(f"two different models are named {name!r}: rename one (OpenAPI components are by name)")
        self.components[name] = schema


def _param(param: Param) -> dict[str, Any]:
    found: dict[str, Any] = {"name": param.name, "in": param.where, "schema": dict(param.schema)}
    if param.where == "path" or param.required:
        found["required"] = True
    if param.description:
        found["description"] = param.description
    return found


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    declared = {(param.where, param.name): _param(param) for param in operation.params}
    parameters = [declared.pop(("path", name)) if ("path", name) in declared else {
        "name": name, "in": "path", "required": True,
        "schema": dict(ID_SCHEMA) if name.endswith("_id") else {"type": "string"}}
        for name in operation.path_params]
    parameters += declared.values()
    if operation.captcha:
        parameters.append(LOADTEST_HEADER)
    return parameters


def _answer(answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    found: dict[str, Any] = {"description": answer.description or "answered"}
    if answer.model is not None:
        found["content"] = {answer.media_type: {"schema": schemas.of(answer.model, "serialization")}}
    if answer.headers:
        found["headers"] = {name: _HEADER[name] for name in answer.headers}
    return found


def _shared(operation: Operation, has_body: bool) -> dict[str, dict[str, Any]]:
    shared = {status: SHARED[status] for status in ("400", "413", "429", "503")}
    if operation.caller in SECURITY:
        shared["401"] = SHARED["401"]
    if operation.caller == OPERATOR:
        shared["403"] = SHARED["403"]
    if has_body:
        shared["408"] = SHARED["408"]
        if operation.body is not None:
            shared.update(JSON_BODY)
    return shared


def _operation(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    found: dict[str, Any] = {"operationId": operation.name, "summary": operation.summary, "tags": [operation.tag]}
    if operation.caller in SECURITY:
        found["security"] = SECURITY[operation.caller]
    if operation.caller == OPERATOR:
        roles = list(operation.roles or DEFAULT_ROLES)
        found["x-roles"] = roles
        found["description"] = f"Operators of the roles {', '.join(roles)}."
    parameters = _parameters(operation)
    if parameters:
        found["parameters"] = parameters
    if operation.body is not None:
        schema = schemas.of(operation.body, "validation")
        content = {media: {"schema": schema} for media in operation.body_media}
        found["requestBody"] = {"required": operation.body_required, "content": content}
    elif operation.raw_body is not None:
        found["requestBody"] = {"required": operation.body_required,
                                "content": copy.deepcopy(dict(operation.raw_body))}
    responses: dict[str, Any] = {str(status): _answer(answer, schemas) for status, answer in operation.answers.items()}
    errors = dict(operation.errors)
    if operation.captcha:
        errors[400] = f"{errors[400]}; {CAPTCHA_ERRORS}" if 400 in errors else CAPTCHA_ERRORS
    for code, codes in errors.items():
        own = responses.setdefault(str(code), error(codes))
        own.setdefault("content", {}).setdefault("application/json", {"schema": ERROR})  # beside its own answer
    for status, shared in _shared(operation, "requestBody" in found).items():
        own = responses.setdefault(status, copy.deepcopy(shared))
        own.setdefault("headers", {}).update(shared.get("headers", {}))
        for media, content in shared.get("content", {}).items():
            own.setdefault("content", {}).setdefault(media, content)
    for response in responses.values():
        response.setdefault("headers", {})["X-Request-Id"] = _HEADER["RequestId"]
    found["responses"] = dict(sorted(responses.items()))
    return found


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The whole OpenAPI document of ``operations`` (the documented ones)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        if operation.documented:
            paths.setdefault(operation.template, {})[operation.method.lower()] = _operation(operation, schemas)
    components = schemas.components
    return {
        "openapi": "3.1.0",
        "info": {"title": "examgate", "version": "1.0.0",
                 "description": "Peak-hour edge of the exam registration system (HTTP contract v1). Errors are "
                                '{"error": {"code", "message", "details"}}; 429 and 503 carry Retry-After.'},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items())), "headers": HEADERS,
                       "securitySchemes": SECURITY_SCHEMES},
    }



def gateway_document(*, bench: bool = False) -> dict[str, Any]:
    """The document of every route module's table (what ``/api/v1/openapi.json`` serves)."""
    from gateway.routes import modules

    return document(op for module in modules(bench=bench) for op in module.routes.operations)
