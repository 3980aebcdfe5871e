"""The local Redis Cluster (loadtest.cluster_servers.RedisClusterServers): three masters and a replica of each over
all 16384 slots, a redis-py cluster client on it, a master killed and its replica taking over."""

from __future__ import annotations

import asyncio
import itertools

import redis
from redis.asyncio.cluster import RedisCluster

from loadtest.cluster_servers import CLUSTER_SLOTS, RedisClusterServers


def direct(port: int) -> redis.Redis:
    """A plain client on one node (no cluster routing: a key elsewhere answers MOVED)."""
    return redis.Redis(host="127.0.0.1", port=port, single_connection_client=True)


def key_on_each_master(cluster: RedisClusterServers) -> dict[int, str]:
    """A key held by each master: master port → key."""
    masters = cluster.masters()
    keys: dict[int, str] = {}
    for n in itertools.count():
        key = f"local-cluster:{n}"
        keys.setdefault(cluster.master_for_key(key), key)
        if len(keys) == len(masters):
            return keys
    raise AssertionError("unreachable")


def test_three_masters_and_a_replica_of_each_hold_every_slot(redis_cluster: RedisClusterServers) -> None:
    nodes = redis_cluster.cluster_nodes()
    masters = [node for node in nodes if node.is_master]
    replicas = [node for node in nodes if not node.is_master]

    assert len(redis_cluster.ports) == 6
    assert redis_cluster.masters() == redis_cluster.ports[:3] == [node.port for node in sorted(
        masters, key=lambda node: redis_cluster.ports.index(node.port))]
    assert redis_cluster.replicas() == redis_cluster.ports[3:]
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"
    assert sorted(node.master_id for node in replicas) == sorted(node.id for node in masters)  # one each
    ranges = sorted(r for node in masters for r in node.slots)
    assert ranges[0][0] == 0 and ranges[-1][1] == CLUSTER_SLOTS - 1
    assert all(last + 1 == first for (_, last), (first, _) in itertools.pairwise(ranges))
    assert {redis_cluster.master_of_slot(slot) for slot in (0, CLUSTER_SLOTS // 2, CLUSTER_SLOTS - 1)} == set(
        redis_cluster.masters())
    for port in redis_cluster.ports:
        with direct(port) as node:
            assert node.cluster("info")["cluster_state"] == "ok"
            assert node.cluster("info")["cluster_slots_ok"] == str(CLUSTER_SLOTS)
            if port in redis_cluster.replicas():
                assert node.info("replication")["master_link_status"] == "up"


async def test_a_cluster_client_sets_and_gets_on_every_master(redis_cluster: RedisClusterServers) -> None:
    keys = key_on_each_master(redis_cluster)
    assert sorted(keys) == sorted(redis_cluster.masters())

    client = RedisCluster.from_url(redis_cluster.url)
    try:
        for port, key in keys.items():
            await client.set(key, f"on {port}")
        assert [await client.get(key) for key in keys.values()] == [f"on {port}".encode() for port in keys]
    finally:
        await client.aclose()
    for port, key in keys.items():  # each landed on its slot's master
        with direct(port) as master:
            assert master.get(key) == f"on {port}".encode()


async def test_a_killed_master_fails_over_to_its_replica_and_comes_back_as_one(
        redis_cluster: RedisClusterServers) -> None:
    master = redis_cluster.masters()[0]  # the entry point: a fresh client afterwards has to start elsewhere
    key = key_on_each_master(redis_cluster)[master]
    assert redis_cluster.url.endswith(f":{master}/0")
    (replica,) = (node.port for node in redis_cluster.cluster_nodes() if node.master_id == redis_cluster.ids[master])
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        await client.set(key, "kept")
    finally:
        await client.aclose()
    with direct(master) as node:
        assert node.execute_command("WAIT", 1, 1000) == 1  # the replica has the write

    redis_cluster.kill(master)
    await asyncio.to_thread(redis_cluster.wait_for_failover, master)

    assert redis_cluster.master_for_key(key) == replica
    assert replica in redis_cluster.masters() and master not in redis_cluster.masters() + redis_cluster.replicas()
    assert not redis_cluster.url.endswith(f":{master}/0")
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        assert await client.get(key) == b"kept"
    finally:
        await client.aclose()

    await asyncio.to_thread(redis_cluster.restart, master)

    assert master in redis_cluster.replicas()
    (back,) = (node for node in redis_cluster.cluster_nodes() if node.port == master)
    assert back.master_id == redis_cluster.ids[replica]
    with direct(master) as node:  # synced from its new master
        node.execute_command("READONLY")
        assert node.get(key) == b"kept"
