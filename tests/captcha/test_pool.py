"""The image pool against real Redis: refill to target, takes never served twice, answers single-use with a TTL."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from captcha import keys
from captcha.check import consume
from captcha.errors import CaptchaInvalid
from captcha.image import Drawn
from captcha.pool import (
    RefillCounters,
    TakeCounters,
    decode_entry,
    pool_size,
    pool_stats,
    preload_scripts,
    refill,
    take,
)
from core.redis import AutoPipeline


def tiny_draw(count: int) -> list[Drawn]:
    """Cheap stand-in images for tests about counting, not drawing."""
    return [Drawn(f"{n % 100_000:05d}", b"png-%d" % n) for n in range(count)]


async def test_refill_tops_up_to_target_in_batches(redis: aioredis.Redis, pipeline: AutoPipeline) -> None:
    calls: list[int] = []

    def draw(count: int) -> list[Drawn]:
        calls.append(count)
        return tiny_draw(count)

    counters = RefillCounters()
    assert await refill(redis, target=25, batch=10, draw=draw, inline=True, counters=counters) == 25
    assert calls == [10, 10, 5]
    assert await pool_size(pipeline) == 25

    await take(pipeline, answer_ttl_s=60)
    await take(pipeline, answer_ttl_s=60)
    assert await refill(redis, target=25, batch=10, draw=draw, inline=True, counters=counters) == 2
    assert await refill(redis, target=25, batch=10, draw=draw, inline=True, counters=counters) == 0
    assert await pool_size(pipeline) == 25
    assert (counters.refills, counters.added, counters.last_added) == (3, 27, 0)
    assert counters.last_rate_per_s > 0


async def test_entries_carry_random_ids_answers_and_real_pngs(redis: aioredis.Redis) -> None:
    await refill(redis, target=20, batch=20, inline=True)

    entries = [decode_entry(raw) for raw in await redis.lrange(keys.POOL, 0, -1)]
    ids = {image_id for image_id, _, _ in entries}
    assert len(ids) == 20 and all(keys.is_image_id(i) and len(i) == 22 for i in ids)
    assert all(len(answer) == 5 and answer.isdigit() for _, answer, _ in entries)
    assert all(png.startswith(b"\x89PNG") for _, _, png in entries)


async def test_refill_publishes_figures_for_metrics(redis: aioredis.Redis, pipeline: AutoPipeline) -> None:
    empty = await pool_stats(pipeline)
    assert empty.size == 0 and empty.target == 0 and empty.saturation == 0.0

    await refill(redis, target=40, batch=16, inline=True)
    await take(pipeline, answer_ttl_s=60)
    stats = await pool_stats(pipeline)

    assert (stats.size, stats.target, stats.added_total) == (39, 40, 40)
    assert stats.saturation == pytest.approx(39 / 40)
    assert stats.last_refill_rate_per_s > 0
    assert abs(stats.last_refill_at_s - time.time()) < 5


async def test_refill_in_a_thread_pool_keeps_the_loop_free(redis: aioredis.Redis) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        with ThreadPoolExecutor(2) as executor:
            added = await refill(redis, target=60, batch=10, executor=executor, concurrency=2)
    finally:
        task.cancel()
    assert added == 60
    assert ticks > 3


async def test_refill_in_a_process_pool(redis: aioredis.Redis, pipeline: AutoPipeline) -> None:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        added = await refill(redis, target=40, batch=10, executor=executor, concurrency=2)
    assert added == 40
    assert await pool_size(pipeline) == 40
    issued = await take(pipeline, answer_ttl_s=60)
    assert issued is not None and issued.png.startswith(b"\x89PNG")


async def test_concurrent_refills_stop_near_target(redis: aioredis.Redis, pipeline: AutoPipeline) -> None:
    added = await asyncio.gather(*(
        refill(redis, target=100, batch=10, draw=tiny_draw) for _ in range(4)
    ))
    size = await pool_size(pipeline)
    assert sum(added) == size
    assert 100 <= size <= 100 + 4 * 10


async def test_take_returns_image_and_arms_answer(redis: aioredis.Redis, pipeline: AutoPipeline) -> None:
    await refill(redis, target=3, batch=3, inline=True)
    first_id, first_answer, first_png = decode_entry((await redis.lrange(keys.POOL, 0, 0))[0])

    counters = TakeCounters()
    issued = await take(pipeline, answer_ttl_s=90, counters=counters)

    assert issued is not None
    assert (issued.id, issued.png, issued.expires_in_s) == (first_id, first_png, 90)
    assert issued.data_url() == "data:image/png;base64," + base64.b64encode(first_png).decode()
    assert await redis.get(keys.answer_key(issued.id)) == first_answer.encode()
    assert 88 <= await redis.ttl(keys.answer_key(issued.id)) <= 90
    assert counters == TakeCounters(taken=1, empty=0)


async def test_empty_pool_gives_none(pipeline: AutoPipeline) -> None:
    counters = TakeCounters()
    assert await take(pipeline, answer_ttl_s=60, counters=counters) is None
    assert counters == TakeCounters(taken=0, empty=1)


async def test_200_concurrent_takes_never_serve_an_image_twice(
    redis: aioredis.Redis, pipeline: AutoPipeline, other_pipeline: AutoPipeline
) -> None:
    await refill(redis, target=150, batch=50, inline=True)
    await preload_scripts(pipeline)
    clients = [pipeline, other_pipeline]

    results = await asyncio.gather(*(take(clients[n % 2], answer_ttl_s=60) for n in range(200)))

    issued = [r for r in results if r is not None]
    assert len(issued) == 150 and results.count(None) == 50
    assert len({i.id for i in issued}) == 150
    assert len({i.png for i in issued}) == 150
    assert await pool_size(pipeline) == 0
    assert len(await redis.keys(keys.ANSWER_PREFIX + "*")) == 150


async def test_answer_expires_after_its_ttl(redis: aioredis.Redis, pipeline: AutoPipeline, hmac_key: bytes) -> None:
    await refill(redis, target=1, batch=1, inline=True)
    _, answer, _ = decode_entry((await redis.lrange(keys.POOL, 0, 0))[0])
    issued = await take(pipeline, answer_ttl_s=1)
    assert issued is not None

    await asyncio.sleep(1.2)

    with pytest.raises(CaptchaInvalid) as caught:
        await consume(pipeline, {"kind": "image", "id": issued.id, "answer": answer}, mode="image", hmac_key=hmac_key)
    assert caught.value.reason == "unknown"


@pytest.mark.parametrize(("target", "batch", "concurrency"), [(-1, 1, 1), (1, 0, 1), (1, 1, 0)])
async def test_refill_rejects_bad_settings(redis: aioredis.Redis, target: int, batch: int, concurrency: int) -> None:
    with pytest.raises(ValueError):
        await refill(redis, target=target, batch=batch, concurrency=concurrency)


async def test_take_rejects_a_ttl_below_one_second(pipeline: AutoPipeline) -> None:
    with pytest.raises(ValueError):
        await take(pipeline, answer_ttl_s=0)
