"""The edge middleware: request id → metrics → errors → body limit, in one layer.

One aiohttp middleware instead of four: every layer costs a coroutine frame on each
request, and this one runs on every request of every route.
"""

from __future__ import annotations

import logging
import os
import secrets
from itertools import count
from typing import Awaitable, Callable

import asyncpg
import redis.exceptions
from aiohttp import web

from gateway import errors, keys, metrics

log = logging.getLogger("examgate.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_MAX_REQUEST_ID = 128

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


def _request_ids() -> Callable[[], str]:
    # A random per-process prefix plus a counter: unique, and cheaper than uuid4 per request.
    prefix = f"{secrets.token_hex(4)}{os.getpid():x}"
    counter = count(1)
    return lambda: f"{prefix}-{next(counter):x}"


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable()


def make_edge_middleware(max_body_bytes: int) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Build the middleware; ``max_body_bytes`` is checked against Content-Length before reading."""
    next_id = _request_ids()
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
        response.headers[REQUEST_ID] = request_id
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
