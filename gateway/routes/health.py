"""Liveness, readiness, metrics and the OpenAPI document.

``/healthz`` costs nothing and is open to all. ``/readyz`` (a Redis command and a PostgreSQL
round trip) and ``/metrics`` (~12 ms of blocked event loop per render) are computed at most
once per interval per process, every caller meanwhile sharing the result, and ``/metrics``
answers only the scraper's token or an operator's, refusing anyone else before any work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg
import orjson
import redis.exceptions
from aiohttp import web
from pydantic import Field

from captcha.pool import PoolStats, pool_stats
from gateway import keys, metrics, openapi, readiness
from gateway.adminauth import DEFAULT_ROLES, AdminUnauthorized, stored_operator, token_name
from gateway.bodies import json_response
from gateway.config import Settings
from gateway.draining import DRAINING
from gateway.errors import ApiError
from gateway.models import Reply
from gateway.routing import SCRAPER, Answer, Routes
from gateway.singleflight import SingleFlight
from lookups.pdf import TicketFontMissing, check_ticket_font
from messaging import stats as sms_stats

log = logging.getLogger("examgate.gateway")

READY_TIMEOUT_S = readiness.CHECK_TIMEOUT_S
SCRAPER_NAME = "metrics-scraper"

Rendered = tuple[bytes, str]
READY: web.AppKey[Callable[[], Awaitable[readiness.Verdict]]] = web.AppKey("ready")
METRICS_TEXT: web.AppKey[Callable[[], Awaitable[Rendered]]] = web.AppKey("metrics_text")
SCRAPE_TOKENS: web.AppKey[dict[str, str]] = web.AppKey("scrape_tokens")

# Never shed: a probe or a scrape must see the process as it is, overloaded or not.
routes = Routes("Health")


class Live(Reply):
    """This process runs."""

    status: Literal["ok"]
    pid: int
    config_version: int = Field(ge=0)


class Ready(Reply):
    """Ready, or degraded: each check is ``ok`` or what is wrong; ``degraded`` names the missing optional parts."""

    status: Literal["ready", "degraded"]
    checks: dict[str, str] = Field(description="redis, postgresql, migrations, worker, pdf_font")
    degraded: list[str]


OPENAPI_DOCUMENT = {"type": "object", "required": ["openapi", "paths"]}


class MetricsUnauthorized(ApiError):
    """No scrape or operator token on ``/metrics`` (401 with ``WWW-Authenticate: Bearer``)."""

    status, code, message = 401, "unauthorized", "需要监控抓取令牌或运维令牌（Authorization: Bearer <令牌>）"

    def __init__(self, *, invalid: bool) -> None:
        challenge = 'Bearer realm="examgate-metrics"' + (', error="invalid_token"' if invalid else "")
        super().__init__(headers={"WWW-Authenticate": challenge})


@routes.get("/healthz", "health.live", summary="Liveness: this process runs", shedding=None,
            answers={200: Answer(Live, "running")})
async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs; names the process so multi-process set-ups can be checked."""
    return json_response({"status": "ok", "pid": os.getpid(), "config_version": request.app[keys.LIVE].current.version})


@routes.get("/readyz", "health.ready", shedding=None,
            summary="Readiness: Redis, PostgreSQL and migrations required; the worker and the ticket font degrade it",
            answers={200: Answer(Ready, "ready, or degraded (checks and degraded name what is missing)")},
            errors={503: "not_ready: details.missing and details.checks say what is missing; or shed"})
async def readyz(request: web.Request) -> web.Response:
    """200 ``ready`` or ``degraded`` (no worker, no ticket font) while the stores answer, else 503 naming the gaps."""
    drain = request.app.get(DRAINING)
    if drain is not None and drain.started:  # out of the balancer's rotation before the socket closes
        raise ApiError("正在停止服务", code="not_ready", status=503, retry_after_s=1,
                       details={"missing": ["draining"], "checks": {"draining": "stopping"}, "degraded": []})
    verdict = await request.app[READY]()
    if verdict.missing:
        raise ApiError("未就绪：" + "、".join(verdict.missing), code="not_ready", status=503, retry_after_s=1,
                       details={"missing": verdict.missing, "checks": verdict.checks, "degraded": verdict.degraded})
    return json_response({"status": verdict.status, "checks": verdict.checks, "degraded": verdict.degraded})


async def _captcha_pool_stats(app: web.Application) -> PoolStats | None:
    client = app.get(keys.REDIS)
    if client is None:
        return None
    try:
        return await asyncio.wait_for(pool_stats(client), READY_TIMEOUT_S)
    except (redis.exceptions.RedisError, OSError, TimeoutError):
        return None  # a scrape still answers while Redis is away


