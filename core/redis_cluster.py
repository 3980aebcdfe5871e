"""The hot-path Redis client on Redis Cluster: one auto-pipeline per node, each command routed by its slot.

``ClusterPipeline`` answers the calls of ``AutoPipeline`` (``submit``, ``execute``, ``evalsha``,
``send_packed``…), so nothing above it knows which it talks to. Each node gets an ``AutoPipeline``
of its own: what one event-loop tick sends to a node still goes out in one write, and the node's
replies resolve the commands in order. A command goes to the master of its first key's slot
(``CLUSTER SLOTS``, read from any node the client knows); keys one command touches must share a
slot, which examgate's keys do by their hash tags (``docs/design.md``, "Redis Cluster").

Redirections are followed as the cluster specification says: ``MOVED`` updates the slot at once
and refreshes the whole map in the background; ``ASK`` sends ``ASKING`` and the command, in one
write, to the node named. A command that surely never reached a node (no connection could be
opened to it: ``core.redis.UNSENT``), or that the cluster refused for now (``TRYAGAIN``,
``CLUSTERDOWN``, ``READONLY`` from a master turned replica), is sent again once the map is
refreshed, until its time budget is spent. A command lost *with* its connection is not: it may
have run, and running a seat hold or a counter twice is worse than an error its caller can handle.

Written here rather than taken from redis-py's ``RedisCluster`` because that client sends each
command (or each explicit pipeline) on its own, with a Task and a connection from a pool per call:
the auto-pipelining this gateway's peak rates depend on is exactly what it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ClusterDownError, ConnectionError, DataError, ReadOnlyError, RedisError, ResponseError

from core.redis import UNSENT, Arg, AutoPipeline, Endpoint, abandon, pack_command

__all__ = ["ClusterPipeline", "is_cluster", "pipeline", "redis_py", "slot_of"]

log = logging.getLogger("examgate.redis")

_ASKING = pack_command((b"ASKING",))
_SCRIPT_COMMANDS = frozenset({b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL", b"FCALL_RO"})
# Commands without a key: sent to any master (they answer the same everywhere, or are per connection).
_KEYLESS = frozenset({b"PING", b"TIME", b"ECHO", b"INFO", b"CLIENT", b"CLUSTER", b"DBSIZE", b"WAIT", b"ASKING"})
# Waits before sending a refused command again, growing while the cluster is still settling.
_RETRY_DELAYS_S = (0.0, 0.01, 0.02, 0.05, 0.1, 0.1, 0.2, 0.2, 0.25)
_TRANSIENT_PREFIXES = ("TRYAGAIN", "CLUSTERDOWN")


def _bytes(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode()


def slot_of(key: Arg) -> int:
    """The cluster slot of a key (its hash tag's, when it has one)."""
    return key_slot(_bytes(key))


def _command_key(args: tuple[Arg, ...]) -> Arg | None:
    """The key that decides where a command goes: the first key, or None for a keyless command."""
    name = _bytes(args[0]).upper()
    if name in _SCRIPT_COMMANDS:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in _KEYLESS or name == b"SCRIPT" or len(args) < 2:
        return None
    if name in (b"XREAD", b"XREADGROUP"):
        raise DataError(f"{name.decode()} is not supported by the auto-pipelined cluster client")
    return args[1]


_MAX_ATTEMPTS = 2 * len(_RETRY_DELAYS_S)


class _Retry:
    """A command being redirected or sent again: what it is, where it goes, how long it may still try."""

    __slots__ = ("packed", "slot", "attempt", "deadline")

    def __init__(self, packed: bytes, slot: int | None, deadline: float) -> None:
        self.packed = packed
        self.slot = slot
        self.attempt = 0
        self.deadline = deadline


def _parse_command(packed: bytes) -> list[bytes]:
    """The arguments of an encoded command (a RESP array of bulk strings)."""
    reader = hiredis.Reader()
    reader.feed(packed)
    args = reader.gets()
    if not isinstance(args, list):
        raise DataError("not an encoded Redis command")
    return args


class ClusterPipeline(AutoPipeline):
    """``AutoPipeline`` over a Redis Cluster: a pipeline per master, commands routed by slot."""

    def __init__(
        self,
        url: str,
        *,
        connections: int = 2,
        timeout_ms: int = 1000,
        client_name: str | None = None,
    ) -> None:
        super().__init__(url, connections=connections, timeout_ms=timeout_ms, client_name=client_name)
        if self.endpoint.path is not None or self.endpoint.db != 0:
            raise ValueError("a Redis Cluster is reached over TCP and has only database 0")
        self._connections = connections
        self._nodes: dict[tuple[str, int], AutoPipeline] = {}
        # The master of each slot; None until the first map is read (commands then wait for it).
        self._slot_nodes: list[AutoPipeline | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._seeds: list[tuple[str, int]] = [(self.endpoint.host, self.endpoint.port)]
        self._refreshing: asyncio.Task[None] | None = None
        self._mapped = False
        # Commands being redirected or sent again, until their future is done.
        self._attempts: dict[asyncio.Future[Any], _Retry] = {}
        self.redirections = 0
        self.refreshes = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        connections: int = 2,
        timeout_ms: int = 1000,
        client_name: str | None = None,
    ) -> ClusterPipeline:
        """Read the cluster's map now; raise ``ConnectionError`` if no node of it answers."""
        client = cls(url, connections=connections, timeout_ms=timeout_ms, client_name=client_name)
        try:
            await client.refresh()
        except BaseException:
            await client.close()
            raise
        return client

    # -- the map -------------------------------------------------------------------------------------

    def _node(self, host: str, port: int) -> AutoPipeline:
        node = self._nodes.get((host, port))
        if node is None:
            endpoint = self.endpoint
            node = AutoPipeline(
                _node_url(endpoint, host, port),
                connections=self._connections, timeout_ms=self.timeout_ms, client_name=self.client_name,
            )
            node.stats = self
            node.redirect = self._redirected
            self._nodes[(host, port)] = node
        return node

    async def refresh(self) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers and route by it from now on."""
        candidates = list(dict.fromkeys([*self._seeds, *self._nodes]))
        last: BaseException | None = None
        for host, port in candidates:
            try:
                reply = await self._node(host, port).execute(b"CLUSTER", b"SLOTS")
            except RedisError as exc:
                last = exc
                continue
            if not reply:
                last = ClusterDownError(f"{host}:{port} knows no slot")
                continue
            self._apply_map(reply, host)
            return
        raise ConnectionError(f"no node of the Redis Cluster answered CLUSTER SLOTS: {last}")

    def _apply_map(self, reply: list[Any], asked: str) -> None:
        table: list[AutoPipeline | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        masters: set[tuple[str, int]] = set()
        known: list[tuple[str, int]] = []
        for entry in reply:
            start, end, master, *replicas = entry
            host = (master[0] or b"").decode() or asked
            if host == "?":
                continue
            address = (host, int(master[1]))
            masters.add(address)
            node = self._node(*address)
            table[int(start):int(end) + 1] = [node] * (int(end) - int(start) + 1)
            known.append(address)
            known.extend(((r[0] or b"").decode() or asked, int(r[1])) for r in replicas)
        self._slot_nodes = table
        self._seeds = list(dict.fromkeys([*known, *self._seeds]))
        self._mapped = True
        self.refreshes += 1
        # Masters no longer in the map (dead, or replicas now) keep their pipelines: a node that comes
        # back is reused, and the few connections of a stale one cost nothing until it is used.
        log.debug("cluster map: %d masters %s", len(masters), sorted(masters))

    def _refresh_soon(self) -> asyncio.Task[None]:
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = self._get_loop().create_task(self._refresh_quietly())
        return task

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(RedisError):
            await self.refresh()

    # -- routing -------------------------------------------------------------------------------------

    def _submit(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        if self._closed:
            raise ConnectionError("Redis client closed")
        try:
            packed = pack_command(args)
        except TypeError as exc:
            raise DataError(f"invalid Redis command argument in {args[:1]!r}: {exc}") from exc
        if args[0] in (b"SCRIPT", "SCRIPT"):
            return self._get_loop().create_task(self._on_every_master(packed))
        key = _command_key(args)
        return self._route(packed, None if key is None else slot_of(key))

    def send_packed(self, packed: bytes, key: Arg | None = None) -> asyncio.Future[Any]:
        """``AutoPipeline.send_packed``; on a cluster the caller names the command's (first) key."""
        if self._closed:
            raise ConnectionError("Redis client closed")
        if key is None:
            raise ValueError("a pre-encoded command on a Redis Cluster needs its key to be routed")
        return self._route(packed, slot_of(key))

    def write_packed(self, packed: bytes, key: Arg | None = None) -> asyncio.Future[Any]:
        """``send_packed``, written now with what this tick has queued for the same node."""
        future = self.send_packed(packed, key)
        node = self._slot_nodes[slot_of(key)] if key is not None else None
        if node is not None:
            node._flush()
        return future

    def wait_replicas(self, key: Arg, replicas: int, timeout_ms: int) -> asyncio.Future[int]:
        """``AutoPipeline.wait_replicas`` on the node of ``key``: never redirected nor sent again (a ``WAIT``
        on another connection than the writes' would confirm nothing)."""
        if self._closed:
            raise ConnectionError("Redis client closed")
        node = self._slot_nodes[slot_of(key)]
        if node is None:
            raise ClusterDownError("the cluster's map is not read yet")
        return node.wait_replicas(key, replicas, timeout_ms)

    def _route(self, packed: bytes, slot: int | None) -> asyncio.Future[Any]:
        node = self._target(slot)
        if node is not None:
            return node.send_packed(packed)  # the hot path: straight into the node's batch
        loop = self._get_loop()
        fut = loop.create_future()
        # No map yet (or nobody serves the slot): read it, then send.
        self._attempts[fut] = _Retry(packed, slot, loop.time() + self._timeout_s)
        fut.add_done_callback(self._forget)
        self._refresh_soon()
        error = ClusterDownError(f"slot {slot} is served by no node")
        if not self._later(fut, error):
            fut.set_exception(error)
        return fut

    def _target(self, slot: int | None) -> AutoPipeline | None:
        if slot is None:
            for node in self._slot_nodes[::4096]:
                if node is not None:
                    return node
            return None
        return self._slot_nodes[slot]

    def _redirected(self, fut: asyncio.Future[Any], packed: bytes, error: RedisError) -> bool:
        """A node's hook: take over a command the cluster redirected, refused for now, or that was never sent."""
        if self._closed or fut.done():
            return False
        message = str(error)
        moved = message.startswith("MOVED ")
        ask = message.startswith("ASK ")
        if not (moved or ask or isinstance(error, (*UNSENT, ReadOnlyError))
                or (type(error) is ResponseError and message.startswith(_TRANSIENT_PREFIXES))):
            return False
        retry = self._attempts.get(fut)
        if retry is None:
            loop = self._get_loop()
            key = _command_key(tuple(_parse_command(packed)))
            retry = self._attempts[fut] = _Retry(packed, None if key is None else slot_of(key),
                                                 loop.time() + self._timeout_s)
            fut.add_done_callback(self._forget)
        retry.attempt += 1
        if retry.attempt > _MAX_ATTEMPTS:
            return False
        if moved or ask:
            self.redirections += 1
            _, slot_text, address = message.split(" ", 2)
            host, _, port = address.rpartition(":")
            node = self._node(host or self.endpoint.host, int(port))
            if moved:
                self._slot_nodes[int(slot_text)] = node
                self._refresh_soon()
            else:
                node.send_packed(_ASKING).add_done_callback(abandon)
            node.enqueue_future(packed, fut)
            return True
        self._refresh_soon()
        return self._later(fut, error)

    def _later(self, fut: asyncio.Future[Any], error: RedisError) -> bool:
        """Send the command again after a pause, if its time budget allows; False when it does not."""
        retry = self._attempts[fut]
        loop = self._get_loop()
        delay = _RETRY_DELAYS_S[min(retry.attempt, len(_RETRY_DELAYS_S) - 1)]
        if loop.time() + delay >= retry.deadline:
            return False
        loop.call_later(delay, self._again, fut, error)
        return True

    def _again(self, fut: asyncio.Future[Any], error: RedisError) -> None:
        retry = self._attempts.get(fut)
        if retry is None or fut.done():
            return
        if self._closed:
            fut.set_exception(ConnectionError("Redis client closed"))
            return
        node = self._target(retry.slot)
        if node is None:
            retry.attempt += 1
            if retry.attempt > _MAX_ATTEMPTS or not self._later(fut, error):
                fut.set_exception(error)
            self._refresh_soon()
            return
        node.enqueue_future(retry.packed, fut)

    def _forget(self, fut: asyncio.Future[Any]) -> None:
        self._attempts.pop(fut, None)

    async def _on_every_master(self, packed: bytes) -> Any:
        """Send one command to every master (SCRIPT LOAD: each node has its own script cache)."""
        if not self._mapped:
            await self.refresh()
        masters = list(dict.fromkeys(node for node in self._slot_nodes if node is not None))
        replies = await asyncio.gather(*(node.send_packed(packed) for node in masters))
        return replies[0]

    # -- the rest of AutoPipeline ----------------------------------------------------------------------

    def nodes(self) -> Iterable[AutoPipeline]:
        """The per-node pipelines opened so far."""
        return list(self._nodes.values())

    @property
    def in_flight(self) -> int:
        return sum(node.in_flight for node in self._nodes.values())

    async def close(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        await asyncio.gather(*(node.close() for node in self._nodes.values()))

    async def script_load(self, source: str) -> str:
        """SCRIPT LOAD on every master; the SHA1 as text."""
        return (await self._submit((b"SCRIPT", b"LOAD", source))).decode()

    def random_master(self) -> AutoPipeline | None:
        """Any master's pipeline (None before the map is read)."""
        masters = list(dict.fromkeys(node for node in self._slot_nodes if node is not None))
        return random.choice(masters) if masters else None


def _node_url(entry: Endpoint, host: str, port: int) -> str:
    from urllib.parse import quote

    scheme = "rediss" if entry.tls else "redis"
    auth = ""
    if entry.password is not None:
        user = quote(entry.username or "", safe="")
        auth = f"{user}:{quote(entry.password, safe='')}@"
    where = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{where}:{port}/0"



def pipeline(url: str, *, cluster: bool, connections: int = 2, timeout_ms: int = 1000,
             client_name: str | None = None) -> AutoPipeline:
    """The hot-path client of a deployment: ``ClusterPipeline`` on a Redis Cluster, else ``AutoPipeline``."""
    kind = ClusterPipeline if cluster else AutoPipeline
    return kind(url, connections=connections, timeout_ms=timeout_ms, client_name=client_name)


def redis_py(url: str, *, cluster: bool, **options: Any) -> aioredis.Redis:
    """The redis-py client of a deployment (everything off the hot path): ``RedisCluster`` on a cluster.

    Typed as ``Redis``: the code off the hot path calls only commands both clients have, with keys of
    one slot per command (multi-key ``DEL``/``EXISTS``/``MGET`` included: ``RedisCluster`` splits those).
    """
    if cluster:
        return cast("aioredis.Redis", RedisCluster.from_url(url, **options))
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: object) -> bool:
    """True for a redis-py client of a Redis Cluster."""
    return isinstance(client, RedisCluster)
