"""The image pool: captchas drawn ahead of time by the worker, each handed out once.

The worker calls ``refill`` to top the Redis list up to a target, drawing in batches off
the event loop (measured on 2 cores: ~370 images/s drawn inline, ~520/s in 2 threads,
~800/s in 2 processes; Pillow holds the GIL for part of each draw). A request calls
``take``: one ``take.lua`` call pops the oldest entry and arms its answer under a per-id
key with a TTL, so an image is never served twice and its answer is good for one check
within ``answer_ttl_s``. Entries are ~2 KB, so a pool of 10,000 holds ~20 MB of Redis.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from captcha import keys
from captcha.image import Drawn, draw_batch
from core.redis import AutoPipeline
from core.scripts import Script, load_scripts, preload

__all__ = [
    "Issued", "PoolStats", "RefillCounters", "TakeCounters",
    "decode_entry", "encode_entry", "new_image_id", "pool_size", "pool_stats", "preload_scripts", "refill", "take",
]

DrawBatch = Callable[[int], Sequence[Drawn]]


class Issued(NamedTuple):
    """An image handed to one client: its id, the PNG and how long its answer is valid."""

    id: str
    png: bytes
    expires_in_s: int

    def data_url(self) -> str:
        """The PNG as a ``data:image/png;base64,…`` URL, as the API returns it."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


class PoolStats(NamedTuple):
    """Pool figures for metrics and the admin stats: size now and the worker's last refill."""

    size: int
    target: int
    added_total: int
    last_refill_at_s: float
    last_refill_rate_per_s: float

    @property
    def saturation(self) -> float:
        """Size as a fraction of the worker's target (0 when no target is known)."""
        return self.size / self.target if self.target > 0 else 0.0


@dataclass
class TakeCounters:
    """What one process's ``take`` calls did; pass the same object to every call."""

    taken: int = 0
    empty: int = 0


@dataclass
class RefillCounters:
    """What one worker's ``refill`` calls did; pass the same object to every call."""

    refills: int = 0
    added: int = 0
    busy_s: float = 0.0
    last_added: int = 0
    last_rate_per_s: float = 0.0


@lru_cache(maxsize=1)
def _take_script() -> Script:
    return load_scripts("captcha")["take"]


async def preload_scripts(client: AutoPipeline | aioredis.Redis) -> None:
    """SCRIPT LOAD the pool's script, so the first take at peak skips the NOSCRIPT round trip."""
    await preload(client, [_take_script()])


def new_image_id() -> str:
    """A fresh image id: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def encode_entry(image_id: str, answer: str, png: bytes) -> bytes:
    """One pool entry as ``take.lua`` reads it: ``<id>\\n<answer>\\n<png>``."""
    if not keys.is_image_id(image_id) or not answer.isascii() or not answer.isdigit():
        raise ValueError("image id must be URL-safe and the answer ASCII digits")
    return b"%s\n%s\n%s" % (image_id.encode(), answer.encode(), png)


def decode_entry(entry: bytes) -> tuple[str, str, bytes]:
    """``(id, answer, png)`` of a pool entry."""
    image_id, answer, png = entry.split(b"\n", 2)
    return image_id.decode("ascii"), answer.decode("ascii"), png


async def take(client: AutoPipeline, *, answer_ttl_s: int, counters: TakeCounters | None = None) -> Issued | None:
    """Pop one image and arm its answer for ``answer_ttl_s``, in one round trip; None when the pool is empty."""
    if answer_ttl_s < 1:
        raise ValueError("answer_ttl_s must be at least 1")
    entry = await _take_script().run(client, (keys.POOL,), (keys.ANSWER_PREFIX, answer_ttl_s))
    if entry is None:
        if counters is not None:
            counters.empty += 1
        return None
    if counters is not None:
        counters.taken += 1
    image_id, _, png = entry.split(b"\n", 2)
    return Issued(image_id.decode("ascii"), png, answer_ttl_s)


async def pool_size(client: AutoPipeline) -> int:
    """How many images are waiting in the pool (LLEN)."""
    return await client.execute("LLEN", keys.POOL)


async def pool_stats(client: AutoPipeline) -> PoolStats:
    """Pool size and the worker's last refill figures, in one batch."""
    size, flat = await asyncio.gather(client.execute("LLEN", keys.POOL), client.execute("HGETALL", keys.POOL_STATS))
    fields = dict(zip(flat[::2], flat[1::2], strict=True))

    def number(name: bytes) -> float:
        try:
            return float(fields.get(name, 0))
        except ValueError:
            return 0.0

    return PoolStats(size, int(number(b"target")), int(number(b"added_total")),
                     number(b"last_refill_at_s"), number(b"last_refill_rate_per_s"))


