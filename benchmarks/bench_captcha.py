"""Image captcha issuance (GET /api/v1/captcha/image) on one gateway process, beside routes doing nothing.

One gateway process pinned to core 0, wrk on core 1 (64 connections); the bare aiohttp app's
``GET /noop`` (``benchmarks.bare_app``, pinned to core 0 too), ``/_bench/noop`` and the captcha
route are measured in interleaved rounds. The target is absolute (≥ 5,000 issued/s); the ratios
to the bare app and to noop are secondary figures.

Issuance is measured, not drawing: before every captcha round the Redis image pool is topped
up to ``POOL_PER_ROUND`` images with ``captcha.pool.refill`` — enough for a 5 s round at
~24,000/s, more than noop does here. Drawing that many would take minutes (~800/s on this
machine, see captcha/pool.py), so ``DISTINCT_IMAGES`` real images are drawn
(``captcha.image.draw_batch`` in a process pool, as the worker does) and ``refill`` cycles
through them: every entry still gets its own fresh id, so each
``take`` pops a real ~2 KB entry and arms its own answer key, exactly as in production. A round
counts only if the pool still had images when it ended and wrk saw no non-2xx answer (an empty
pool answers 503). The issuance throttles (``captcha-image-ip``, ``captcha-image-global``) are
turned off: from one address wrk would measure their 429s, not issuance.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import redis.asyncio as aioredis

from benchmarks.common import bare_app, median_rps, ratio, scrape_metrics, scratch_stores
from benchmarks.wrk import run_wrk
from captcha import keys, pool
from captcha.image import Drawn, draw_batch
from loadtest.processes import start_gateway

ROUTES = {"noop": "/_bench/noop", "captcha": "/api/v1/captcha/image"}  # beside the bare app's "bare"
DISTINCT_IMAGES = 256
POOL_PER_ROUND = 120_000
TARGET_RPS = 5000


def _draw_distinct(count: int) -> list[Drawn]:
    """``count`` real captchas drawn in two spawned processes (the worker's way)."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as executor:
        batches = executor.map(draw_batch, [count // 2, count - count // 2])
        return [item for batch in batches for item in batch]


async def _top_up(redis_url: str, images: list[Drawn], target: int) -> int:
    """Refill the pool to ``target`` entries cycling through ``images``; the pool's size afterwards."""
    cycle = itertools.cycle(images)

    def draw(count: int) -> Sequence[Drawn]:
        return [next(cycle) for _ in range(count)]

    client = aioredis.Redis.from_url(redis_url)
    try:
        await pool.refill(client, target=target, batch=1000, draw=draw, inline=True)
        return await _pool_size(client)
    finally:
        await client.aclose()


async def _pool_size(client: aioredis.Redis) -> int:
    return int(await client.llen(keys.POOL))


def _size(redis_url: str) -> int:
    async def size() -> int:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await _pool_size(client)
        finally:
            await client.aclose()

    return asyncio.run(size())


def run(rounds: int = 3, duration_s: int = 5) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    images = _draw_distinct(DISTINCT_IMAGES)
    png_bytes = statistics.mean(len(item.png) for item in images)
    print(f"  drew {len(images)} distinct images (mean {png_bytes:,.0f} B)", flush=True)
    samples: dict[str, list[float]] = {name: [] for name in ["bare", *ROUTES]}
    checks: list[dict[str, Any]] = []
    with scratch_stores() as (pg_dsn, redis_url), bare_app() as bare_url:
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")
        try:
            url = gateway.url
            urls = {"bare": bare_url + "/noop", **{name: url + path for name, path in ROUTES.items()}}
            gateway.patch_config({"ratelimit": {"rules": []}})  # applied within a second, long before round 1
            asyncio.run(_top_up(redis_url, images, POOL_PER_ROUND))
            for target in urls.values():
                run_wrk(target, duration_s=2)
            for round_no in range(rounds):
                for name, target in urls.items():
                    before = 0
                    if name == "captcha":
                        before = asyncio.run(_top_up(redis_url, images, POOL_PER_ROUND))
                    result = run_wrk(target, duration_s=duration_s)
                    samples[name].append(result.requests_per_s)
                    if name == "captcha":
                        left = _size(redis_url)
                        checks.append({"pool_before": before, "pool_after": left, "non_2xx": result.non_2xx,
                                       "socket_errors": result.socket_errors})
                        if left == 0 or result.non_2xx:
                            raise RuntimeError(f"captcha round {round_no + 1}: pool ran dry or non-2xx "
                                               f"({checks[-1]}); raise POOL_PER_ROUND")
                    elif result.non_2xx:
                        raise RuntimeError(f"{target}: {result.non_2xx} non-2xx responses")
                    print(f"  round {round_no + 1}/{rounds} {name}: {result.requests_per_s:,.0f} req/s"
                          + (f" (pool {checks[-1]['pool_before']:,} → {checks[-1]['pool_after']:,})"
                             if name == "captcha" else ""), flush=True)
            empty = scrape_metrics(url, gateway.metrics_token()).get('examgate_captcha_takes{outcome="empty"}', 0.0)
        finally:
            gateway.stop()
    issued = statistics.median(samples["captcha"])
    vs_noop = ratio(samples, "captcha", "noop")
    vs_bare = ratio(samples, "captcha", "bare")
    details = {"requests_per_s": median_rps(samples), "samples": samples, "vs_noop": round(vs_noop, 3),
               "vs_bare_aiohttp": round(vs_bare, 3),
               "rounds": checks, "empty_pool_takes": empty, "connections": 64, "gateway_processes": 1,
               "distinct_images": DISTINCT_IMAGES, "mean_png_bytes": round(png_bytes)}
    return [
        {"benchmark": "captcha", "metric": "image_issued_per_s", "value": round(issued), "unit": "req/s",
         "target": f">= {TARGET_RPS:,}", "passed": issued >= TARGET_RPS and empty == 0, "details": details},
        {"benchmark": "captcha", "metric": "image_vs_bare_aiohttp", "value": round(vs_bare, 3), "unit": "×",
         "target": None, "passed": None, "details": {}},
        {"benchmark": "captcha", "metric": "image_vs_noop", "value": round(vs_noop, 3), "unit": "×",
         "target": None, "passed": None, "details": {}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
