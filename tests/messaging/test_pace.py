"""``pace.lua``: one send rate shared by every worker, and a pause for all of them, against real Redis."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from messaging import keys
from messaging.pace import Pacer


async def sends(pacer: Pacer, count: int) -> None:
    for _ in range(count):
        await pacer.take()


async def test_workers_share_one_rate(redis: aioredis.Redis) -> None:
    first, second = Pacer(redis, 200), Pacer(redis, 200)  # two workers, 200/s together
    await asyncio.gather(*(redis.ping() for _ in range(8)))  # the connections the senders use, opened
    started = time.monotonic()
    await asyncio.gather(*(sends(pacer, 25) for pacer in (first, second) for _ in range(2)))
    elapsed = time.monotonic() - started
    # 100 slots 5 ms apart, the first 40 from the 0.2 s burst banked while idle: ~0.3 s (0.25 s at 200/s each).
    assert 0.27 <= elapsed <= 0.45, elapsed
    assert float(await redis.get(keys.SEND_SLOT)) > time.time() * 1e6 - 1e6
    assert 0 < await redis.pttl(keys.SEND_SLOT) <= 61_000


async def test_a_pause_holds_every_worker_back(redis: aioredis.Redis) -> None:
    first, second = Pacer(redis, 1000), Pacer(redis, 1000)
    await first.take()
    await first.pause(0.3)
    started = time.monotonic()
    await second.take()
    assert 0.27 <= time.monotonic() - started <= 0.4
    await first.pause(0.05)
    started = time.monotonic()
    await second.take()
    assert 0.03 <= time.monotonic() - started <= 0.15


async def test_without_redis_a_worker_paces_itself() -> None:
    gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    pacer = Pacer(gone, 100, timeout_s=0.5)
    try:
        started = time.monotonic()
        await sends(pacer, 40)  # asks Redis once, then 40 sends at 10 ms less the banked burst: ~0.2 s
        assert time.monotonic() - started <= 1.5
        started = time.monotonic()
        await sends(pacer, 20)
        assert 0.15 <= time.monotonic() - started <= 0.3
    finally:
        await gone.aclose()
