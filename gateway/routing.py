"""The route table: every HTTP operation declared once, beside its handler.

A route module makes one ``Routes`` and declares each operation on its handler::

    routes = Routes("Seats")

    @routes.put("/api/v1/registrations/{registration_id}/seat", "registrations.seat.put",
                caller=CANDIDATE, session=BATCHED, body=SeatChoice, answers={200: SeatHold},
                errors={404: "registration_not_found, site_not_found", 409: "site_full, seat_locked"})
    async def put_seat(request): ...

``register`` builds from the tables everything that used to be written beside each route:
the aiohttp routes, the shedding class of each, which routes' rate limits their handler decides
(the edge decides the others before the handler), the edge wrapper of each (``gateway.edge``),
the candidate wrapper and the operators' token and role check;
``gateway.openapi`` builds the OpenAPI document from the same tables, so the contract cannot
drift from the code.

The candidate wrapper is what makes candidate-keyed rate limits hold on every candidate route
without any handler asking for them: it starts the session lookup before the handler runs
(401 at once without a token), and ``gateway.auth.finish_candidate`` — the only way to learn the
candidate — decides the route's candidate-keyed rules as soon as the candidate is known. A route
that must send the session lookup in one Redis batch with its own commands (the seat hold, the
queue poll) declares ``session=BATCHED`` and finishes the lookup itself; for every other route the
wrapper finishes it before the handler. A batched handler that answers without having finished
it is a bug the wrapper refuses to hide (500).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from gateway import auth
from gateway.adminauth import DEFAULT_ROLES, ROLES, operator_route
from gateway.edge import CATCH_ALL_PATTERN, UNMATCHED, Edge, RouteFacts, unmatched

__all__ = [
    "ANONYMOUS", "BATCHED", "CANDIDATE", "OPERATOR", "PROVIDER", "RESOLVED", "SCRAPER",
    "Answer", "Operation", "Param", "Routes", "Table", "register",
]  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Caller = Literal["anonymous", "candidate", "operator", "provider", "scraper"]
ANONYMOUS: Caller = "anonymous"
CANDIDATE: Caller = "candidate"  # a session token (Authorization: Bearer)
OPERATOR: Caller = "operator"  # an admin token
PROVIDER: Caller = "provider"  # a payment provider's signed notification
SCRAPER: Caller = "scraper"  # the metrics token (or an admin token)
Session = Literal["resolved", "batched"]
RESOLVED: Session = "resolved"
BATCHED: Session = "batched"
Subject = Literal["ip", "global", "candidate", "account", "id_number"]
# Subjects only the handler knows, from the body it parsed: routes keyed on them decide their rules themselves.
BODY_SUBJECTS = frozenset({"account", "id_number"})
SHEDDING_CLASSES = ("candidate_read", "candidate_write", "login", "payment_notify", "admin")
_PATH_PARAM = re.compile(r"\{([a-z_]+)(?::[^}]*)?\}")
# A parameter with its regex (which may hold braces itself: ``{exam_id:[0-9]{1,10}}``).
_REGEX_PARAM = re.compile(r"\{([a-z_]+):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")
OPERATION = web.AppKey("operations", dict)  # route name → Operation
EDGE = web.AppKey("edge", Edge)


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented answer: its model (None: no body), media type and description."""

    model: Any = None  # a pydantic model, a type a TypeAdapter takes, or a JSON Schema dict
    description: str = ""
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()  # names of component headers it carries


@dataclass(frozen=True, slots=True)
class Param:
    """A documented query, path or header parameter."""

    name: str
    where: Literal["query", "path", "header"]
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP operation, declared once: everything the edge and its document know about it."""

    name: str
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    caller: Caller = ANONYMOUS
    session: Session = RESOLVED
    body: type[BaseModel] | None = None
    body_media: tuple[str, ...] = ("application/json",)
    body_required: bool = True  # False: the body may be left out (the handler has a default)
    raw_body: Mapping[str, Any] | None = None  # documented body read raw (a provider's own format)
    params: tuple[Param, ...] = ()
    answers: Mapping[int, Answer] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=dict)  # status → the codes it answers, and why
    shedding: str | None = ""  # "" → by method; None → never shed
    captcha: bool = False
    limits: tuple[Subject, ...] = ("ip", "global")
    handler_decides: bool = False  # the handler decides every rate limit itself, in its own Redis batch
    documented: bool = True
    allow_head: bool = True
    roles: tuple[str, ...] = ()  # operator routes: the roles admitted (default DEFAULT_ROLES; 403 for others)
    max_body_bytes: int | None = None  # the route's own body limit (413 above, before reading); None: the setting

    @property
    def shedding_class(self) -> str | None:
        """The overload-shedding class: declared, or candidate read/write by method."""
        if self.shedding != "":
            return self.shedding
        return "candidate_read" if self.method in ("GET", "HEAD") else "candidate_write"

    @property
    def decides_limits_in_handler(self) -> bool:
        """True when the edge leaves every rule of the route to its handler."""
        return self.handler_decides or bool(BODY_SUBJECTS.intersection(self.limits))

    @property
    def template(self) -> str:
        """The path without its parameters' regexes, as aiohttp names the resource and the document shows it."""
        return _REGEX_PARAM.sub(r"{\1}", self.path)

    @property
    def path_params(self) -> tuple[str, ...]:
        """The names of the path's parameters, in order."""
        return tuple(_PATH_PARAM.findall(self.path))


