"""A value computed at most once per interval per process, shared by every caller meanwhile.

Endpoints that cost the process something (a ``/metrics`` render blocks the event loop for
~12 ms; a ``/readyz`` verdict is a PostgreSQL round trip) answer from the last result while
it is fresh; when it is stale, the first caller starts one computation and everyone who
arrives before it ends awaits that same one. A flood then costs one computation per interval.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """The result of ``compute`` reused for ``ttl_s``; concurrent callers share one computation."""

    __slots__ = ("ttl_s", "_clock", "_value", "_done_at", "_pending")

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._value: T | None = None
        self._done_at = -math.inf
        self._pending: asyncio.Future[T] | None = None

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        """The fresh result, or the one being computed, or a new computation's."""
        if self._clock() - self._done_at < self.ttl_s:
            return self._value  # type: ignore[return-value]
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._refresh(compute))
        # Shielded: a caller that gives up (a client gone) must not cancel the others' computation.
        return await asyncio.shield(pending)

    async def _refresh(self, compute: Callable[[], Awaitable[T]]) -> T:
        try:
            value = await compute()
            self._value, self._done_at = value, self._clock()
            return value
        finally:
            self._pending = None
