"""Calibration routes for the benchmarks (served only with ``EXAMGATE_BENCH_ROUTES=true``).

They measure the cost of the building blocks side by side: nothing at all, one Redis GET
through the auto-pipelined client, and the same GET through plain redis-py.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import keys

BENCH_KEY = "eg:bench:value"
_BODY = b'{"ok":true}'


async def noop(request: web.Request) -> web.Response:
    """Do nothing: the ceiling every other route is compared with."""
    return web.Response(body=_BODY, content_type="application/json")


async def redis_get(request: web.Request) -> web.Response:
    """One GET through the auto-pipelined client."""
    value = await request.app[keys.REDIS].get(BENCH_KEY)
    return web.Response(body=value or _BODY, content_type="application/json")


async def redis_get_plain(request: web.Request) -> web.Response:
    """The same GET through redis-py's own asyncio client (a connection per command)."""
    value = await request.app[keys.REDIS_PY].get(BENCH_KEY)
    return web.Response(body=value or _BODY, content_type="application/json")


async def sleep(request: web.Request) -> web.Response:
    """Answer after ``?ms=`` milliseconds (at most 10 s): a slow request for drain and shedding tests."""
    raw = request.query.get("ms", "100")
    delay_ms = min(int(raw), 10_000) if raw.isdigit() else 100
    await asyncio.sleep(delay_ms / 1000)
    return web.Response(body=_BODY, content_type="application/json")


async def _prime(app: web.Application) -> None:
    await app[keys.REDIS_PY].set(BENCH_KEY, _BODY)


def setup(app: web.Application) -> None:
    """Add the calibration routes."""
    app.router.add_get("/_bench/noop", noop, name="bench.noop")
    app.router.add_get("/_bench/redis-get", redis_get, name="bench.redis_get")
    app.router.add_get("/_bench/redis-get-plain", redis_get_plain, name="bench.redis_get_plain")
    app.router.add_get("/_bench/sleep", sleep, name="bench.sleep")
    app.on_startup.append(_prime)
