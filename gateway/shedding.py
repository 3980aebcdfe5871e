"""Maintenance switches and overload shedding: refuse at once what the process cannot serve well.

Each route belongs to a class (candidate reads, candidate writes, login, payment
notifications, admin). A class has a maximum of in-flight requests per process (live
config ``shedding``); past it, requests get 503 + Retry-After immediately instead of
queueing. When the event loop lags beyond ``max_loop_lag_ms``, candidate classes are shed
too, but payment notifications and admin never are: they are shed last, only by their own
limits, because a lost notification costs more than a slow page. While this process's live config
is unknown (Redis lost it and the audit is not read yet), the candidate API routes, which its
waiting room, captcha and throttles may guard, are refused with 503 ``config_unavailable``.
"""

from __future__ import annotations

import fnmatch
from collections import Counter as Tally
from typing import Awaitable, Callable

from aiohttp import web

from gateway import errors, keys, metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Route name patterns → class; first match wins. None: never shed (health, metrics).
ROUTE_CLASSES: tuple[tuple[str, str | None], ...] = (
    ("health.*", None),
    ("metrics", None),
    ("openapi", None),
    ("admin.*", "admin"),
    ("payments.notify.*", "payment_notify"),
    ("sessions.create", "login"),
    ("password_resets.*", "login"),
)
LAG_EXEMPT = frozenset({"payment_notify", "admin"})
RETRY_AFTER_S = 1.0
# Classes whose routes may carry a guard of the live config (waiting room, captcha, throttle): while
# the config is unknown they are refused, pages (static shells) excepted.
CONFIG_GUARDED = frozenset({"candidate_read", "candidate_write", "login"})
PAGES_PREFIX = "pages."
CONFIG_RETRY_AFTER_S = 2.0


def route_class(route_name: str, method: str) -> str | None:
    """The shedding class of a route; unlisted routes are candidate reads or writes by method."""
    for pattern, klass in ROUTE_CLASSES:
        if fnmatch.fnmatchcase(route_name, pattern):
            return klass
    return "candidate_read" if method in ("GET", "HEAD") else "candidate_write"


class Shedder:
    """In-flight counts per class in this process, checked against the live limits."""

    def __init__(self) -> None:
        self.in_flight: Tally[str] = Tally()
        self._classes: dict[tuple[str, str], str | None] = {}

    def classify(self, route_name: str, method: str) -> str | None:
        """The class of a route, cached."""
        key = (route_name, method)
        if key not in self._classes:
            self._classes[key] = route_class(route_name, method)
        return self._classes[key]


def _config_unavailable(klass: str) -> errors.ApiError:
    metrics.SHED.labels(klass, "config_unavailable").inc()
    return errors.ApiError("系统配置正在恢复，请稍后重试", code="config_unavailable", status=503,
                           retry_after_s=CONFIG_RETRY_AFTER_S)


def _shed(klass: str, reason: str) -> errors.Overloaded:
    metrics.SHED.labels(klass, reason).inc()
    return errors.Overloaded(retry_after_s=RETRY_AFTER_S, details={"reason": reason})


@web.middleware
async def shedding(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maintenance message, unknown config, then per-class in-flight limit, then loop-lag shedding."""
    app = request.app
    route_name = request.match_info.route.name or "unmatched"
    watcher = app[keys.LIVE]
    live = watcher.current
    message = live.maintenance_for(route_name)
    if message is not None:
        raise errors.ApiError(message, code="maintenance", status=503, retry_after_s=60)
    shedder = app[keys.SHEDDER]
    klass = shedder.classify(route_name, request.method)
    if klass is None:
        return await handler(request)
    if not watcher.known and klass in CONFIG_GUARDED and not route_name.startswith(PAGES_PREFIX):
        raise _config_unavailable(klass)
    limit = live.shedding.get(klass)
    if limit is not None and shedder.in_flight[klass] >= limit:
        raise _shed(klass, "in_flight")
    if (klass not in LAG_EXEMPT and live.max_loop_lag_ms
            and app[keys.LOOP_LAG].lag_s * 1000 > live.max_loop_lag_ms):
        raise _shed(klass, "loop_lag")
    shedder.in_flight[klass] += 1
    try:
        return await handler(request)
    finally:
        shedder.in_flight[klass] -= 1
