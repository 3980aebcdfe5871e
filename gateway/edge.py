"""The edge: what every request pays before and after its handler, in one wrapper per route.

``gateway.routing`` wraps each route's handler once, at start-up, with ``Edge.wrap``; no aiohttp
middleware runs. In order, a request gets: its request id; the body limit (Content-Length); the
route's maintenance message; shedding (unknown config, the body waited for, in-flight limits of its
class, loop lag, per-address limit; see ``gateway.shedding``); the rate-limit rules the request
itself keys (ip, global; candidate and body-keyed rules are decided later, see ``gateway.throttle``);
``EXAMGATE_ADDED_LATENCY_MS`` of waiting (0 but when the load tests rehearse a slowed gateway);
the handler; errors mapped to the API's shape; and on the way out its headers (request id, Server,
RateLimit) and its count and latency in this process's ``metrics.RequestTally``.

Why one wrapper and not middlewares: aiohttp runs each middleware as a ``functools.partial`` and a
coroutine frame, adds one more of its own when any is present, and a middleware learns the route
only by looking it up per request. A wrapper made per route knows its name, metric label, shedding
class and where its rules are decided already, and caches what the live config says about the route
until the config changes. Requests no route matches go to one catch-all route with the same edge
(404, or 405 naming the allowed methods, as aiohttp would answer them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg
import redis.exceptions
from aiohttp import hdrs, web

from gateway import errors, keys, metrics
from gateway.bodies import await_body
from gateway.config import Settings
from gateway.connections import REQUEST_ID, SERVER_NAME, request_ids
from gateway.liveconfig import LiveConfig
from gateway.shedding import CONFIG_GUARDED, PAGES_PREFIX, BodyTooSlow, Shedder, body_too_slow, config_unavailable
from gateway.throttle import VERDICT_KEY, add_headers, enforce
from ratelimit.rules import Rule

log = logging.getLogger("examgate.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_MAX_REQUEST_ID = 128
UNMATCHED = "unmatched"
CATCH_ALL = "/{tail}"  # the catch-all resource's canonical path
CATCH_ALL_PATTERN = "/{tail:.*}"

# Failures of a store are answered 503 (retry later), never 500 with a trace.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    ConnectionError,
    TimeoutError,
)


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable()


@dataclass(frozen=True)
class RouteFacts:
    """What the edge needs to know of a route, from its declaration."""

    name: str  # the route name live config refers to; "unmatched" for the catch-all
    label: str  # the metric label: the path template
    shedding_class: str | None  # None: never shed (health, metrics)
    handler_decides: bool  # the handler decides every rate-limit rule (body-keyed rules, lookups)
    max_body: int | None = None  # the route's own body limit (an upload's); None: settings.max_body_bytes


class _Policy:
    """What one live config says about one route, kept until the config changes."""

    __slots__ = ("live", "maintenance", "rules", "limits")

    def __init__(self, live: LiveConfig | None, name: str) -> None:
        self.live = live
        self.maintenance = live.maintenance_for(name) if live is not None else None
        self.rules: tuple[Rule, ...] = live.rules_for(name) if live is not None else ()
        self.limits: Mapping[str, int] = live.shedding if live is not None else {}


class Edge:
    """One application's edge: its shedder and request tally, shared by every route's wrapper."""

    def __init__(self, settings: Settings, shedder: Shedder, tally: metrics.RequestTally) -> None:
        self.max_body_bytes = settings.max_body_bytes
        self.added_latency_s = settings.added_latency_ms / 1000  # EXAMGATE_ADDED_LATENCY_MS: a slowed gateway
        self.shedder = shedder
        self.tally = tally
        self.next_id = request_ids()

    def wrap(self, app: web.Application, handler: Handler, route: RouteFacts) -> Handler:
        """``handler`` behind the edge, specialised for ``route`` of ``app``."""
        name, declared_class, decides = route.name, route.shedding_class, route.handler_decides
        catch_all = name == UNMATCHED
        guarded = not catch_all and not name.startswith(PAGES_PREFIX)
        shedder, tally, next_id = self.shedder, self.tally, self.next_id
        max_body = route.max_body or self.max_body_bytes
        added_latency_s = self.added_latency_s
        own_limit = route.max_body is not None
        counts = tally.route(name, route.label)
        clock = metrics.monotonic
        policy = _Policy(None, name)

        async def edge(request: web.Request) -> web.StreamResponse:
            nonlocal policy
            started = clock()
            incoming = request.headers.get(REQUEST_ID)
            request_id = incoming if incoming is not None and _valid_request_id(incoming) else next_id()
            request[REQUEST_ID_KEY] = request_id
            tally.in_flight += 1
            klass = address = None
            try:
                length = request.content_length
                if length is not None and length > max_body:
                    raise errors.BodyTooLarge(details={"max_bytes": max_body})
                if own_limit:
                    request._client_max_size = max_body  # what ``read()`` takes (the app's limit is the setting)
                watcher = app[keys.LIVE]
                live = watcher.current
                if live is not policy.live:
                    policy = _Policy(live, name)
                if policy.maintenance is not None:
                    raise errors.ApiError(policy.maintenance, code="maintenance", status=503, retry_after_s=60)
                wanted = declared_class
                if catch_all:
                    wanted = "candidate_read" if request.method in ("GET", "HEAD") else "candidate_write"
                if wanted is not None:
                    if guarded and not watcher.known and wanted in CONFIG_GUARDED:
                        raise config_unavailable(wanted)
                    if not request.content.is_eof() and not await await_body(request, shedder.body_timeout_s):
                        raise BodyTooSlow(details={"timeout_s": shedder.body_timeout_s})
                    address = shedder.admit(request, wanted, policy.limits.get(wanted), live.max_loop_lag_ms,
                                            app[keys.LOOP_LAG].lag_s)
                    klass = wanted
                rules = policy.rules
                if rules and not decides:
                    await enforce(request, rules=rules)
                if added_latency_s:  # holds its in-flight place while it waits, as slow work would
                    await asyncio.sleep(added_latency_s)
                response = await handler(request)
                if rules and (verdict := request.get(VERDICT_KEY)) is not None:
                    add_headers(response, verdict)
            except Exception as exc:  # every error is answered in the API's shape
                response = _error_response(request, exc)
            finally:
                tally.in_flight -= 1
                if klass is not None:
                    shedder.in_flight[klass] -= 1
                    if address is not None:
                        shedder.leave(address)
            headers = response.headers
            headers[REQUEST_ID] = request_id
            headers[hdrs.SERVER] = SERVER_NAME
            counts.observe(request.method, response.status, clock() - started)
            return response

        return edge


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all route's handler: 405 naming the methods the path allows, else 404 (aiohttp's own answers)."""
    allowed: set[str] = set()
    path = request.rel_url.path
    for resource in request.app.router.resources():
        canonical = resource.canonical
        # Only a resource whose literal start the path shares can match it: a flood of 404s costs a
        # string comparison per route, not a regex each.
        if canonical == CATCH_ALL or not path.startswith(canonical.partition("{")[0]):
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def _error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, BodyTooSlow):
        return body_too_slow(request, exc)
    if isinstance(exc, errors.ApiError):
        return errors.to_response(exc)
    if isinstance(exc, web.HTTPException):
        return _http_exception(exc)
    if isinstance(exc, STORE_ERRORS):
        if _client_went_away(request, exc):
            log.debug("%s %s: client went away (%r)", request.method, request.path, exc)
            return errors.to_response(errors.ApiError("客户端已断开连接", code="client_closed_request", status=499))
        log.warning("store unavailable on %s %s: %r", request.method, request.path, exc)
        return errors.to_response(
            errors.Overloaded("服务暂时不可用，请稍后重试", code="service_unavailable", retry_after_s=2))
    known = errors.translate(exc)
    if known is not None:
        return errors.to_response(known)
    log.error("unhandled error on %s %s (request %s)", request.method, request.path, request.get(REQUEST_ID_KEY),
              exc_info=exc)
    return errors.to_response(errors.ApiError("服务内部错误，请稍后重试", code="internal_error", status=500))


def _client_went_away(request: web.Request, exc: BaseException) -> bool:
    """True when ``exc`` is the client's connection closing (reading its body, or with it closed already).

    A store's driver raises ConnectionError too; those are told apart by where the error comes from.
    """
    return exc is request.content.exception() or (isinstance(exc, ConnectionResetError) and request.transport is None)


def _http_exception(exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own exceptions (routing, redirects, body size) in the API error shape."""
    if exc.status < 400:
        return exc  # redirects pass through
    code, message = errors.HTTP_EXCEPTION_CODES.get(exc.status, ("http_error", exc.reason))
    details: dict[str, object] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        details["allowed"] = sorted(exc.allowed_methods)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    return errors.to_response(errors.ApiError(message, code=code, status=exc.status, details=details,
                                              headers=headers))
