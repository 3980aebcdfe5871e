"""One send rate shared by every delivery worker, and a pause for all of them when the provider throttles us.

The provider's limit is the account's, whatever the number of workers, so the rate is kept in
Redis (``pace.lua``: virtual scheduling, each call takes the next slot and says how long to wait
for it). When Redis does not answer, each worker paces itself at the whole rate for
``LOCAL_FOR_S`` before it asks Redis again (one timeout per send would be a rate of its own),
which is what one worker alone would do; the provider's throttling still has the last word.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from core.redis import REDIS_DOWN
from core.scripts import Script, load_scripts
from messaging import keys

log = logging.getLogger("examgate.sms")

BURST_S = 0.2  # idle time banked: a worker after a pause may send this much of the rate at once
LOCAL_FOR_S = 5.0  # after Redis failed to answer, pace locally this long before asking it again


def _script() -> Script:
    return load_scripts("messaging")["pace"]


class Pacer:
    """Slots at ``rate_per_s`` shared through Redis (one per process instance, any number of workers)."""

    def __init__(self, redis: aioredis.Redis, rate_per_s: float, *, timeout_s: float = 1.0) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.redis = redis
        self.interval_us = 1_000_000 / rate_per_s
        self.burst_us = BURST_S * 1_000_000
        self.timeout_s = timeout_s
        self._script = _script()
        self._local_next = 0.0  # the fallback's own schedule (monotonic seconds)
        self._local_until = 0.0  # pace locally until then: Redis did not answer

    async def _run(self, pause_us: float) -> float:
        """The wait in seconds from Redis, or from the local schedule when Redis does not answer."""
        if time.monotonic() >= self._local_until:
            try:
                async with asyncio.timeout(self.timeout_s):
                    waited = await self._script.run(
                        self.redis, [keys.SEND_SLOT], [f"{self.interval_us:.3f}", f"{self.burst_us:.0f}",
                                                       f"{pause_us:.0f}"])
                return int(waited) / 1_000_000
            except REDIS_DOWN as exc:
                log.warning("send pacing without Redis for %g s (each worker at the whole rate): %r", LOCAL_FOR_S, exc)
                self._local_until = time.monotonic() + LOCAL_FOR_S
        return self._local(pause_us)

    def _local(self, pause_us: float) -> float:
        now = time.monotonic()
        if pause_us > 0:
            self._local_next = max(self._local_next, now + pause_us / 1_000_000)
            return 0.0
        slot = max(self._local_next, now - self.burst_us / 1_000_000)
        self._local_next = slot + self.interval_us / 1_000_000
        return max(0.0, slot - now)

    async def take(self) -> None:
        """Wait for the next send slot."""
        wait_s = await self._run(0)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def pause(self, seconds: float) -> None:
        """Hold every worker's next slot back ``seconds`` from now."""
        await self._run(max(1.0, seconds * 1_000_000))
