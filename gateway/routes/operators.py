"""Operators as named accounts: who is signed in (``/me``), and for admins the accounts, their tokens and audit.

Management routes admit admins only; a provincial admin sees and manages only operators whose
provinces lie within its own (``core.operators``). The names of ``EXAMGATE_ADMIN_TOKENS`` are
listed as national admins from the settings and cannot be changed here (409). After a change this
process forgets the tokens it trusted; the other processes do within ``EXAMGATE_OPERATOR_TOKEN_CACHE_S``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from aiohttp import web
from pydantic import ConfigDict, Field

from core import operators
from core.operators import (
    DISPLAY_NAME_MAX_CHARS,
    LABEL_MAX_CHARS,
    NAME_PATTERN,
    PROVINCES,
    TOKEN_LIFETIME_MAX_S,
    TOKEN_LIFETIME_MIN_S,
    Operator,
    OperatorExists,
    TokenNotFound,
)
from gateway import keys, routing
from gateway.adminauth import OPERATOR_TOKENS, ROLE_LABELS, operator_of
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import Conflict, ValidationFailed
from gateway.models import Body, Int, Reply
from gateway.pathids import path_id
from gateway.routing import OPERATOR, Answer, Param, Routes

routes = Routes("Operators")

Role = Literal["reviewer", "operator", "admin"]
Province = Literal["11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
                   "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
                   "81", "82"]  # fmt: skip
assert frozenset(get_args(Province)) == PROVINCES and get_args(Role) == operators.ROLES
EVERY_ROLE = operators.ROLES
ADMINS = ("admin",)
PATCH_TYPES = ("application/merge-patch+json", "application/json")
AUDIT_LIMIT_MAX = 500
NAME_PARAM = Param("name", "path", {"type": "string", "pattern": NAME_PATTERN}, "the operator's name")
PROVINCES_DOC = "province codes (exam_sites.province) the operator may see; null or absent: national"


def _absent_only(schema: dict[str, Any]) -> None:
    """Leave out the null defaults: such a field may be absent, never null (pydantic does not check defaults)."""
    for field_schema in schema.get("properties", {}).values():
        if "default" in field_schema and field_schema["default"] is None:
            del field_schema["default"]


Scope = Annotated[list[Province], Field(min_length=1, max_length=len(PROVINCES))]


class NewOperator(Body):
    """A new operator: its name (for sign-in and the audit), role and scope."""

    name: str = Field(pattern=NAME_PATTERN, description="2-32 of a-z 0-9 . _ -, starting with a letter")
    role: Role
    provinces: Scope | None = Field(default=None, description=PROVINCES_DOC)
    display_name: str = Field(default="", max_length=DISPLAY_NAME_MAX_CHARS)


class OperatorChange(Body):
    """What to change of an operator (a merge patch: what is absent stays; ``provinces: null`` makes it national)."""

    model_config = ConfigDict(json_schema_extra=_absent_only)

    role: Role = None  # type: ignore[assignment]  # absent: unchanged; null refused
    provinces: Scope | None = Field(default=None, description="province codes; null: national; absent: unchanged")
    display_name: str = Field(default=None, max_length=DISPLAY_NAME_MAX_CHARS)  # type: ignore[assignment]
    disabled: bool = Field(default=None, description="true disables the operator (its tokens stop working), "  # type: ignore[assignment]
                                             "false enables it again")


class NewToken(Body):
    """A token request: its label and lifetime (default EXAMGATE_OPERATOR_TOKEN_DAYS)."""

    model_config = ConfigDict(json_schema_extra=_absent_only)

    label: str = Field(default="", max_length=LABEL_MAX_CHARS, description="what the token is for (shown in lists)")
    expires_in_s: Int = Field(default=None, ge=TOKEN_LIFETIME_MIN_S, le=TOKEN_LIFETIME_MAX_S,  # type: ignore[assignment]
                              description="seconds until the token expires")


class TokenEntry(Reply):
    """One token of an operator (never the token itself)."""

    id: int
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool


class OperatorEntry(Reply):
    """An operator: stored (``source: database``) or a national admin of EXAMGATE_ADMIN_TOKENS (``environment``)."""

    name: str
    display_name: str
    role: Role
    provinces: list[Province] | None = Field(description="null: national")
    created_at: datetime | None
    disabled_at: datetime | None
    disabled: bool
    source: Literal["database", "environment"]
    tokens: list[TokenEntry] = Field(description="tokens not revoked, expired ones included (active false)")


class OperatorList(Reply):
    """The operators within the caller's scope, by name."""

    operators: list[OperatorEntry]


class IssuedToken(Reply):
    """A token just issued: shown this once, stored only as its SHA-256 digest."""

    operator: str
    token: str
    id: int
    label: str
    created_at: datetime
    expires_at: datetime


