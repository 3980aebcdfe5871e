"""The auto-pipelined Redis client against real Redis: batching, FIFO replies, errors, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis import AutoPipeline, Endpoint, parse_url


@pytest.fixture
async def pipeline(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """An AutoPipeline on the (flushed) test database."""
    client = await AutoPipeline.connect(redis_url, connections=2)
    try:
        yield client
    finally:
        await client.close()


class _CountingTransport:
    """Wraps a transport and counts its writes."""

    def __init__(self, transport: Any, writes: list[int]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes[0] += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _count_writes(client: AutoPipeline, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count socket writes on every open connection of ``client``; returns the running count."""
    writes = [0]
    for slot in client._slots:
        assert slot.conn is not None
        monkeypatch.setattr(slot.conn, "transport", _CountingTransport(slot.conn.transport, writes))
    return writes


async def _own_connections(redis: aioredis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in await redis.client_list() if c.get("name") == name]


async def _wait_until(predicate: Callable[[], Any], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_parse_url() -> None:
    assert parse_url("redis://127.0.0.1:6379/13") == Endpoint(host="127.0.0.1", port=6379, db=13)
    assert parse_url("redis://localhost") == Endpoint(host="localhost")
    assert parse_url("redis://:s%40cret@h:7000/2") == Endpoint(host="h", port=7000, db=2, password="s@cret")
    assert parse_url("redis://app:pw@h/1").username == "app"
    assert parse_url("rediss://h:6380/0").tls
    assert parse_url("unix:///run/redis.sock?db=3") == Endpoint(path="/run/redis.sock", db=3)
    with pytest.raises(ValueError):
        parse_url("http://h")


async def test_thousand_concurrent_commands_get_their_own_results(
    pipeline: AutoPipeline, redis: aioredis.Redis
) -> None:
    n = 1000
    await redis.mset({f"eg:test:get:{i}": f"value-{i}" for i in range(n)})
    await redis.mset({f"eg:test:incr:{i}": i for i in range(n)})
    batches_before = pipeline.batches_sent

    def command(i: int) -> Any:
        match i % 3:
            case 0:
                return pipeline.set(f"eg:test:set:{i}", f"set-{i}")
            case 1:
                return pipeline.get(f"eg:test:get:{i}")
            case _:
                return pipeline.incr(f"eg:test:incr:{i}")

    results = await asyncio.gather(*(command(i) for i in range(n)))

    for i, result in enumerate(results):
        match i % 3:
            case 0:
                assert result is True
            case 1:
                assert result == f"value-{i}".encode()
            case _:
                assert result == i + 1
    assert pipeline.batches_sent - batches_before == 1
    written = await redis.mget([f"eg:test:set:{i}" for i in range(0, n, 3)])
    assert written == [f"set-{i}".encode() for i in range(0, n, 3)]
    assert pipeline.in_flight == 0


async def test_one_tick_goes_out_in_one_write(pipeline: AutoPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _count_writes(pipeline, monkeypatch)
    batches, commands = pipeline.batches_sent, pipeline.commands_sent

    await asyncio.gather(*(pipeline.get(f"eg:test:k:{i}") for i in range(200)))

    assert (pipeline.batches_sent - batches, pipeline.commands_sent - commands, writes[0]) == (1, 200, 1)

    await pipeline.get("eg:test:a")
    await pipeline.get("eg:test:b")

    assert (pipeline.batches_sent - batches, pipeline.commands_sent - commands, writes[0]) == (3, 202, 3)


async def test_batches_do_not_wait_for_earlier_ones(
    redis_url: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await AutoPipeline.connect(redis_url, connections=1, timeout_ms=2000)
    try:
        writes = _count_writes(client, monkeypatch)
        slow = asyncio.ensure_future(client.execute("BLPOP", "eg:test:empty", 0.3))
        await asyncio.sleep(0)
        quick = [asyncio.ensure_future(client.incr("eg:test:n")) for _ in range(3)]
        await asyncio.sleep(0.05)

        # The second tick was written while the first one's reply was still outstanding.
        assert writes[0] == 2
        assert client.in_flight == 4
        assert not slow.done()
        assert await slow is None
        assert sorted(await asyncio.gather(*quick)) == [1, 2, 3]
    finally:
        await client.close()


async def test_error_reply_reaches_only_its_caller(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    await redis.set("eg:test:text", "abc")
    await redis.rpush("eg:test:list", "x")
    batches = pipeline.batches_sent

    results = await asyncio.gather(
        pipeline.set("eg:test:a", "1"),
        pipeline.incr("eg:test:text"),
        pipeline.get("eg:test:list"),
        pipeline.incr("eg:test:n"),
        pipeline.evalsha("0" * 40, 0),
        pipeline.get("eg:test:a"),
        return_exceptions=True,
    )

    assert pipeline.batches_sent - batches == 1
    assert results[0] is True
    assert type(results[1]) is ResponseError and "not an integer" in str(results[1])
    assert type(results[2]) is ResponseError and str(results[2]).startswith("WRONGTYPE")
    assert results[3] == 1
    assert isinstance(results[4], NoScriptError)
    assert results[5] == b"1"


async def test_replies_are_raw(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    await redis.hset("eg:test:h", mapping={"f": "v", "g": "w"})

    results = await asyncio.gather(
        pipeline.execute("SET", "eg:test:ü", "ü"),
        pipeline.execute(b"GET", "eg:test:ü"),
        pipeline.get("eg:test:missing"),
        pipeline.mget("eg:test:ü", "eg:test:missing"),
        pipeline.incrby("eg:test:n", 5),
        pipeline.execute("INCRBYFLOAT", "eg:test:f", 1.5),
        pipeline.hget("eg:test:h", "f"),
        pipeline.hgetall("eg:test:h"),
        pipeline.ping(),
    )

    assert results == [
        b"OK",
        "ü".encode(),
        None,
        ["ü".encode(), None],
        5,
        b"1.5",
        b"v",
        {b"f": b"v", b"g": b"w"},
        True,
    ]


async def test_helpers(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    assert await pipeline.set("eg:test:k", "v", nx=True, ex=60)
    assert not await pipeline.set("eg:test:k", "other", nx=True)
    assert 0 < await redis.ttl("eg:test:k") <= 60
    assert await pipeline.set("eg:test:p", b"\x00\xff", px=60_000)
    assert await pipeline.getdel("eg:test:p") == b"\x00\xff"
    assert await pipeline.expire("eg:test:k", 30)
    assert not await pipeline.expire("eg:test:gone", 30)
    assert await pipeline.delete("eg:test:k", "eg:test:gone") == 1
    assert await pipeline.zadd("eg:test:z", {"a": 1, b"b": 2.5}) == 2
    assert await redis.zrange("eg:test:z", 0, -1, withscores=True) == [(b"a", 1.0), (b"b", 2.5)]
    assert await pipeline.zrem("eg:test:z", "a", "c") == 1
    entry_id = await pipeline.xadd("eg:test:s", {"seat": 7, b"who": "c1"}, maxlen=100)
    assert await redis.xrange("eg:test:s") == [(entry_id, {b"seat": b"7", b"who": b"c1"})]
    with pytest.raises(DataError):
        await pipeline.execute("SET", "eg:test:k", None)  # type: ignore[arg-type]


async def test_timeout_fails_only_the_slow_call_and_replies_stay_aligned(
    redis_url: str, redis: aioredis.Redis
) -> None:
    await redis.mset({f"eg:test:v:{i}": f"v{i}" for i in range(20)})
    client = await AutoPipeline.connect(redis_url, connections=2, timeout_ms=100)
    try:
        started = time.monotonic()
        # First tick, first connection: the GET is answered, the BLPOP blocks for 0.3 s.
        results = await asyncio.gather(
            client.get("eg:test:v:0"), client.execute("BLPOP", "eg:test:empty", 0.3), return_exceptions=True
        )
        assert results[0] == b"v0"
        assert isinstance(results[1], RedisTimeoutError)
        assert time.monotonic() - started < 0.25
        # Next tick goes to the other connection, which is not stuck.
        assert await client.get("eg:test:v:1") == b"v1"

        # The late BLPOP reply is consumed and dropped, so later replies still match their callers.
        async def caught_up() -> bool:
            return client.in_flight == 0

        await _wait_until(caught_up)
        for i in range(20):
            assert await client.get(f"eg:test:v:{i}") == f"v{i}".encode()
        assert await asyncio.gather(*(client.get(f"eg:test:v:{i}") for i in range(20))) == [
            f"v{i}".encode() for i in range(20)
        ]
    finally:
        await client.close()


async def test_connection_loss_fails_in_flight_calls_then_recovers(redis_url: str, redis: aioredis.Redis) -> None:
    name = f"eg-test-{secrets.token_hex(4)}"
    client = await AutoPipeline.connect(redis_url, connections=2, timeout_ms=5000, client_name=name)
    try:
        # One blocked command on each connection, so both have a call in flight when killed.
        first = asyncio.ensure_future(client.execute("BLPOP", "eg:test:empty", 4))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(client.execute("BLPOP", "eg:test:empty", 4))

        async def both_blocked() -> bool:
            return [c["cmd"] for c in await _own_connections(redis, name)] == ["blpop", "blpop"]

        await _wait_until(both_blocked)
        killed = {c["id"] for c in await _own_connections(redis, name)}
        for client_id in killed:
            await redis.client_kill_filter(_id=client_id)

        started = time.monotonic()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes), outcomes
        assert time.monotonic() - started < 1
        assert client.in_flight == 0

        # The next commands reopen both connections, on the right database.
        assert await asyncio.gather(client.set("eg:test:after", "1"), client.incr("eg:test:n")) == [True, 1]
        assert await client.get("eg:test:after") == b"1"
        assert await redis.get("eg:test:after") == b"1"
        reopened = await _own_connections(redis, name)
        assert len(reopened) == 2
        assert not killed & {c["id"] for c in reopened}
        assert {c["db"] for c in reopened} == {str(parse_url(redis_url).db)}
    finally:
        await client.close()


class _Proxy:
    """A TCP proxy in front of Redis that a test can cut and restore on the same port."""

    def __init__(self, target: Endpoint) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every proxied connection."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self._target.host, self._target.port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer))

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except OSError:
            pass
        finally:
            writer.close()
            peer.close()


async def test_redis_gone_fails_fast_and_recovers_when_back(redis_url: str, redis: aioredis.Redis) -> None:
    target = parse_url(redis_url)
    proxy = _Proxy(target)
    await proxy.start()
    proxied_url = f"redis://127.0.0.1:{proxy.port}/{target.db}"
    client = await AutoPipeline.connect(proxied_url, connections=1, timeout_ms=300)
    try:
        assert await client.set("eg:test:k", "1")
        blocked = asyncio.ensure_future(client.execute("BLPOP", "eg:test:empty", 5))
        await asyncio.sleep(0.05)

        await proxy.stop()

        with pytest.raises(RedisConnectionError):
            await blocked
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await client.get("eg:test:k")
            assert time.monotonic() - started < 0.5

        await proxy.start()

        async def answers() -> bool:
            try:
                return await client.get("eg:test:k") == b"1"
            except RedisConnectionError:
                return False

        await _wait_until(answers)
    finally:
        await client.close()
        await proxy.stop()


async def test_connect_to_nothing_raises_connection_error(redis: aioredis.Redis) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()

    with pytest.raises(RedisConnectionError):
        await AutoPipeline.connect(f"redis://127.0.0.1:{port}/13", timeout_ms=500)


async def test_silent_server_never_hangs() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # With a database to SELECT, the handshake itself is bounded by the budget.
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await AutoPipeline.connect(f"redis://127.0.0.1:{port}/13", timeout_ms=100)
        assert time.monotonic() - started < 1

        # Without one, connecting succeeds and each call is bounded instead.
        client = await AutoPipeline.connect(f"redis://127.0.0.1:{port}/0", connections=1, timeout_ms=100)
        try:
            started = time.monotonic()
            results = await asyncio.gather(client.ping(), client.get("k"), return_exceptions=True)
            assert all(isinstance(r, RedisTimeoutError) for r in results)
            assert time.monotonic() - started < 1
        finally:
            await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_constructor_connects_lazily_on_first_command(redis_url: str, redis: aioredis.Redis) -> None:
    client = AutoPipeline(redis_url, connections=2)
    try:
        assert client.in_flight == 0
        assert await asyncio.gather(client.set("eg:test:k", "v"), client.get("eg:test:k")) == [True, b"v"]
        assert await client.get("eg:test:k") == b"v"
        assert await redis.get("eg:test:k") == b"v"
    finally:
        await client.close()


async def test_close_fails_queued_commands_and_refuses_new_ones(redis_url: str, redis: aioredis.Redis) -> None:
    client = await AutoPipeline.connect(redis_url)
    queued = asyncio.ensure_future(client.get("eg:test:k"))
    await asyncio.sleep(0)  # the command is in the tick's buffer, not yet written
    await client.close()

    with pytest.raises(RedisConnectionError):
        await queued
    with pytest.raises(RedisConnectionError):
        await client.get("eg:test:k")
    assert client.closed