async def _draw(draw: DrawBatch, count: int, executor: Executor | None, inline: bool) -> Sequence[Drawn]:
    if inline:
        return draw(count)
    return await asyncio.get_running_loop().run_in_executor(executor, draw, count)


async def refill(
    redis: aioredis.Redis,
    *,
    target: int,
    batch: int,
    draw: DrawBatch = draw_batch,
    executor: Executor | None = None,
    concurrency: int = 1,
    inline: bool = False,
    counters: RefillCounters | None = None,
) -> int:
    """Top the pool up to ``target`` images, drawing ``batch`` at a time; the number added.

    Drawing runs in ``executor`` (None: the loop's default thread pool), ``concurrency``
    batches at once (give a process pool as many workers); ``inline=True`` draws on the
    loop itself (tests, one-off tools). Each batch is pushed as soon as it is drawn and the
    next one started in its place, so no drawer waits for a slower one and a draining pool
    gets images back a batch at a time. Several refillers may overshoot ``target`` by at
    most ``batch × concurrency`` each; each RPUSH's reply stops a refill the others filled.
    """
    if target < 0 or batch < 1 or concurrency < 1:
        raise ValueError("target must be ≥ 0, batch and concurrency ≥ 1")
    started = time.perf_counter()
    missing = target - await redis.llen(keys.POOL)
    added = 0
    drawing: dict[asyncio.Future[Sequence[Drawn]], int] = {}
    try:
        while True:
            while len(drawing) < concurrency and missing - sum(drawing.values()) > 0:
                count = min(batch, missing - sum(drawing.values()))
                drawing[asyncio.ensure_future(_draw(draw, count, executor, inline))] = count
            if not drawing:
                break
            done, _ = await asyncio.wait(drawing, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                missing -= drawing.pop(future)
                entries = [encode_entry(new_image_id(), item.answer, item.png) for item in future.result()]
                if entries:
                    # What is still being drawn counts as missing in both figures.
                    missing = min(missing, target - await redis.rpush(keys.POOL, *entries))
                    added += len(entries)
    finally:
        for future in drawing:
            future.cancel()
        await asyncio.gather(*drawing, return_exceptions=True)
    elapsed_s = time.perf_counter() - started
    rate_per_s = added / elapsed_s if added and elapsed_s > 0 else 0.0
    await _record(redis, target=target, added=added, rate_per_s=rate_per_s)
    if counters is not None:
        counters.refills += 1
        counters.added += added
        counters.busy_s += elapsed_s
        counters.last_added = added
        if added:
            counters.last_rate_per_s = rate_per_s
    return added


async def _record(redis: aioredis.Redis, *, target: int, added: int, rate_per_s: float) -> None:
    """Publish the refill figures in Redis, where every gateway process's metrics can read them."""
    mapping: dict[FieldT, EncodableT] = {"target": target, "last_refill_at_s": round(time.time(), 3)}
    if added:
        mapping["last_refill_rate_per_s"] = round(rate_per_s, 1)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.POOL_STATS, mapping=mapping)
        pipe.hincrby(keys.POOL_STATS, "added_total", added)
        await pipe.execute()