class Me(Reply):
    """The operator signed in with this token, and the operator routes its role may call."""

    name: str
    display_name: str
    role: Role
    role_label: str
    provinces: list[Province] | None = Field(description="null: national")
    source: Literal["database", "environment"]
    token: TokenEntry | None = Field(description="the token in use (null for EXAMGATE_ADMIN_TOKENS)")
    routes: list[str] = Field(description="names of the operator routes this role may call")


class AuditEntry(Reply):
    """One change to an operator or its tokens."""

    id: int
    actor: str
    action: Literal["create", "update", "token_issue", "token_revoke"]
    operator: str
    token_id: int | None
    changes: dict[str, Any]
    changed_at: datetime


class OperatorAudit(Reply):
    """Changes to operators, newest first."""

    changes: list[AuditEntry]


def _configured(request: web.Request) -> bool:
    return request.match_info["name"] in request.app[keys.SETTINGS].admin_tokens


def _environment_entry(name: str) -> dict[str, Any]:
    return {"name": name, "display_name": "", "role": "admin", "provinces": None, "created_at": None,
            "disabled_at": None, "disabled": False, "source": "environment", "tokens": []}


def _refuse_configured(request: web.Request) -> None:
    if _configured(request):
        name = request.match_info["name"]
        raise Conflict("该账号由 EXAMGATE_ADMIN_TOKENS 配置，只能在配置中修改", code="operator_from_settings",
                       details={"name": name})


def _forget_tokens(request: web.Request) -> None:
    """This process trusts no cached token after a change; the others follow within their cache time."""
    tokens = request.app.get(OPERATOR_TOKENS)
    if tokens is not None:
        tokens.forget()


def _routes_for(request: web.Request, role: str) -> list[str]:
    return sorted(name for name, op in request.app[routing.OPERATION].items()
                  if op.caller == OPERATOR and role in (op.roles or ()))


@routes.get("/admin/api/v1/me", "admin.me", summary="The operator signed in: name, role, scope and usable routes",
            answers={200: Answer(Me, "the operator")}, caller=OPERATOR, roles=EVERY_ROLE)
async def me(request: web.Request) -> web.Response:
    """Who the bearer token belongs to: name, role, scope, the token's expiry and the routes the role may call."""
    operator = operator_of(request)
    display_name, token = "", None
    if operator.token_id is not None:
        async with request.app[keys.PG].acquire() as conn:
            # Read as national: the cached scope may be a few seconds older than the stored one.
            record = await operators.get(conn, Operator(operator.name, operator.role), operator.name)
            info = await operators.token_info(conn, operator.token_id)
        display_name = record.display_name
        token = info.as_dict() if info is not None else None
    return json_response({
        "name": operator.name, "display_name": display_name, "role": operator.role,
        "role_label": ROLE_LABELS[operator.role],
        "provinces": sorted(operator.provinces) if operator.provinces is not None else None,
        "source": "environment" if operator.token_id is None else "database", "token": token,
        "routes": _routes_for(request, operator.role)}, headers=NO_STORE)


@routes.get("/admin/api/v1/operators", "admin.operators.list",
            summary="Operators within the caller's scope, with their tokens (never the tokens themselves)",
            answers={200: Answer(OperatorList, "operators, by name")}, caller=OPERATOR, roles=ADMINS)
async def list_operators(request: web.Request) -> web.Response:
    """Every operator the calling admin manages; a national admin also sees the ones of EXAMGATE_ADMIN_TOKENS."""
    actor = operator_of(request)
    async with request.app[keys.PG].acquire() as conn:
        stored = await operators.list_operators(conn, actor)
    found = [record.as_dict() for record in stored]
    if actor.national:
        found += [_environment_entry(name) for name in request.app[keys.SETTINGS].admin_tokens]
        found.sort(key=lambda entry: entry["name"])
    return json_response({"operators": found}, headers=NO_STORE)


@routes.post("/admin/api/v1/operators", "admin.operators.create",
             summary="Add an operator with a role and a scope (national, or provinces); no token yet",
             body=NewOperator, answers={201: Answer(OperatorEntry, "the operator")},
             errors={403: "scope_exceeded: provinces beyond the calling admin's own (national included)",
                     409: "operator_exists: the name is taken (stored, or in EXAMGATE_ADMIN_TOKENS)",
                     422: "validation_failed: name (invalid_format), role or provinces (invalid_choice), "
                          "display_name (too_long), an unknown field"},
             caller=OPERATOR, roles=ADMINS)
async def create_operator(request: web.Request) -> web.Response:
    """Store a new operator (audited); issue it a token with ``POST …/operators/{name}/tokens``."""
    asked = await read_body(request, NewOperator)
    if asked.name in request.app[keys.SETTINGS].admin_tokens:
        raise OperatorExists(asked.name)
    async with request.app[keys.PG].acquire() as conn:
        record = await operators.create(conn, actor=operator_of(request), name=asked.name, role=asked.role,
                                        provinces=asked.provinces, display_name=asked.display_name)
    return json_response(record.as_dict(), status=201)


