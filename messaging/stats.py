"""SMS delivery figures: what the workers publish in Redis, and the outbox's depth read from PostgreSQL.

The workers add their outcomes to one Redis hash (totals since the hash was made: every worker,
every restart) and each says its recent send rate; ``/metrics`` reads both, and counts the
outbox's waiting messages in PostgreSQL itself (one index-only count per render), so the queue's
depth shows even when no worker runs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple

import asyncpg
import redis.asyncio as aioredis

from core.redis import AutoPipeline
from messaging import keys

__all__ = ["OUTCOMES", "DeliveryStats", "RateMeter", "publish", "read"]

# What the totals count: messages the provider accepted, that failed for good, sends retried after a
# provider error, throttled answers, in-doubt messages looked up, and those the look-up found sent.
OUTCOMES = ("sent", "failed", "retried", "throttled", "looked_up", "found")
RATE_WINDOW_S = 10.0
RATE_FRESH_S = 15.0  # a worker's rate older than this is a worker gone: not counted
RATES_TTL_S = 300

_DEPTH = """
SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) FILTER (WHERE status = 'sending') AS sending,
       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_s
  FROM sms_outbox WHERE status IN ('queued', 'sending')
"""


class DeliveryStats(NamedTuple):
    """The outbox's depth and the workers' figures."""

    queued: int  # waiting to be sent (new, or for a retry)
    sending: int  # claimed by a worker, or in doubt
    oldest_s: float  # age of the oldest waiting message (0: none)
    totals: dict[str, int]  # outcome → count, every worker together
    rate_per_s: float  # messages accepted per second, the live workers together


class RateMeter:
    """Messages sent in the last ``RATE_WINDOW_S``, as a rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()

    def add(self, count: int) -> None:
        """Count ``count`` messages sent now."""
        if count:
            self._events.append((self._now(), count))

    def rate_per_s(self) -> float:
        """Messages per second over the window."""
        now = self._now()
        while self._events and self._events[0][0] < now - RATE_WINDOW_S:
            self._events.popleft()
        return sum(count for _, count in self._events) / RATE_WINDOW_S

    def _now(self) -> float:
        return self._clock()


async def publish(redis: aioredis.Redis, worker_id: str, counts: Mapping[str, int], rate_per_s: float) -> None:
    """Add a worker's outcomes to the totals and say its send rate."""
    async with redis.pipeline(transaction=False) as pipe:
        for outcome, count in counts.items():
            if count:
                pipe.hincrby(keys.TOTALS, outcome, count)
        pipe.hset(keys.RATES, worker_id, f"{rate_per_s:.3f}|{time.time():.0f}")
        pipe.expire(keys.RATES, RATES_TTL_S)
        await pipe.execute()


def _number(raw: object) -> float:
    try:
        return float(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return 0.0


async def read(pg: asyncpg.Pool | asyncpg.Connection, redis: AutoPipeline) -> DeliveryStats:
    """The outbox's depth from PostgreSQL, the totals and live rates from Redis."""
    depth = await pg.fetchrow(_DEPTH)
    assert depth is not None  # an aggregate always has its row
    flat_totals = await redis.execute("HGETALL", keys.TOTALS)
    flat_rates = await redis.execute("HGETALL", keys.RATES)
    totals = dict.fromkeys(OUTCOMES, 0)
    for name, value in zip(flat_totals[::2], flat_totals[1::2], strict=True):
        totals[name.decode()] = int(_number(value))
    now = time.time()
    rate = 0.0
    for value in flat_rates[1::2]:
        figure, _, at = value.decode().partition("|")
        if now - _number(at) <= RATE_FRESH_S:
            rate += _number(figure)
    return DeliveryStats(int(depth["queued"]), int(depth["sending"]), float(depth["oldest_s"]), totals, rate)
