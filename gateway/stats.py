"""Live figures across processes: per-route request counts flushed to Redis each second, read as rates.

Each process counts answered requests in memory (``metrics.RequestTally``, added to on every
request); every second the flush exports the tally (into the Prometheus values, and the counts
per route and status here) and adds the counts to ``eg:stats:<unix_second>`` (HINCRBY
``<route>|<status>``, kept 120 s), so ``read_stats`` in any process sees the sum of all of them.
Later features add sections (queues, seats, stream lag, pools) with ``register_provider``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from core.redis import REDIS_DOWN

if TYPE_CHECKING:
    from gateway.metrics import RequestTally

log = logging.getLogger("examgate.stats")

STATS_PREFIX = "eg:stats:"
BUCKET_TTL_S = 120
RESERVED_SECTIONS = frozenset({"window_s", "routes", "totals", "config_version"})

Provider = Callable[[], Awaitable[Any]]


def bucket_key(unix_second: int) -> str:
    """The Redis hash holding the counts flushed during one second."""
    return f"{STATS_PREFIX}{unix_second}"


class StatsRecorder:
    """This process's request counts since the last flush, and the registered stats providers."""

    def __init__(self, tally: RequestTally | None = None) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._providers: dict[str, Provider] = {}
        self._tally = tally

    def record(self, route_name: str, status: int, n: int = 1) -> None:
        """Count ``n`` answered requests."""
        key = (route_name, status)
        counts = self._counts
        counts[key] = counts.get(key, 0) + n

    def collect(self) -> None:
        """Take in what the request tally counted since its last export (the Prometheus values get it too)."""
        if self._tally is not None:
            self._tally.export(self.record)

    async def flush(self, redis: aioredis.Redis, now_s: float | None = None) -> int:
        """Add the counts to the current second's bucket and start again; how many requests were flushed."""
        self.collect()
        counts, self._counts = self._counts, {}
        if not counts:
            return 0
        key = bucket_key(int(time.time() if now_s is None else now_s))
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for (route, status), n in counts.items():
                    pipe.hincrby(key, f"{route}|{status}", n)
                pipe.expire(key, BUCKET_TTL_S)
                await pipe.execute()
        except BaseException:
            # Keep them for the next flush; the dict stays small (routes × statuses).
            for item, n in counts.items():
                self._counts[item] = self._counts.get(item, 0) + n
            raise
        return sum(counts.values())

    async def flush_forever(self, redis: aioredis.Redis, interval_s: float = 1.0) -> None:
        """Flush every ``interval_s`` until cancelled, riding out Redis outages."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush(redis)
                failing = False
            except REDIS_DOWN as exc:
                if not failing:
                    log.warning("cannot flush live stats, keeping the counts: %r", exc)
                failing = True
            except Exception:  # a bug here must not stop the flushing for good
                log.exception("live stats flush failed")

    def register_provider(self, name: str, provider: Provider) -> None:
        """Add a section ``name`` to the stats, computed by ``await provider()`` on every read."""
        if name in RESERVED_SECTIONS:
            raise ValueError(f"stats section name {name!r} is reserved")
        self._providers[name] = provider

    async def sections(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """Every provider's section; a failing or slow one reports its error instead."""
        names = list(self._providers)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._providers[name](), timeout_s) for name in names), return_exceptions=True
        )
        sections: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("stats provider %s failed: %r", name, result)
                result = {"error": type(result).__name__}
            sections[name] = result
        return sections


def _rates(counts: dict[int, int], window_s: int) -> dict[str, float]:
    def per_s(n: int) -> float:
        return round(n / window_s, 3)

    client = sum(n for status, n in counts.items() if 400 <= status < 500)
    server = sum(n for status, n in counts.items() if status >= 500)
    return {
        "requests_per_s": per_s(sum(counts.values())),
        "rejections_per_s": per_s(client + server),
        "4xx_per_s": per_s(client),
        "5xx_per_s": per_s(server),
        "429_per_s": per_s(counts.get(429, 0)),
        "503_per_s": per_s(counts.get(503, 0)),
    }


async def read_stats(redis: aioredis.Redis, window_s: int = 10, now_s: float | None = None) -> dict[str, Any]:
    """Per-route and total request and rejection rates over the last ``window_s`` seconds, all processes."""
    now = int(time.time() if now_s is None else now_s)
    async with redis.pipeline(transaction=False) as pipe:
        for second in range(now - window_s + 1, now + 1):
            pipe.hgetall(bucket_key(second))
        buckets = await pipe.execute()
    per_route: dict[str, dict[int, int]] = {}
    totals: dict[int, int] = {}
    for bucket in buckets:
        for raw_field, raw_count in bucket.items():
            route, _, status_text = raw_field.decode().rpartition("|")
            try:
                status, n = int(status_text), int(raw_count)
            except ValueError:
                continue
            counts = per_route.setdefault(route, {})
            counts[status] = counts.get(status, 0) + n
            totals[status] = totals.get(status, 0) + n
    return {
        "window_s": window_s,
        "routes": {route: _rates(counts, window_s) for route, counts in sorted(per_route.items())},
        "totals": _rates(totals, window_s),
    }