async def _sms_stats(app: web.Application) -> sms_stats.DeliveryStats | None:
    pool, client = app.get(keys.PG), app.get(keys.REDIS)
    if pool is None or client is None:
        return None
    try:
        return await asyncio.wait_for(sms_stats.read(pool, client), READY_TIMEOUT_S)
    except (asyncpg.PostgresError, redis.exceptions.RedisError, OSError, TimeoutError):
        return None  # a scrape still answers while a store is away


async def _render_metrics(app: web.Application) -> Rendered:
    app[keys.STATS].collect()  # this process's answers so far (the others export theirs each second)
    metrics.sample_pools(app.get(keys.PG), app.get(keys.REDIS))
    metrics.sample_limiter(app.get(keys.LIMITER))
    metrics.sample_hasher(app.get(keys.HASHER))
    metrics.sample_captcha(await _captcha_pool_stats(app), app.get(keys.CAPTCHA_TAKES))
    metrics.sample_sms(await _sms_stats(app))
    return metrics.render()


@routes.get("/metrics", "metrics", caller=SCRAPER, shedding=None,
            summary="Prometheus metrics aggregated across processes (the scraper's or an operator's bearer token)",
            answers={200: Answer({"type": "string"}, "Prometheus text exposition", "text/plain")})
async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus text, aggregated across the gateway's processes; scrape or admin bearer token required."""
    authorization = request.headers.get("Authorization")
    tokens = request.app[SCRAPE_TOKENS]
    try:
        token_name(authorization, tokens)
    except AdminUnauthorized:
        operator = await stored_operator(request)  # an operator's issued token (the console sends it)
        if operator is None or operator.role not in DEFAULT_ROLES:
            raise MetricsUnauthorized(invalid=authorization is not None) from None
    body, content_type = await request.app[METRICS_TEXT]()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


OPENAPI_BYTES = web.AppKey("openapi_bytes", dict)


def openapi_bytes(app: web.Application) -> bytes:
    """The document of ``app``'s route table, encoded once: it never changes while the process runs."""
    cache = app[OPENAPI_BYTES]
    if "document" not in cache:
        cache["document"] = orjson.dumps(openapi.gateway_document(bench=app[keys.SETTINGS].bench_routes))
    return cache["document"]


@routes.get("/api/v1/openapi.json", "openapi", summary="This document", shedding=None,
            answers={200: Answer(OPENAPI_DOCUMENT, "OpenAPI 3.1")})
async def openapi_route(request: web.Request) -> web.Response:
    """The machine-readable contract (OpenAPI 3.1)."""
    return web.Response(body=openapi_bytes(request.app), content_type="application/json")


def scrape_tokens(settings: Settings) -> dict[str, str]:
    """Tokens ``/metrics`` accepts: the scraper's and every operator's (names prefixed so none can shadow another)."""
    tokens = {f"admin:{name}": token for name, token in settings.admin_tokens.items()}
    if settings.metrics_token:
        tokens[SCRAPER_NAME] = settings.metrics_token
    return tokens


async def _assess(app: web.Application) -> readiness.Verdict:
    settings = app[keys.SETTINGS]
    return await readiness.assess(app[keys.PG], app[keys.REDIS], heartbeat_s=settings.worker_heartbeat_s,
                                  font_path=settings.ticket_font)


async def _report_missing_font(app: web.Application) -> None:
    """Say at start, not at the first candidate's download, that ticket PDFs cannot be made."""
    try:
        check_ticket_font(app[keys.SETTINGS].ticket_font)
    except TicketFontMissing as exc:
        log.error("ticket PDFs will answer 503 until the font is there: %s", exc)


def setup(app: web.Application) -> None:
    """The health routes' resources: one readiness verdict and one metrics render per interval, shared by callers."""
    settings = app[keys.SETTINGS]
    app[SCRAPE_TOKENS] = scrape_tokens(settings)
    verdicts: SingleFlight[readiness.Verdict] = SingleFlight(settings.ready_cache_s)
    renders: SingleFlight[Rendered] = SingleFlight(settings.metrics_cache_s)
    ready: Callable[[], Awaitable[readiness.Verdict]] = functools.partial(verdicts.get, functools.partial(_assess, app))
    render: Callable[[], Awaitable[Rendered]] = functools.partial(renders.get, functools.partial(_render_metrics, app))
    app[READY] = ready
    app[METRICS_TEXT] = render
    app.on_startup.append(_report_missing_font)
    app[OPENAPI_BYTES] = {}
