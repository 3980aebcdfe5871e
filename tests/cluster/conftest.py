"""What the suites run on the local Redis Cluster share: the settings of their processes and a client of the cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from loadtest.cluster_servers import RedisClusterServers

# Gateways and workers on the cluster answer a seat hold once a replica has it.
CLUSTER_ENV = {"EXAMGATE_REDIS_CLUSTER": "true", "EXAMGATE_HOLD_REPLICAS": "1", "EXAMGATE_HOLD_REPLICA_WAIT_MS": "500"}


@pytest.fixture
async def store(redis_cluster: RedisClusterServers) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client of the module's cluster (typed as ``Redis``, as the product's code holds it)."""
    client = cast("aioredis.Redis", RedisCluster.from_url(redis_cluster.url))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for many candidates at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        yield session
