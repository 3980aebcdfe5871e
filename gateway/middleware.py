"""The edge middleware: request id → metrics → errors → body limit, in one layer.

One aiohttp middleware instead of four: every layer costs a coroutine frame on each
request, and this one runs on every request of every route.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from itertools import count

import asyncpg
import redis.exceptions
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from gateway import errors, keys, metrics

log = logging.getLogger("examgate.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_MAX_REQUEST_ID = 128
# Sent instead of aiohttp's "Python/3.x aiohttp/3.x": versions help only those looking for a known hole.
SERVER_NAME = "examgate"

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


def request_ids() -> Callable[[], str]:
    """A source of request ids: a random per-process prefix plus a counter, cheaper than uuid4 per request."""
    prefix = f"{secrets.token_hex(4)}{os.getpid():x}"
    counter = count(1)
    return lambda: f"{prefix}-{next(counter):x}"


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable()


def make_edge_middleware(max_body_bytes: int) -> Middleware:
    """Build the middleware; ``max_body_bytes`` is checked against Content-Length before reading."""
    next_id = request_ids()
    recorder = metrics.RequestMetrics()
    clock = metrics.monotonic

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        incoming = request.headers.get(REQUEST_ID)
        request_id = incoming if incoming and _valid_request_id(incoming) else next_id()
        request[REQUEST_ID_KEY] = request_id
        metrics.IN_FLIGHT.inc()
        try:
            response = await _handle(request, handler, max_body_bytes)
        finally:
            metrics.IN_FLIGHT.dec()
        headers = response.headers
        headers[REQUEST_ID] = request_id
        headers[hdrs.SERVER] = SERVER_NAME
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        recorder.observe(name, request.method, response.status, clock() - started)
        request.app[keys.STATS].record(request.match_info.route.name or "unmatched", response.status)
        return response

    return edge


async def _handle(request: web.Request, handler: Handler, max_body_bytes: int) -> web.StreamResponse:
    try:
        length = request.content_length
        if length is not None and length > max_body_bytes:
            raise errors.BodyTooLarge(details={"max_bytes": max_body_bytes})
        return await handler(request)
    except errors.ApiError as exc:
        return errors.to_response(exc)
    except web.HTTPException as exc:
        return _http_exception(exc)
    except STORE_ERRORS as exc:
        if _client_went_away(request, exc):
            log.debug("%s %s: client went away (%r)", request.method, request.path, exc)
            return errors.to_response(errors.ApiError("客户端已断开连接", code="client_closed_request", status=499))
        log.warning("store unavailable on %s %s: %r", request.method, request.path, exc)
        return errors.to_response(
            errors.Overloaded("服务暂时不可用，请稍后重试", code="service_unavailable", retry_after_s=2)
        )
    except Exception as exc:
        known = errors.translate(exc)
        if known is not None:
            return errors.to_response(known)
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID_KEY))
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