class Routes:
    """The operations of one route module, in declaration order."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, name: str, handler: Handler, **declared: Any) -> Operation:
        """Declare an operation for ``handler``; its summary defaults to the docstring's first line."""
        summary = declared.pop("summary", None) or (handler.__doc__ or name).strip().splitlines()[0]
        declared.setdefault("tag", self.tag)
        if declared.get("caller") == CANDIDATE and "candidate" not in declared.get("limits", ("candidate",)):
            raise ValueError(f"{name}: a candidate route always offers the candidate subject")
        if declared.get("caller") == CANDIDATE:
            declared.setdefault("limits", ("ip", "global", "candidate"))
        if declared.get("caller") == OPERATOR:
            declared.setdefault("shedding", "admin")
            declared["roles"] = tuple(declared.get("roles", DEFAULT_ROLES))
            if not declared["roles"] or not set(declared["roles"]) <= set(ROLES):
                raise ValueError(f"{name}: roles must be some of {ROLES}, got {declared['roles']}")
        elif declared.get("roles"):
            raise ValueError(f"{name}: only operator routes declare roles")
        operation = Operation(name=name, method=method, path=path, handler=handler, summary=summary, **declared)
        if operation.shedding not in ("", None, *SHEDDING_CLASSES):
            raise ValueError(f"{name}: unknown shedding class {operation.shedding!r}")
        self.operations.append(operation)
        return operation

    def _decorator(self, method: str, path: str, name: str, declared: dict[str, Any]) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self.add(method, path, name, handler, **declared)
            return handler
        return declare

    def get(self, path: str, name: str, **declared: Any) -> Callable[[Handler], Handler]:
        """Declare a GET operation."""
        return self._decorator("GET", path, name, declared)

    def post(self, path: str, name: str, **declared: Any) -> Callable[[Handler], Handler]:
        """Declare a POST operation."""
        return self._decorator("POST", path, name, declared)

    def put(self, path: str, name: str, **declared: Any) -> Callable[[Handler], Handler]:
        """Declare a PUT operation."""
        return self._decorator("PUT", path, name, declared)

    def patch(self, path: str, name: str, **declared: Any) -> Callable[[Handler], Handler]:
        """Declare a PATCH operation."""
        return self._decorator("PATCH", path, name, declared)

    def delete(self, path: str, name: str, **declared: Any) -> Callable[[Handler], Handler]:
        """Declare a DELETE operation."""
        return self._decorator("DELETE", path, name, declared)


Table = Iterable[Routes]


def _candidate_route(handler: Handler, batched: bool) -> Handler:
    """``handler`` behind the session lookup; candidate-keyed rules are decided when the candidate is known."""
    if batched:
        async def batched_route(request: web.Request) -> web.StreamResponse:
            pending = request[auth.PENDING_CANDIDATE] = auth.submit_candidate(request)
            try:
                response = await handler(request)
            except BaseException:
                if auth.CANDIDATE_ID not in request:
                    auth.abandon_candidate(pending)
                raise
            if auth.CANDIDATE_ID not in request:
                auth.abandon_candidate(pending)
                raise RuntimeError(f"{request.match_info.route.name}: answered without finishing the session lookup")
            return response
        return batched_route

    async def resolved_route(request: web.Request) -> web.StreamResponse:
        await auth.finish_candidate(request, auth.submit_candidate(request))
        return await handler(request)
    return resolved_route


def register(app: web.Application, tables: Iterable[Routes], edge: Edge | None = None) -> dict[str, Operation]:
    """Add every operation of ``tables`` to ``app``'s router, each behind ``edge`` (the first call's when not
    given), and once the catch-all route for requests no operation matches; all its operations by route name."""
    if edge is None:
        edge = app[EDGE]
    operations: dict[str, Operation] = app.get(OPERATION, {})
    for routes in tables:
        for operation in routes.operations:
            if operation.name in operations:
                raise ValueError(f"route name {operation.name!r} declared twice")
            operations[operation.name] = operation
            handler = operation.handler
            if operation.caller == CANDIDATE:
                handler = _candidate_route(handler, operation.session == BATCHED)
            elif operation.caller == OPERATOR:
                # 401 before anything else is looked at, then 403 for a role the route does not admit.
                handler = operator_route(app, handler, operation.roles or DEFAULT_ROLES)
            facts = RouteFacts(operation.name, operation.template, operation.shedding_class,
                               operation.decides_limits_in_handler, operation.max_body_bytes)
            handler = edge.wrap(app, handler, facts)
            if operation.method == "GET":
                app.router.add_get(operation.path, handler, name=operation.name, allow_head=operation.allow_head)
            else:
                app.router.add_route(operation.method, operation.path, handler, name=operation.name)
    if EDGE not in app:
        # Tried after every operation's resource (aiohttp looks longer path prefixes up first, "/" last),
        # however many are added later; its handler answers 404 or 405.
        app.router.add_route("*", CATCH_ALL_PATTERN,
                             edge.wrap(app, unmatched, RouteFacts(UNMATCHED, UNMATCHED, None, False)))
        app[EDGE] = edge
    app[OPERATION] = operations
    return operations


def operations_of(app: web.Application) -> dict[str, Operation]:
    """The registered operations by route name."""
    return app[OPERATION]


def handler_decides(app: web.Application) -> frozenset[str]:
    """Names of the routes whose handler decides every rate limit itself."""
    return frozenset(name for name, op in app[OPERATION].items() if op.decides_limits_in_handler)

