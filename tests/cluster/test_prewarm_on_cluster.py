"""The prewarm's bulk write on a Redis Cluster: each node's share of the buckets goes to that node."""

from __future__ import annotations

from typing import cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from loadtest.cluster_servers import RedisClusterServers
from lookups.prewarm import write_hashes


async def test_a_fresh_client_writes_every_bucket_on_its_own_node(redis_cluster: RedisClusterServers) -> None:
    # A client that has sent nothing yet has no slot map: the write reads it first.
    client = cast("aioredis.Redis", RedisCluster.from_url(redis_cluster.url))
    try:
        hashes = [(f"eg:lk:9:{n}", [f"f{n}", f"v{n}", "g", "w"]) for n in range(300)]
        await write_hashes(client, hashes)
    finally:
        await client.aclose()
    nodes = set()
    for key, _ in hashes:
        port = redis_cluster.master_for_key(key)
        nodes.add(port)
        with redis.Redis(host="127.0.0.1", port=port) as direct:
            number = key.rpartition(":")[2]
            assert direct.hgetall(key) == {f"f{number}".encode(): f"v{number}".encode(), b"g": b"w"}
    assert nodes == set(redis_cluster.masters())  # the buckets are spread over every master
