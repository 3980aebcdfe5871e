"""Fixtures of the rate-limiter tests: an AutoPipeline on the test db, a test-owned redis-server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from core.redis import AutoPipeline
from loadtest.processes import RedisServer, start_redis


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the flushed test database."""
    client = AutoPipeline(redis_url, connections=2, timeout_ms=1000)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server owned by this test (free to stop, hang and restart), removed afterwards."""
    owned = start_redis()
    try:
        yield owned
    finally:
        owned.stop()
        shutil.rmtree(owned.dir, ignore_errors=True)
