"""Worker heartbeats in Redis: each worker says it is alive; readiness and the admin stats read it.

A worker beats every ``interval_s``: its own key with a TTL of three beats (``heartbeat_key``)
and its last beat time in one sorted set (``WORKERS``, member = worker id, score = unix time),
so readers find every worker with one command instead of scanning the keyspace. A worker
whose last beat is older than three beats counts as gone; one that stops cleanly removes
itself, and entries nobody refreshed for ``FORGET_AFTER_S`` are dropped by the live workers.
The scores come from the workers' clocks: hosts are expected to keep time (NTP), a skew of
a second or two being well inside three beats.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import redis.asyncio as aioredis

__all__ = ["FORGET_AFTER_S", "MISSED_BEATS", "WORKERS", "WorkerSeen", "beat", "forget", "heartbeat_key",
           "live_since", "parse_workers", "read_workers", "stale_after_s"]

WORKERS = "eg:workers"
MISSED_BEATS = 3  # a worker is gone after this many beats without a word
FORGET_AFTER_S = 24 * 3600.0


class WorkerSeen(NamedTuple):
    """A worker and how long ago it last beat."""

    id: str
    last_seen_s: float
    alive: bool


def heartbeat_key(worker_id: str) -> str:
    """Key a live worker refreshes, expiring three beats after its last one."""
    return f"eg:worker:{worker_id}"


def stale_after_s(interval_s: float) -> float:
    """How long after its last beat a worker counts as gone."""
    return MISSED_BEATS * interval_s


def live_since(interval_s: float, now_s: float | None = None) -> float:
    """The oldest beat time (unix seconds) that still counts as alive."""
    return (time.time() if now_s is None else now_s) - stale_after_s(interval_s)


async def beat(redis: aioredis.Redis, worker_id: str, interval_s: float) -> None:
    """One heartbeat: refresh this worker's key and score, drop entries long forgotten."""
    now_s = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(heartbeat_key(worker_id), "1", px=max(1, int(stale_after_s(interval_s) * 1000)))
        pipe.zadd(WORKERS, {worker_id: now_s})
        pipe.zremrangebyscore(WORKERS, "-inf", now_s - FORGET_AFTER_S)
        await pipe.execute()


async def forget(redis: aioredis.Redis, worker_id: str) -> None:
    """A clean stop: this worker is gone now, not three beats from now."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(WORKERS, worker_id)
        pipe.delete(heartbeat_key(worker_id))
        await pipe.execute()


def parse_workers(reply: Any, interval_s: float, now_s: float | None = None) -> list[WorkerSeen]:
    """``ZRANGE WORKERS 0 -1 WITHSCORES`` (a flat or paired reply) as workers, most recent first."""
    now = time.time() if now_s is None else now_s
    flat = list(reply)
    pairs = flat if flat and isinstance(flat[0], (tuple, list)) else list(zip(flat[::2], flat[1::2], strict=True))
    seen = []
    for member, score in pairs:
        last_seen_s = max(0.0, now - float(score))
        name = member.decode() if isinstance(member, bytes) else str(member)
        seen.append(WorkerSeen(name, round(last_seen_s, 3), last_seen_s < stale_after_s(interval_s)))
    return sorted(seen, key=lambda worker: worker.last_seen_s)


async def read_workers(redis: aioredis.Redis, interval_s: float) -> list[WorkerSeen]:
    """Every worker seen in the last day, most recent first."""
    return parse_workers(await redis.zrange(WORKERS, 0, -1, withscores=True), interval_s)
