"""``pace.lua``: one send rate shared by every worker, and a pause for all of them, against real Redis.

The schedule is checked where it is kept — the next free slot in Redis, on Redis's clock, and the
fallback's own schedule on a clock the test moves — not by timing the sends, which a busy machine
would make slower.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from messaging import keys, pace
from messaging.pace import Pacer


async def redis_now_us(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1_000_000 + int(micros)


async def next_free(redis: aioredis.Redis) -> float:
    return float(await redis.get(keys.SEND_SLOT))


async def test_workers_share_one_rate(redis: aioredis.Redis) -> None:
    # Two workers, 20/s together: slots 50 ms apart. A generous time budget: a busy machine must not send
    # a call to the local fallback (that has its own test), which would take its slot outside Redis.
    first, second = Pacer(redis, 20, timeout_s=30), Pacer(redis, 20, timeout_s=30)
    before = await redis_now_us(redis)
    waits = [await first._run(0)]  # the first slot, out of the burst banked while idle
    start = await next_free(redis)
    assert before - pace.BURST_S * 1e6 + first.interval_us <= start  # at most the burst in the past
    # A pause puts the next slot 5 s ahead: a stall of this busy machine between two calls below cannot let
    # the schedule fall behind Redis's clock (which would start it again from there, by design).
    await first.pause(5.0)
    held = await next_free(redis)
    # 40 more slots asked by both workers at once: each a slot of its own, one interval after the other.
    waits += await asyncio.gather(*(pacer._run(0) for _ in range(20) for pacer in (first, second)))
    assert await next_free(redis) == pytest.approx(held + 40 * first.interval_us, abs=1)
    assert sorted(waits)[-1] >= 5 + 39 * 0.05 - 1  # the last slot lies ~7 s ahead (1 s allowed for stalls)
    assert 0 < await redis.pttl(keys.SEND_SLOT) <= 60_000 + 7_000 + 1_000  # idle time after the last slot


async def test_a_pause_holds_every_worker_back(redis: aioredis.Redis) -> None:
    first, second = Pacer(redis, 1000, timeout_s=30), Pacer(redis, 1000, timeout_s=30)
    await first.take()
    before = await redis_now_us(redis)
    await first.pause(0.3)
    after = await redis_now_us(redis)
    held = await next_free(redis)
    assert before + 300_000 <= held <= after + 300_000  # no slot before 0.3 s from the pause, for anyone
    wait = await second._run(0)
    assert 0 < wait <= 0.3
    assert await next_free(redis) == pytest.approx(held + second.interval_us, abs=1)
    await first.pause(0.05)  # a shorter pause does not bring the held slot forward
    assert await next_free(redis) >= held


@pytest.mark.unit
def test_without_redis_a_worker_paces_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(pace, "time", SimpleNamespace(monotonic=lambda: clock.now))
    pacer = Pacer(aioredis.Redis(host="127.0.0.1", port=1), 100)  # 10 ms apart; never asked here
    # After an idle spell the banked burst (0.2 s: 20 sends) goes at once, then one slot every 10 ms.
    waits = [pacer._local(0) for _ in range(25)]
    assert waits[:20] == [0.0] * 20
    assert waits[20:] == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])
    clock.now += 1.0  # a second later: the schedule fell behind, the burst is banked again
    assert pacer._local(0) == 0.0
    assert pacer._local(500_000) == 0.0  # a pause of 0.5 s …
    assert pacer._local(0) == pytest.approx(0.5)  # … holds the next slot back


async def test_a_worker_that_cannot_reach_redis_falls_back_for_a_while() -> None:
    gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    pacer = Pacer(gone, 100, timeout_s=0.5)
    try:
        assert await pacer._run(0) == 0.0  # Redis did not answer: paced locally, out of the burst
        assert pacer._local_until > 0  # and Redis is not asked again for LOCAL_FOR_S
        for _ in range(30):
            await pacer._run(0)  # local, at once (no timeout per send)
    finally:
        await gone.aclose()
