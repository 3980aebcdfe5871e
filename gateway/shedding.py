"""Overload shedding: refuse at once what the process cannot serve well (applied by ``gateway.edge``).

Each route belongs to a class (candidate reads, candidate writes, login, payment notifications,
admin), declared in the route table (``gateway.routing``). A class has a maximum of in-flight
requests per process (live config ``shedding``); past it, requests get 503 + Retry-After immediately
instead of queueing. When the event loop lags beyond ``max_loop_lag_ms`` while the class has
``LAG_MIN_IN_FLIGHT`` requests in flight, candidate classes are shed too, but payment notifications
and admin never are: they are shed last, only by their own limits, because a lost notification costs
more than a slow page. While this process's live config is unknown (Redis lost it and the audit is
not read yet), the candidate API routes, which its waiting room, captcha and throttles may guard,
are refused with 503 ``config_unavailable``.

A request counts against its class only once its body is in: one that did not come with its
headers is waited for up to ``body_timeout_s`` (408 after), so clients sending a byte at a time
hold no place of anyone's. A client address may have ``max_in_flight_per_address`` requests in
flight per process (429 beyond), payment notifications excepted: providers send many from few
addresses, and their class limit bounds them. Maintenance messages (live config ``maintenance``)
are answered by the edge before any of this.
"""

from __future__ import annotations

from collections import Counter as Tally

from aiohttp import web

from gateway import errors, metrics
from gateway.clientip import ClientIp
from gateway.connections import GuardedRequestHandler

LAG_EXEMPT = frozenset({"payment_notify", "admin"})
# Loop lag sheds only a process that has at least this many requests of the class in flight. The lag
# shedding can cure is the one this process's own queue makes; a late loop with a handful in flight is
# the machine's (another process on the cores, a garbage-collection pause), and refusing those few
# frees nothing. Seen as a lone test request answered 503 on a machine busy with another job.
LAG_MIN_IN_FLIGHT = 8
ADDRESS_EXEMPT = frozenset({"payment_notify"})
RETRY_AFTER_S = 1.0
# Classes whose routes may carry a guard of the live config (waiting room, captcha, throttle): while
# the config is unknown they are refused, pages (static shells) and paths of no route (404) excepted.
CONFIG_GUARDED = frozenset({"candidate_read", "candidate_write", "login"})
PAGES_PREFIX = "pages."
CONFIG_RETRY_AFTER_S = 2.0


class Shedder:
    """In-flight counts per class and per client address in this process, checked against their limits."""

    def __init__(self, client_ip: ClientIp, *, max_in_flight_per_address: int = 0,
                 body_timeout_s: float = 10.0) -> None:
        self.in_flight: Tally[str] = Tally()
        self.by_address: dict[str, int] = {}  # only addresses with requests in flight
        self.client_ip = client_ip
        self.max_in_flight_per_address = max_in_flight_per_address  # 0: no maximum
        self.body_timeout_s = body_timeout_s

    def enter(self, address: str) -> bool:
        """Count a request of ``address`` in flight; False (not counted) when it has its maximum already."""
        count = self.by_address.get(address, 0)
        if count >= self.max_in_flight_per_address:
            return False
        self.by_address[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        """A request ``enter`` counted is answered."""
        count = self.by_address[address] - 1
        if count:
            self.by_address[address] = count
        else:
            del self.by_address[address]

    def admit(self, request: web.Request, klass: str, limit: int | None, max_lag_ms: int, lag_s: float) -> str | None:
        """Count ``request`` in flight in ``klass``, or raise the refusal: its class full (``limit``), the loop
        late by more than ``max_lag_ms`` with the class busy, or its address with its maximum in flight.

        The address counted (give it back with ``leave``), or None when addresses are not counted.
        """
        busy = self.in_flight[klass]
        if limit is not None and busy >= limit:
            raise shed(klass, "in_flight")
        if busy >= LAG_MIN_IN_FLIGHT and max_lag_ms and klass not in LAG_EXEMPT and lag_s * 1000 > max_lag_ms:
            raise shed(klass, "loop_lag")
        address = None
        if self.max_in_flight_per_address and klass not in ADDRESS_EXEMPT:
            address = self.client_ip.of(request)
            if not self.enter(address):
                raise address_busy(klass)
        self.in_flight[klass] = busy + 1
        return address


class BodyTooSlow(errors.RequestTimeout):
    """The body did not come within ``body_timeout_s``: 408, and the connection closed after it."""


def config_unavailable(klass: str) -> errors.ApiError:
    """503 while this process does not know its live config (counted as shed)."""
    metrics.SHED.labels(klass, "config_unavailable").inc()
    return errors.ApiError("系统配置正在恢复，请稍后重试", code="config_unavailable", status=503,
                           retry_after_s=CONFIG_RETRY_AFTER_S)


def address_busy(klass: str) -> errors.ApiError:
    """429 for an address with its maximum of requests in flight (counted as shed)."""
    metrics.SHED.labels(klass, "address_in_flight").inc()
    return errors.ApiError("您的网络地址同时发出的请求过多，请稍后重试", code="too_many_requests", status=429,
                           retry_after_s=RETRY_AFTER_S,
                           details={"retry_after_s": RETRY_AFTER_S, "rules": [], "reason": "address_in_flight"})


def body_too_slow(request: web.Request, error: BodyTooSlow) -> web.Response:
    """The 408 of ``error``, the connection closed after it: the rest of the body is not waited for."""
    response = errors.to_response(error)
    response.force_close()
    if isinstance(request.protocol, GuardedRequestHandler):
        request.protocol.close_unread()
    return response


def shed(klass: str, reason: str) -> errors.Overloaded:
    """503 + Retry-After for a request of ``klass`` refused for ``reason`` (counted)."""
    metrics.SHED.labels(klass, reason).inc()
    return errors.Overloaded(retry_after_s=RETRY_AFTER_S, details={"reason": reason})