@routes.patch("/admin/api/v1/operators/{name}", "admin.operators.update",
              summary="Change an operator's role, scope or display name, or disable / enable it (a merge patch)",
              params=(NAME_PARAM,), body=OperatorChange, body_media=PATCH_TYPES,
              answers={200: Answer(OperatorEntry, "the operator as changed")},
              errors={403: "scope_exceeded: provinces beyond the calling admin's own (national included)",
                      404: "operator_not_found (also for one beyond a provincial admin's scope)",
                      409: "operator_from_settings: a national admin of EXAMGATE_ADMIN_TOKENS",
                      422: "validation_failed: role or provinces (invalid_choice), display_name (too_long), "
                           "null for a field other than provinces, an unknown field"},
              caller=OPERATOR, roles=ADMINS)
async def update_operator(request: web.Request) -> web.Response:
    """Apply the change (audited); a disabled operator's tokens stop working, so does a narrowed scope."""
    _refuse_configured(request)
    asked = await read_body(request, OperatorChange, PATCH_TYPES)
    provinces = asked.provinces if "provinces" in asked.model_fields_set else ...
    async with request.app[keys.PG].acquire() as conn:
        record = await operators.update(conn, actor=operator_of(request), name=request.match_info["name"],
                                        role=asked.role, provinces=provinces, display_name=asked.display_name,
                                        disabled=asked.disabled)
    _forget_tokens(request)
    return json_response(record.as_dict())


@routes.post("/admin/api/v1/operators/{name}/tokens", "admin.operators.tokens.create",
             summary="Issue a token to an operator: answered this once, stored only as its SHA-256 digest",
             params=(NAME_PARAM,), body=NewToken, body_required=False,
             answers={201: Answer(IssuedToken, "the token and its expiry (Cache-Control: no-store)")},
             errors={404: "operator_not_found (also for one beyond a provincial admin's scope)",
                     409: "operator_disabled: enable the operator first; "
                          "operator_from_settings: a national admin of EXAMGATE_ADMIN_TOKENS",
                     422: "validation_failed: expires_in_s out of range, label too_long, an unknown field"},
             caller=OPERATOR, roles=ADMINS)
async def issue_token(request: web.Request) -> web.Response:
    """A new token for the operator (audited, never logged): ``{"label", "expires_in_s"}``, both optional."""
    _refuse_configured(request)
    asked = await read_body(request, NewToken) if request.body_exists else NewToken()
    lifetime_s = asked.expires_in_s or request.app[keys.SETTINGS].operator_token_days * 86400
    async with request.app[keys.PG].acquire() as conn:
        issued = await operators.issue_token(conn, actor=operator_of(request), name=request.match_info["name"],
                                             lifetime_s=lifetime_s, label=asked.label)
    info = issued.info.as_dict()
    return json_response({"operator": issued.operator, "token": issued.token, "id": info["id"],
                          "label": info["label"], "created_at": info["created_at"],
                          "expires_at": info["expires_at"]}, status=201, headers=NO_STORE)


@routes.delete("/admin/api/v1/operators/{name}/tokens/{token_id}", "admin.operators.tokens.revoke",
               summary="Revoke one of an operator's tokens (revoking it again changes nothing)",
               params=(NAME_PARAM,), answers={200: Answer(TokenEntry, "the token, revoked")},
               errors={404: "token_not_found (also for an operator beyond a provincial admin's scope)"},
               caller=OPERATOR, roles=ADMINS)
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke the token (audited); it stops working here at once, in the other processes within the cache time."""
    name, raw = request.match_info["name"], request.match_info["token_id"]
    token_id = path_id(raw)
    if token_id is None:
        raise TokenNotFound(name, 0)
    async with request.app[keys.PG].acquire() as conn:
        info = await operators.revoke_token(conn, actor=operator_of(request), name=name, token_id=token_id)
    _forget_tokens(request)
    return json_response(info.as_dict())


@routes.get("/admin/api/v1/operator-audit", "admin.operators.audit",
            summary="Changes to operators and their tokens, newest first (who did what to whom, when)",
            params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT_MAX,
                                             "default": 50}),
                    Param("name", "query", {"type": "string", "pattern": NAME_PATTERN}, "one operator's changes")),
            answers={200: Answer(OperatorAudit, "changes")}, errors={422: "validation_failed: limit out of range"},
            caller=OPERATOR, roles=ADMINS)
async def operator_audit(request: web.Request) -> web.Response:
    """The latest changes to operators the caller manages (``?name=`` for one), newest first."""
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= AUDIT_LIMIT_MAX):
        raise ValidationFailed({"limit": f"must be an integer from 1 to {AUDIT_LIMIT_MAX}"}, "查询参数无效")
    name = request.query.get("name")
    changes = await operators.audit(request.app[keys.PG], operator_of(request), int(raw), name)
    return json_response({"changes": changes})

