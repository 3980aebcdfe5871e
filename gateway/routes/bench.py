"""Calibration routes for the benchmarks (served only with ``EXAMGATE_BENCH_ROUTES=true``).

They measure the cost of the building blocks side by side: nothing at all, one Redis GET
through the auto-pipelined client, the same GET through plain redis-py, and the naive
designs the real routes are compared with (a score lookup read straight from PostgreSQL).
``gateway.routes.modules`` lists this module only when the routes are served, so the document
describes them only then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from aiohttp import web

from core.errors import storage_errors
from gateway import keys
from gateway.bodies import NO_STORE, json_response, read_json
from gateway.routes.lookups import LOOKUP_ERRORS, ScoreQuery, Scores, released_query, scores_answer
from gateway.routing import Answer, Param, Routes
from lookups import records

BENCH_KEY = "eg:bench:value"
_BODY = b'{"ok":true}'
routes = Routes("Benchmarks")
FIXED = {200: Answer({"type": "object"}, "a fixed small JSON body")}
JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


@routes.get("/_bench/noop", "bench.noop", answers=FIXED)
async def noop(request: web.Request) -> web.Response:
    """Do nothing: the ceiling every other route is compared with."""
    return web.Response(body=_BODY, content_type="application/json")


@routes.post("/_bench/post-json", "bench.post_json", raw_body=JSON_OBJECT, answers=FIXED,
             errors={400: "malformed_body", 415: "unsupported_media_type"})
async def post_json(request: web.Request) -> web.Response:
    """Read a JSON body and answer a fixed one: what a POST with a small JSON body costs before any work."""
    await read_json(request)
    return web.Response(body=_BODY, content_type="application/json")


@routes.get("/_bench/redis-get", "bench.redis_get", answers=FIXED)
async def redis_get(request: web.Request) -> web.Response:
    """One GET through the auto-pipelined client."""
    value = await request.app[keys.REDIS].get(BENCH_KEY)
    return web.Response(body=value or _BODY, content_type="application/json")


@routes.get("/_bench/redis-get-plain", "bench.redis_get_plain", answers=FIXED)
async def redis_get_plain(request: web.Request) -> web.Response:
    """The same GET through redis-py's own asyncio client (a connection per command)."""
    value = await request.app[keys.REDIS_PY].get(BENCH_KEY)
    return web.Response(body=value or _BODY, content_type="application/json")


@routes.get("/_bench/sleep", "bench.sleep", answers=FIXED,
            params=(Param("ms", "query", {"type": "integer", "minimum": 0, "maximum": 10_000, "default": 100}),))
async def sleep(request: web.Request) -> web.Response:
    """Answer after ``?ms=`` milliseconds (at most 10 s): a slow request for drain and shedding tests."""
    raw = request.query.get("ms", "100")
    delay_ms = min(int(raw), 10_000) if raw.isdigit() else 100
    await asyncio.sleep(delay_ms / 1000)
    return web.Response(body=_BODY, content_type="application/json")


@routes.get("/_bench/throttled", "bench.throttled", answers=FIXED)
async def throttled(request: web.Request) -> web.Response:
    """Do nothing, but under whatever rate-limit rules the live config gives ``bench.throttled``."""
    return web.Response(body=_BODY, content_type="application/json")


LIMITS = web.AppKey("bench_limits", object)
BARE_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


@routes.get("/_bench/limits", "bench.limits", answers={
    **FIXED, 429: Answer(BARE_ERROR, "limited (the library's verdict, not the API's error)"),
    501: Answer(BARE_ERROR, "the limits library is not installed")})
async def limits_moving_window(request: web.Request) -> web.Response:
    """One rule decided by the ``limits`` library's moving window (async, redis-py): the baseline."""
    if request.app[LIMITS] is None:
        return web.Response(status=501, body=b'{"error":"limits is not installed"}', content_type="application/json")
    limiter, item = cast("tuple[Any, Any]", request.app[LIMITS])
    if not await limiter.hit(item, request.remote or "unknown"):
        return web.Response(status=429, body=b'{"error":"limited"}', content_type="application/json")
    return web.Response(body=_BODY, content_type="application/json")


@routes.post("/_bench/scores-lookup-pg", "bench.scores_lookup_pg", body=ScoreQuery,
             answers={200: Answer(Scores, "the scores")},
             errors={**LOOKUP_ERRORS, 425: "not_yet_released (details.release_at)"})
async def scores_lookup_pg(request: web.Request) -> web.Response:
    """``POST /api/v1/scores/lookup`` done the naive way: no captcha, no throttle, every record read from PostgreSQL."""
    _, exam, query = await released_query(request)
    sql = records.ONE_BY_ID_SQL if query.mode == "id_number" else records.ONE_BY_TICKET_SQL
    async with storage_errors():
        stored = await request.app[keys.PG].fetchval(sql, exam.id, query.value)
    record = None if stored is None else records.decode(stored)
    return json_response(scores_answer(exam, record, query.name), headers=NO_STORE)


async def _limits_ctx(app: web.Application) -> AsyncIterator[None]:
    try:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter
    except ImportError:  # the bench extra is not installed: the baseline route answers 501
        app[LIMITS] = None
        yield
        return

    url = app[keys.SETTINGS].redis_url.replace("redis://", "async+redis://", 1)
    storage = RedisStorage(url, implementation="redispy", key_prefix="eg:bench:limits")
    app[LIMITS] = (MovingWindowRateLimiter(storage), RateLimitItemPerSecond(10_000_000))
    yield


async def _prime(app: web.Application) -> None:
    await app[keys.REDIS_PY].set(BENCH_KEY, _BODY)


def setup(app: web.Application) -> None:
    """The calibration routes' resources: the ``limits`` baseline and the value the GETs read."""
    app.cleanup_ctx.append(_limits_ctx)
    app.on_startup.append(_prime)
