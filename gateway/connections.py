"""Guarding connections: a cap per client address, a deadline for the first request's headers,
and requests that are not HTTP answered in the API's error shape.

aiohttp has no header timeout: a client sending its headers a byte at a time keeps its
connection, and a file descriptor, as long as it likes. So each gateway process counts the
open connections of every peer address when they open and close (never per request) and
closes a new one at once beyond ``max_connections_per_address``. Trusted proxies are not
capped: their clients are told apart per request (``X-Forwarded-For``) by the edge's
shedding. The first request's headers must be in ``header_timeout_s`` after the connection
opens; a later request on a kept-alive connection has until aiohttp's keep-alive timer fires
(``keepalive_timeout_s`` after the previous answer), which closes a connection whose next
request is not complete by then, idle or half-sent alike. A body is the edge's
concern (``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from itertools import count
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.web_protocol import RequestHandler
from multidict import istr

from gateway import errors
from gateway.clientip import ClientIp
from gateway.config import Settings

__all__ = ["REQUEST_ID", "SERVER_NAME", "ConnectionGuard", "GuardedRequestHandler", "GuardedSite", "handler_options",
           "request_ids"]

log = logging.getLogger("examgate.connections")

# What was wrong with a request aiohttp could not parse, for ``details.reason``; first match wins.
MALFORMED_REASONS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "line_too_long"),
    (BadHttpMethod, "invalid_method"),
    (BadStatusLine, "invalid_request_line"),
    (InvalidHeader, "invalid_header"),
    (InvalidURLError, "invalid_url"),
    (PayloadEncodingError, "invalid_body"),
)
REFUSAL_LOG_EVERY_S = 10.0
REQUEST_ID = istr("X-Request-Id")
# Sent instead of aiohttp's "Python/3.x aiohttp/3.x": versions help only those looking for a known hole.
SERVER_NAME = "examgate"


def request_ids() -> Callable[[], str]:
    """A source of request ids: a random per-process prefix plus a counter, cheaper than uuid4 per request."""
    prefix = f"{secrets.token_hex(4)}{os.getpid():x}"
    counter = count(1)
    return lambda: f"{prefix}-{next(counter):x}"


def handler_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of every connection's handler (the runner's server gets the same)."""
    return {
        "access_log": logging.getLogger("examgate.access") if settings.access_log else None,
        "keepalive_timeout": settings.keepalive_timeout_s,
    }


class ConnectionGuard:
    """One process's open connections per peer address, and the limits every connection is held to."""

    __slots__ = ("header_timeout_s", "max_per_address", "next_request_id", "open_per_address", "_client_ip",
                 "_refused", "_refusals_logged_at")

    def __init__(self, settings: Settings) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.max_per_address = settings.max_connections_per_address
        self.next_request_id = request_ids()
        self.open_per_address: dict[str, int] = {}  # only addresses with a connection open
        self._client_ip = ClientIp(settings.trusted_proxies)
        self._refused = 0
        self._refusals_logged_at = 0.0

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (not counted) when it has its maximum open."""
        if not self.max_per_address or self._client_ip.is_trusted(address):
            return True
        count = self.open_per_address.get(address, 0)
        if count >= self.max_per_address:
            self._note_refusal(address)
            return False
        self.open_per_address[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """A connection ``admit`` let in has closed (one it did not count, a trusted proxy's, changes nothing)."""
        count = self.open_per_address.get(address, 0) - 1
        if count > 0:
            self.open_per_address[address] = count
        else:
            self.open_per_address.pop(address, None)

    def _note_refusal(self, address: str) -> None:
        # One line per interval, not one per connection: a flood must not flood the log too.
        self._refused += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning("refused %d connection(s) beyond %d open per address (latest from %s)",
                        self._refused, self.max_per_address, address)
            self._refused, self._refusals_logged_at = 0, now


def _peer_address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) and peer else None  # a Unix socket has no address


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, held to the guard's limits and answering bad HTTP in JSON."""

    __slots__ = ("_guard", "_address", "_refused", "_headers_due")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None  # the peer's, once the guard let the connection in
        self._refused = False
        self._headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse a connection one too many for its address; else serve it, its first headers due soon."""
        address = _peer_address(transport)
        guard = self._guard
        if address is not None:
            if not guard.admit(address):
                # Closed before a byte is read: there is no request yet to answer.
                self._refused = True
                transport.close()
                return
            self._address = address
        super().connection_made(transport)
        self._headers_due = self._loop.call_later(guard.header_timeout_s, self._headers_overdue)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the connection in the guard's count, then let aiohttp clean up."""
        if self._refused:
            return
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None
        super().connection_lost(exc)

    def _headers_overdue(self) -> None:
        self._headers_due = None
        # The parser counts a request once its headers are complete.
        if self._request_count == 0 and self.transport is not None:
            log.debug("closed a connection from %s: no request headers within %.1f s",
                      self.transport.get_extra_info("peername"), self._guard.header_timeout_s)
            self.force_close()

    def close_unread(self) -> None:
        """Close the connection after the answer being made, without reading the rest of the request's body."""
        self._lingering_time = 0.0  # aiohttp would otherwise read a slow body on for up to 10 s

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Answer in the API's error shape: 400 for what is not HTTP (one log line), else 500 (with a trace)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has begun; no error answer can follow it")
        request_id = self._guard.next_request_id()
        if isinstance(exc, HttpProcessingError):
            reason = next((name for kind, name in MALFORMED_REASONS if isinstance(exc, kind)), "malformed")
            # Not HTTP at all on a first request (a TLS handshake, a scanner) is the internet's noise.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) and self._request_count == 1 else logging.INFO
            log.log(level, "malformed request from %s (%s): %.200r (request %s)", request.remote, reason,
                    exc.message, request_id)
            error: errors.ApiError = errors.MalformedRequest(details={"reason": reason})
        else:
            log.error("request from %s failed (request %s)", request.remote, request_id, exc_info=exc)
            error = errors.ApiError("服务内部错误，请稍后重试", code="internal_error", status=status)
        response = errors.to_response(error)
        response.headers[REQUEST_ID] = request_id
        response.headers[hdrs.SERVER] = SERVER_NAME
        response.headers[hdrs.CONNECTION] = "close"
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP site shared by the gateway processes (SO_REUSEPORT) whose connections are guarded."""

    __slots__ = ("_host", "_port", "_guard", "_options")

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, *,
                 backlog: int, options: dict[str, Any]) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._guard = guard
        self._options = options

    @property
    def name(self) -> str:
        """The site's URL."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; each connection gets a guarded handler working for the runner's server."""
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def make_handler() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, guard=self._guard, **self._options)

        self._server = await loop.create_server(make_handler, self._host, self._port, backlog=self._backlog,
                                                reuse_port=True)
