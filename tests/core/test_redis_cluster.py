"""The auto-pipelined client on a Redis Cluster (core.redis_cluster.ClusterPipeline), against a real local cluster:
routing by slot, one write per node per tick, MOVED and ASK followed, a failover ridden out, WAIT shared per tick."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis
from redis.exceptions import ConnectionError, ResponseError

from core.redis import AutoPipeline
from core.redis_cluster import ClusterPipeline, slot_of
from loadtest.cluster_servers import RedisClusterServers


def direct(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, single_connection_client=True)


def keys_on_each_master(cluster: RedisClusterServers, per_master: int = 5) -> dict[int, list[str]]:
    """``per_master`` keys held by each master: master port → keys."""
    found: dict[int, list[str]] = {port: [] for port in cluster.masters()}
    for n in itertools.count():
        key = f"eg:test:{n}"
        port = cluster.master_for_key(key)
        if len(found[port]) < per_master:
            found[port].append(key)
        if all(len(keys) == per_master for keys in found.values()):
            return found
    raise AssertionError("unreachable")


async def test_commands_go_to_their_slot_and_one_tick_is_one_write_per_node(
        redis_cluster: RedisClusterServers) -> None:
    client = await ClusterPipeline.connect(redis_cluster.url)
    try:
        by_master = keys_on_each_master(redis_cluster)
        every_key = [key for keys in by_master.values() for key in keys]
        before = client.batches_sent
        await asyncio.gather(*(client.set(key, key) for key in every_key))
        assert client.batches_sent - before == len(by_master)  # 15 commands, 3 writes
        for port, keys in by_master.items():
            assert [direct(port).get(key) for key in keys] == [key.encode() for key in keys]
        assert await asyncio.gather(*(client.get(key) for key in every_key)) == [k.encode() for k in every_key]
        # Keys of one hash tag share a node: a multi-key script runs there.
        tagged = ["eg:{exam:7}:a", "eg:{exam:7}:b"]
        assert await client.execute(b"EVAL", b"return redis.call('MSET', KEYS[1], 1, KEYS[2], 2)", 2, *tagged) == b"OK"
        assert direct(redis_cluster.master_for_key(tagged[0])).mget(tagged) == [b"1", b"2"]
        assert await client.ping()
    finally:
        await client.close()


async def test_scripts_are_loaded_on_every_master_and_packed_commands_need_a_key(
        redis_cluster: RedisClusterServers) -> None:
    client = await ClusterPipeline.connect(redis_cluster.url)
    try:
        sha = await client.script_load("return KEYS[1]")
        for port in redis_cluster.masters():
            assert direct(port).script_exists(sha) == [True]
        for keys in keys_on_each_master(redis_cluster, 1).values():
            assert await client.evalsha(sha, 1, keys[0]) == keys[0].encode()
        with pytest.raises(ValueError, match="needs its key"):
            client.send_packed(b"*1\r\n$4\r\nPING\r\n")
    finally:
        await client.close()


async def test_a_stale_map_is_corrected_by_moved(redis_cluster: RedisClusterServers) -> None:
    client = await ClusterPipeline.connect(redis_cluster.url)
    try:
        by_master = keys_on_each_master(redis_cluster, 1)
        (port_a, (key_a,)), (port_b, _) = list(by_master.items())[:2]
        slot = slot_of(key_a)
        client._slot_nodes[slot] = client._node("127.0.0.1", port_b)  # as if the slot had moved
        assert await client.set(key_a, "moved") is True
        assert client.redirections == 1
        assert direct(port_a).get(key_a) == b"moved"
        assert client._slot_nodes[slot] is client._node("127.0.0.1", port_a)
    finally:
        await client.close()


async def test_a_slot_being_migrated_is_followed_with_asking(redis_cluster: RedisClusterServers) -> None:
    client = await ClusterPipeline.connect(redis_cluster.url)
    by_master = keys_on_each_master(redis_cluster, 1)
    (source, (key,)), (target, _) = list(by_master.items())[:2]
    slot = slot_of(key)
    ids = {node.port: node.id for node in redis_cluster.cluster_nodes()}
    direct(source).delete(key)
    try:
        direct(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        direct(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        # The key is not on the source (never written): the source answers ASK, the target takes it after ASKING.
        assert await client.set(key, "asked") is True
        assert client.redirections == 1
        on_target = direct(target)
        on_target.execute_command("ASKING")
        assert on_target.get(key) == b"asked"
        on_target.execute_command("ASKING")
        on_target.delete(key)
    finally:
        for port in (source, target):
            direct(port).execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        await client.close()


async def test_a_killed_master_is_ridden_out_and_wait_is_shared_by_a_tick(redis_cluster: RedisClusterServers) -> None:
    client = await ClusterPipeline.connect(redis_cluster.url, timeout_ms=1000)
    plain = AutoPipeline(redis_cluster.url)
    try:
        key = "eg:{exam:1}:x"
        # Three writes and their WAITs in one tick: one WAIT is sent after them, every caller gets its answer.
        writes = [client.incr(key) for _ in range(3)]
        waits = [client.wait_replicas(key, 1, 1000) for _ in range(3)]
        assert waits[0] is waits[1] is waits[2]
        assert await asyncio.gather(*writes) == [1, 2, 3]
        assert await waits[0] == 1

        master = redis_cluster.master_for_key(key)
        redis_cluster.kill(master)
        errors: list[str] = []
        started = time.monotonic()
        recovered_after = None
        while time.monotonic() - started < 20:
            try:
                value = await client.incr(key)
            except (ConnectionError, ResponseError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                await asyncio.sleep(0.01)
                continue
            recovered_after = time.monotonic() - started
            break
        assert recovered_after is not None, f"never recovered: {errors[-5:]}"
        assert value == 4  # the WAITed writes survived on the promoted replica
        assert redis_cluster.master_for_key(key) != master
        # The promoted master has no replica yet: WAIT answers 0 (at once after the first), never blocks others.
        assert await client.wait_replicas(key, 1, 200) == 0
        quick = time.monotonic()
        assert await client.wait_replicas(key, 1, 200) == 0
        assert time.monotonic() - quick < 0.15
        assert await client.get(key) == b"4"
        print(f"recovered after {recovered_after:.2f} s; errors meanwhile: {len(errors)}")
    finally:
        await client.close()
        await plain.close()
