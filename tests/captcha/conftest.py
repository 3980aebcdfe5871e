"""Fixtures of the captcha tests: AutoPipelines on the flushed test database, a PoW key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.redis import AutoPipeline

HMAC_KEY = b"test-hmac-key-0123456789abcdef"


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the flushed test database."""
    client = AutoPipeline(redis_url, connections=2, timeout_ms=2000)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def other_pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """A second, independent AutoPipeline (another gateway process) on the same database."""
    client = AutoPipeline(redis_url, connections=1, timeout_ms=2000)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def hmac_key() -> bytes:
    """The proof-of-work HMAC key of the tests."""
    return HMAC_KEY
