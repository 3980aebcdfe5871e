"""The hot-path Redis client: commands issued in one event-loop tick go out in one write.

This is the technique of ioredis' ``enableAutoPipelining``: ``execute`` appends the
encoded command to the current tick's buffer and schedules one flush with
``loop.call_soon``; the flush writes the whole buffer to one connection (a plain
pipeline, not MULTI) and the replies, parsed by ``hiredis``, resolve the callers'
futures in order. Batches never wait for earlier ones: a connection keeps as many in
flight as the ticks produce, and ticks are spread round-robin over a few connections.

redis-py stays the client for everything off the hot path (pub/sub, stream consumers,
admin); errors raised here are redis-py's classes so callers catch one family.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import itertools
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    DataError,
    ExecAbortError,
    InvalidResponse,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

__all__ = ["REDIS_DOWN", "AutoPipeline", "Endpoint", "NotSent", "UNSENT", "abandon", "pack_command", "parse_url"]

# What a call to Redis raises when Redis is away or slow (ConnectionError is an OSError; asyncio.TimeoutError is
# TimeoutError): callers that degrade rather than fail catch exactly these.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

Arg = bytes | str | int | float | memoryview

# hiredis.pack_command with its real type: the stub shipped with hiredis declares a one-element tuple.
pack_command = cast("Callable[[tuple[Arg, ...]], bytes]", hiredis.pack_command)

# After a failed (re)connect, commands on that connection fail at once for this long
# instead of each tick starting another attempt against a server that is down.
RECONNECT_BACKOFF_S = 0.05

# After a WAIT finds too few replicas, how long WAITs are answered 0 at once (and ROLE asked instead).
REPLICAS_RECHECK_S = 1.0

# Error prefixes redis-py maps to its own subclasses; the rest stay ResponseError.
_ERROR_CLASSES: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "LOADING": BusyLoadingError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "NOPERM": NoPermissionError,
    "OOM": OutOfMemoryError,
    "EXECABORT": ExecAbortError,
}


class NotSent(ConnectionError):
    """A command failed before it was written: no connection could be opened. Safe to send again elsewhere."""


class ConnectTimedOut(TimeoutError):
    """A command failed before it was written: opening the connection took too long. Safe to send again."""


# Failures of commands that surely never reached Redis (a cluster client sends them again after a failover).
UNSENT: tuple[type[RedisError], ...] = (NotSent, ConnectTimedOut)


def _server_error(reply: ResponseError) -> RedisError:
    """The redis-py exception for an error reply, message stripped of a mapped prefix."""
    message = str(reply)
    code, _, rest = message.partition(" ")
    cls = _ERROR_CLASSES.get(code)
    return cls(rest) if cls is not None else reply


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, parsed from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def describe(self) -> str:
        """The address without credentials, for error messages."""
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"{where}/{self.db}"


def parse_url(url: str) -> Endpoint:
    """Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` or ``unix://…?db=N``."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    db_text = query.get("db", [""])[0]
    if parts.scheme in ("redis", "rediss"):
        db_text = parts.path.lstrip("/") or db_text
        return Endpoint(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(db_text or 0),
            username=username,
            password=password,
            tls=parts.scheme == "rediss",
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"unix URL without a socket path: {url!r}")
        return Endpoint(path=parts.path, db=int(db_text or 0), username=username, password=password)
    raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")


def _handshake(endpoint: Endpoint, client_name: str | None) -> list[bytes]:
    """The commands a fresh connection sends before it carries traffic."""
    commands: list[bytes] = []
    if endpoint.password is not None:
        if endpoint.username:
            commands.append(pack_command(("AUTH", endpoint.username, endpoint.password)))
        else:
            commands.append(pack_command(("AUTH", endpoint.password)))
    if endpoint.db:
        commands.append(pack_command(("SELECT", endpoint.db)))
    if client_name:
        commands.append(pack_command(("CLIENT", "SETNAME", client_name)))
    return commands


def abandon(future: asyncio.Future[Any]) -> None:
    """Give up on a submitted command's reply: cancel it, or mark a failure it already has as seen.

    For a caller that raised before awaiting every future it submitted; the command still runs.
    """
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" at garbage collection


def _expire(futures: list[asyncio.Future[Any]], timeout_ms: int) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(TimeoutError(f"no reply from Redis within {timeout_ms} ms"))


# A cluster client's hook for a command its node could not run (redirected, refused for now, never sent):
# (the command's future, the command, the error) → True when it has taken the command over.
Redirect = Callable[[asyncio.Future[Any], bytes, RedisError], bool]


class _Connection(asyncio.Protocol):
    """One socket: writes batches and resolves their futures in FIFO order."""

    __slots__ = ("transport", "waiters", "packs", "redirect", "lost", "closed", "_reader", "_timers", "_sent",
                 "_received", "_where")

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, redirect: Redirect | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        # Futures in the order their commands were written; a future already done
        # (timed out, cancelled) still holds its place until its reply is consumed.
        self.waiters: deque[asyncio.Future[Any]] = deque()
        # With a redirect hook (a cluster node), each waiter's command, to hand over with its error reply.
        self.redirect = redirect
        self.packs: deque[bytes] | None = deque() if redirect is not None else None
        self.lost = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self._reader = hiredis.Reader(replyError=ResponseError, protocolError=InvalidResponse)
        # (reply count that completes a batch, its timeout timer), oldest first.
        self._timers: deque[tuple[int, asyncio.TimerHandle]] = deque()
        self._sent = 0
        self._received = 0
        self._where = where

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Batches are small and back to back; Nagle would hold one until the last is acked.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def usable(self) -> bool:
        """True while writes on this connection can still be answered."""
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes, futures: list[asyncio.Future[Any]], timer: asyncio.TimerHandle | None,
             parts: list[bytes] | None = None) -> None:
        """Write one batch; its replies will resolve ``futures`` in order."""
        assert self.transport is not None
        self.transport.write(data)
        self.waiters.extend(futures)
        if self.packs is not None:
            assert parts is not None and len(parts) == len(futures)
            self.packs.extend(parts)
        self._sent += len(futures)
        if timer is not None:
            self._timers.append((self._sent, timer))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        popleft = self.waiters.popleft
        packs = self.packs
        count = 0
        try:
            while (reply := reader.gets()) is not False:
                fut = popleft()
                packed = packs.popleft() if packs is not None else None
                count += 1
                if fut.done():
                    continue
                if reply.__class__ is ResponseError:
                    error = _server_error(reply)
                    if packed is not None and self.redirect is not None and self.redirect(fut, packed, error):
                        continue
                    fut.set_exception(error)
                else:
                    fut.set_result(reply)
        except (InvalidResponse, IndexError) as exc:
            # The stream can no longer be matched to callers: drop the connection.
            self.abort(f"protocol error from Redis at {self._where}: {exc!r}")
            return
        self._received += count
        timers = self._timers
        while timers and timers[0][0] <= self._received:
            timers.popleft()[1].cancel()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        reason = f"connection to Redis at {self._where} lost" + (f": {exc}" if exc else "")
        self._fail_all(reason)
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self, reason: str) -> None:
        """Close the socket and fail every command still awaiting a reply."""
        self.lost = True
        if self.transport is not None:
            self.transport.close()
        elif not self.closed.done():
            self.closed.set_result(None)
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        while self._timers:
            self._timers.popleft()[1].cancel()
        waiters, self.waiters = self.waiters, deque()
        if self.packs is not None:
            self.packs.clear()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(ConnectionError(reason))


_Batch = tuple[bytes, list[asyncio.Future[Any]], asyncio.TimerHandle | None, list[bytes] | None]


class _Slot:
    """One of the pipeline's connections, reopened lazily after it is lost."""

    __slots__ = ("conn", "_owner", "_connecting", "_held", "_retry_at", "_last_error")

    def __init__(self, owner: AutoPipeline) -> None:
        self.conn: _Connection | None = None
        self._owner = owner
        self._connecting: asyncio.Task[None] | None = None
        self._held: list[_Batch] = []
        self._retry_at = 0.0
        self._last_error = ""

    def submit(self, data: bytes, futures: list[asyncio.Future[Any]], timer: asyncio.TimerHandle | None,
               parts: list[bytes] | None = None) -> None:
        """Write a batch now, or hold it until the connection is (re)opened."""
        conn = self.conn
        if conn is not None and conn.usable():
            stats = self._owner.stats
            stats.batches_sent += 1
            stats.commands_sent += len(futures)
            conn.send(data, futures, timer, parts)
            return
        loop = self._owner._get_loop()
        if self._connecting is None and loop.time() < self._retry_at:
            self._owner._unsent(futures, timer, parts, NotSent, self._last_error)
            return
        self._held.append((data, futures, timer, parts))
        if self._connecting is None:
            self._connecting = loop.create_task(self._reconnect())

    async def open(self) -> None:
        """Open the connection now, raising if it cannot be opened."""
        self.conn = await self._owner._open_connection()

    def in_flight(self) -> int:
        """Commands written on this connection, or held for it, still awaiting a reply."""
        held = sum(len(batch[1]) for batch in self._held)
        return held + (len(self.conn.waiters) if self.conn is not None else 0)

    async def close(self) -> None:
        """Stop reconnecting, fail held commands, close the socket and wait until it is closed."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        held, self._held = self._held, []
        for _, futures, timer, _ in held:
            _fail(futures, timer, ConnectionError, "Redis client closed")
        conn = self.conn
        if conn is not None:
            conn.abort("Redis client closed")
            await asyncio.wait([conn.closed], timeout=self._owner._timeout_s)

    async def _reconnect(self) -> None:
        try:
            conn = await self._owner._open_connection()
        except Exception as exc:
            self._last_error = str(exc)
            self._retry_at = self._owner._get_loop().time() + RECONNECT_BACKOFF_S
            # The held commands were never written.
            self._fail_held(ConnectTimedOut if isinstance(exc, TimeoutError) else NotSent, str(exc))
            return
        finally:
            self._connecting = None
        self.conn = conn
        held, self._held = self._held, []
        for data, futures, timer, parts in held:
            if all(fut.done() for fut in futures):
                # Every caller has given up (timed out): don't run the commands late.
                if timer is not None:
                    timer.cancel()
                continue
            stats = self._owner.stats
            stats.batches_sent += 1
            stats.commands_sent += len(futures)
            conn.send(data, futures, timer, parts)

    def _fail_held(self, exc_class: type[RedisError], reason: str) -> None:
        held, self._held = self._held, []
        for _, futures, timer, parts in held:
            self._owner._unsent(futures, timer, parts, exc_class, reason)


def _fail(
    futures: list[asyncio.Future[Any]],
    timer: asyncio.TimerHandle | None,
    exc_class: type[RedisError],
    reason: str,
) -> None:
    if timer is not None:
        timer.cancel()
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc_class(reason))


class AutoPipeline:
    """Redis client that sends every command issued in one loop tick in one write.

    Replies come back raw: bytes (never decoded), ints, lists, None for nil. An error
    reply raises only in its own caller, as the matching redis-py exception. Each call
    has a budget of ``timeout_ms`` (redis-py ``TimeoutError``); a lost connection fails
    its callers with ``ConnectionError`` and is reopened by the next command.
    Blocking commands (BLPOP, XREAD BLOCK, …) belong on redis-py, not here: they hold up
    every command queued behind them on the same connection.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 2,
        timeout_ms: int = 1000,
        client_name: str | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        self.endpoint = parse_url(url)
        self.timeout_ms = timeout_ms
        self.client_name = client_name
        self.batches_sent = 0
        self.commands_sent = 0
        # Where the counts above are kept: this client, or the cluster client this one is a node of.
        self.stats: AutoPipeline = self
        # Set by a cluster client on its nodes' pipelines (``core.redis_cluster``), before the first command.
        self.redirect: Redirect | None = None
        # This tick's shared WAIT (its future, replicas, timeout), and until when replicas are known short.
        self._wait: tuple[asyncio.Future[int], int, int] | None = None
        self._replicas_short_until = 0.0
        self._replicas_probe: asyncio.Task[None] | None = None
        self._timeout_s = timeout_ms / 1000
        handshake = _handshake(self.endpoint, client_name)
        self._handshake = b"".join(handshake)
        self._handshake_parts = handshake
        self._handshake_count = len(handshake)
        self._slots = [_Slot(self) for _ in range(connections)]
        self._next_slot = itertools.cycle(self._slots).__next__
        self._parts: list[bytes] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._flush_scheduled = False
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        connections: int = 2,
        timeout_ms: int = 1000,
        client_name: str | None = None,
    ) -> AutoPipeline:
        """Open the connections now; raise ``ConnectionError`` or ``TimeoutError`` if Redis is unreachable."""
        client = cls(url, connections=connections, timeout_ms=timeout_ms, client_name=client_name)
        results = await asyncio.gather(*(slot.open() for slot in client._slots), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            await client.close()
            raise errors[0]
        return client

    @property
    def in_flight(self) -> int:
        """Commands queued or written and still awaiting their reply."""
        return len(self._futures) + sum(slot.in_flight() for slot in self._slots)

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closed

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _submit(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        if self._closed:
            raise ConnectionError("Redis client closed")
        try:
            packed = pack_command(args)
        except TypeError as exc:
            raise DataError(f"invalid Redis command argument in {args[:1]!r}: {exc}") from exc
        return self._enqueue(packed)

    def submit(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command in the current tick's batch and return the future of its raw reply.

        ``execute`` without the coroutine: a caller issuing several commands back to back
        awaits their futures directly, with no ``asyncio.gather`` and no Task per command.
        """
        return self._submit(args)

    def send_packed(self, packed: bytes, key: Arg | None = None) -> asyncio.Future[Any]:
        """Queue one command already encoded in RESP; its reply resolves the returned future.

        ``key``, the command's first key, routes it on a cluster (``core.redis_cluster``); unused here.

        For callers that build one command shape at high rates from pre-encoded parts:
        ``hiredis.pack_command`` costs ~0.25 µs per argument, a lot for a command of hundreds.
        """
        if self._closed:
            raise ConnectionError("Redis client closed")
        return self._enqueue(packed)

    def write_packed(self, packed: bytes, key: Arg | None = None) -> asyncio.Future[Any]:
        """``send_packed``, written now with whatever this tick has queued (not at the end of the tick).

        For a caller that gathers its own batch and sends it from a loop callback: waiting for the
        end of that callback's tick would let the other writes made beside it go one round before it.
        """
        future = self.send_packed(packed)
        self._flush()
        return future

    def wait_replicas(self, key: Arg, replicas: int, timeout_ms: int) -> asyncio.Future[int]:
        """How many replicas have this tick's writes: one ``WAIT`` at the end of the tick's batch, shared.

        ``WAIT`` counts the replicas that have every write of its own connection, so it goes in the
        same write as the commands it confirms (``key`` names their node on a cluster). While a ``WAIT``
        blocks, so does every command behind it on the connection: when one finds too few replicas,
        the next second answers 0 at once, and a ``ROLE`` (which never blocks) tells when they are back.
        """
        loop = self._loop or self._get_loop()
        if loop.time() < self._replicas_short_until:
            if self._replicas_probe is None or self._replicas_probe.done():
                self._replicas_probe = loop.create_task(self._probe_replicas(replicas))
            short = loop.create_future()
            short.set_result(0)
            return short
        wait = self._wait
        if wait is None:
            wait = self._wait = (loop.create_future(), replicas, timeout_ms)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        elif replicas > wait[1] or timeout_ms > wait[2]:
            self._wait = wait = (wait[0], max(replicas, wait[1]), max(timeout_ms, wait[2]))
        return wait[0]

    async def _probe_replicas(self, replicas: int) -> None:
        """Ask ``ROLE`` once a second until the master has ``replicas`` connected, then ``WAIT`` again."""
        loop = self._get_loop()
        while loop.time() < self._replicas_short_until:
            await asyncio.sleep(max(0.0, self._replicas_short_until - loop.time()))
            try:
                role = await self._submit((b"ROLE",))
            except RedisError:
                role = None
            if role and role[0] == b"master" and len(role[2]) >= replicas:
                self._replicas_short_until = 0.0
                return
            self._replicas_short_until = loop.time() + REPLICAS_RECHECK_S

    def _waited(self, shared: asyncio.Future[int], replicas: int, done: asyncio.Future[Any]) -> None:
        if shared.done():
            return
        if done.cancelled():
            shared.cancel()
            return
        exc = done.exception()
        if exc is not None:
            shared.set_exception(exc)
            return
        count = int(done.result())
        if count < replicas:
            self._replicas_short_until = self._get_loop().time() + REPLICAS_RECHECK_S
        shared.set_result(count)

    def _enqueue(self, packed: bytes) -> asyncio.Future[Any]:
        loop = self._loop or self._get_loop()
        fut = loop.create_future()
        self._parts.append(packed)
        self._futures.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def enqueue_future(self, packed: bytes, fut: asyncio.Future[Any]) -> None:
        """Queue an encoded command whose reply resolves ``fut``: a command a cluster client moves here."""
        if self._closed:
            raise ConnectionError("Redis client closed")
        loop = self._loop or self._get_loop()
        self._parts.append(packed)
        self._futures.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        wait = self._wait
        if wait is not None:
            self._wait = None
            shared, replicas, timeout_ms = wait
            waited = self._loop.create_future() if self._loop is not None else self._get_loop().create_future()
            waited.add_done_callback(functools.partial(self._waited, shared, replicas))
            self._parts.append(pack_command((b"WAIT", replicas, timeout_ms)))
            self._futures.append(waited)
        futures = self._futures
        if not futures:
            return
        parts = self._parts
        self._parts = []
        self._futures = []
        loop = self._loop
        assert loop is not None
        # One timer per batch, not per command: every command in it shares the deadline.
        timer = loop.call_later(self._timeout_s, _expire, futures, self.timeout_ms)
        self._next_slot().submit(b"".join(parts), futures, timer, parts if self.redirect is not None else None)

    def _unsent(self, futures: list[asyncio.Future[Any]], timer: asyncio.TimerHandle | None,
                parts: list[bytes] | None, exc_class: type[RedisError], reason: str) -> None:
        """Fail commands that were never written, or hand them to the cluster client to send elsewhere."""
        redirect = self.redirect
        if redirect is None or parts is None or exc_class not in UNSENT:
            _fail(futures, timer, exc_class, reason)
            return
        if timer is not None:
            timer.cancel()
        for fut, packed in zip(futures, parts, strict=True):
            if not fut.done() and not redirect(fut, packed, exc_class(reason)):
                fut.set_exception(exc_class(reason))

    async def _open_connection(self) -> _Connection:
        """A new connection with AUTH/SELECT/SETNAME done, bounded by the time budget."""
        loop = self._get_loop()
        endpoint = self.endpoint
        where = endpoint.describe()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                if endpoint.path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(loop, where, self.redirect),
                                                                endpoint.path)
                else:
                    tls = ssl.create_default_context() if endpoint.tls else None
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop, where, self.redirect), endpoint.host, endpoint.port, ssl=tls
                    )
                if self._handshake_count:
                    futures = [loop.create_future() for _ in range(self._handshake_count)]
                    conn.send(self._handshake, futures, None, self._handshake_parts)
                    results = await asyncio.gather(*futures, return_exceptions=True)
                    for result in results:
                        if isinstance(result, BaseException):
                            raise result
        except builtins.TimeoutError as exc:  # the builtin, from asyncio.timeout; re-raised as redis-py's
            if conn is not None:
                conn.abort("connect timed out")
            raise TimeoutError(f"connecting to Redis at {where} took over {self.timeout_ms} ms") from exc
        except OSError as exc:
            raise ConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.abort("connect failed")
            raise
        return conn

    async def close(self) -> None:
        """Fail queued commands, close every connection and wait until the sockets are closed."""
        self._closed = True
        if self._replicas_probe is not None:
            self._replicas_probe.cancel()
        futures, self._futures, self._parts = self._futures, [], []
        _fail(futures, None, ConnectionError, "Redis client closed")
        await asyncio.gather(*(slot.close() for slot in self._slots))

    async def execute(self, *args: Arg) -> Any:
        """Send one command in the current tick's batch and return its raw reply."""
        return await self._submit(args)

    async def get(self, key: Arg) -> bytes | None:
        """GET."""
        return await self._submit((b"GET", key))

    async def mget(self, *keys: Arg) -> list[bytes | None]:
        """MGET."""
        return await self._submit((b"MGET", *keys))

    async def set(
        self,
        key: Arg,
        value: Arg,
        *,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
    ) -> bool:
        """SET with optional EX/PX/NX; False when NX found the key already set."""
        args: tuple[Arg, ...] = (b"SET", key, value)
        if ex is not None:
            args += (b"EX", ex)
        if px is not None:
            args += (b"PX", px)
        if nx:
            args += (b"NX",)
        return await self._submit(args) is not None

    async def getdel(self, key: Arg) -> bytes | None:
        """GETDEL."""
        return await self._submit((b"GETDEL", key))

    async def delete(self, *keys: Arg) -> int:
        """DEL; the number of keys removed."""
        return await self._submit((b"DEL", *keys))

    async def incr(self, key: Arg) -> int:
        """INCR."""
        return await self._submit((b"INCR", key))

    async def incrby(self, key: Arg, amount: int) -> int:
        """INCRBY."""
        return await self._submit((b"INCRBY", key, amount))

    async def expire(self, key: Arg, seconds: int) -> bool:
        """EXPIRE; False when the key does not exist."""
        return await self._submit((b"EXPIRE", key, seconds)) == 1

    async def ping(self) -> bool:
        """PING."""
        return await self._submit((b"PING",)) == b"PONG"

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> Any:
        """EVALSHA, same signature as redis-py's; NOSCRIPT raises ``NoScriptError``."""
        return await self._submit((b"EVALSHA", sha, numkeys, *keys_and_args))

    async def script_load(self, source: str) -> str:
        """SCRIPT LOAD; the SHA1 as text, like redis-py."""
        return (await self._submit((b"SCRIPT", b"LOAD", source))).decode()

    async def hget(self, key: Arg, field: Arg) -> bytes | None:
        """HGET."""
        return await self._submit((b"HGET", key, field))

    async def hgetall(self, key: Arg) -> dict[bytes, bytes]:
        """HGETALL as a dict."""
        flat = iter(await self._submit((b"HGETALL", key)))
        return dict(zip(flat, flat, strict=True))

    async def zadd(self, key: Arg, mapping: Mapping[Arg, float]) -> int:
        """ZADD ``{member: score}``; the number of members added."""
        pairs = itertools.chain.from_iterable((score, member) for member, score in mapping.items())
        return await self._submit((b"ZADD", key, *pairs))

    async def zrem(self, key: Arg, *members: Arg) -> int:
        """ZREM; the number of members removed."""
        return await self._submit((b"ZREM", key, *members))

    async def xadd(
        self,
        key: Arg,
        fields: Mapping[Arg, Arg],
        *,
        id: Arg = b"*",
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> bytes:
        """XADD; the entry id. ``maxlen`` trims (``~`` unless ``approximate=False``)."""
        trim: tuple[Arg, ...] = () if maxlen is None else (b"MAXLEN", b"~" if approximate else b"=", maxlen)
        return await self._submit((b"XADD", key, *trim, id, *itertools.chain.from_iterable(fields.items())))
