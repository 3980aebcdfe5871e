"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import orjson
import redis.exceptions
from aiohttp import web

from captcha.pool import PoolStats, pool_stats
from core import migrate
from gateway import keys, openapi
from gateway.bodies import json_response
from gateway.errors import error_body

READY_TIMEOUT_S = 1.0


async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs; names the process so multi-process set-ups can be checked."""
    return json_response({"status": "ok", "pid": os.getpid(), "config_version": request.app[keys.LIVE].current.version})


async def _check_redis(request: web.Request) -> str:
    try:
        await asyncio.wait_for(request.app[keys.REDIS].ping(), READY_TIMEOUT_S)
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def _check_postgres(request: web.Request) -> tuple[str, str]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with request.app[keys.PG].acquire() as conn:
                todo = await migrate.pending(conn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
        return f"unreachable: {type(exc).__name__}", "unknown"
    except migrate.MigrationError as exc:
        return "ok", f"mismatch: {exc}"
    if todo:
        return "ok", "pending: " + ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
    return "ok", "ok"


async def readyz(request: web.Request) -> web.Response:
    """200 when Redis and PostgreSQL answer and migrations are current, else 503 naming what is missing."""
    redis_state, (pg_state, migrations_state) = await asyncio.gather(_check_redis(request), _check_postgres(request))
    checks = {"redis": redis_state, "postgresql": pg_state, "migrations": migrations_state}
    missing = [name for name, state in checks.items() if state != "ok"]
    if not missing:
        return json_response({"status": "ready", "checks": checks})
    message = "未就绪：" + "、".join(missing)
    return web.Response(
        status=503,
        body=error_body("not_ready", message, {"missing": missing, "checks": checks}),
        content_type="application/json",
        headers={"Retry-After": "1"},
    )


async def _captcha_pool_stats(request: web.Request) -> PoolStats | None:
    client = request.app.get(keys.REDIS)
    if client is None:
        return None
    try:
        return await asyncio.wait_for(pool_stats(client), READY_TIMEOUT_S)
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError):
        return None  # a scrape still answers while Redis is away


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus text, aggregated across the gateway's processes."""
    from gateway import metrics

    metrics.sample_pools(request.app.get(keys.PG), request.app.get(keys.REDIS))
    metrics.sample_limiter(request.app.get(keys.LIMITER))
    metrics.sample_hasher(request.app.get(keys.HASHER))
    metrics.sample_captcha(await _captcha_pool_stats(request), request.app.get(keys.CAPTCHA_TAKES))
    body, content_type = metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def openapi_route(request: web.Request) -> web.Response:
    """The machine-readable contract (OpenAPI 3.1)."""
    return web.Response(body=orjson.dumps(openapi.document()), content_type="application/json")


def setup(app: web.Application) -> None:
    """Add the health routes."""
    app.router.add_get("/healthz", healthz, name="health.live")
    app.router.add_get("/readyz", readyz, name="health.ready")
    app.router.add_get("/metrics", metrics_route, name="metrics")
    app.router.add_get("/api/v1/openapi.json", openapi_route, name="openapi")
