"""Rows computed by one PostgreSQL session, streamed into another's COPY, so both cores work.

A second session runs each seed query as binary ``COPY (SELECT …) TO STDOUT``; the bytes are
relayed, as they arrive, into the loading session's ``COPY … FROM STDIN``. One backend evaluates
expressions while the other only inserts, and COPY inserts in batches where INSERT … SELECT goes
row by row. The loading session keeps its transaction (and its locks) to itself; the producing
one reads nothing but its own temporary table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from core.errors import CoreError

# Past this many bytes computed but not yet inserted, the producer waits for the loader.
MAX_BUFFERED_BYTES = 1 << 30
_BATCH_BYTES = 1 << 20

_Item = bytes | BaseException | None


class SeedStreamError(CoreError):
    """A query producing seed rows failed."""


class QueryStream:
    """Binary COPY output of several queries run in order on one connection, buffered ahead of their readers."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        queries: list[tuple[str, tuple[object, ...]]],
        setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> None:
        self.conn = conn
        self.queries = queries
        self.setup = setup
        self._queues: list[asyncio.Queue[_Item]] = [asyncio.Queue() for _ in queries]
        self._buffered = 0
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start running ``setup`` and the queries, in one transaction, in the background."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self.conn.transaction():
                if self.setup is not None:
                    await self.setup(self.conn)
                await self._produce()
        except BaseException as exc:
            for queue in self._queues:
                queue.put_nowait(exc)
            raise

    async def _produce(self) -> None:
        for queue, (sql, args) in zip(self._queues, self.queries, strict=True):
            pending = bytearray()

            # asyncpg hands over a few kilobytes at a time; COPY takes megabytes just as well.
            async def put(data: bytes, queue: asyncio.Queue[_Item] = queue, pending: bytearray = pending) -> None:
                pending += data
                if len(pending) >= _BATCH_BYTES:
                    await self._hand_over(queue, pending)

            await self.conn.copy_from_query(sql, *args, output=put, format="binary")
            await self._hand_over(queue, pending)
            queue.put_nowait(None)

    async def _hand_over(self, queue: asyncio.Queue[_Item], pending: bytearray) -> None:
        while self._buffered > MAX_BUFFERED_BYTES:
            self._drained.clear()
            await self._drained.wait()
        if pending:
            self._buffered += len(pending)
            queue.put_nowait(bytes(pending))
            pending.clear()

    async def rows(self, n: int) -> AsyncIterator[bytes]:
        """The binary COPY data of query ``n``, as it arrives."""
        queue = self._queues[n]
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise SeedStreamError(f"seed query {n} failed: {item!r}") from item
            self._buffered -= len(item)
            self._drained.set()
            yield item

    async def close(self) -> None:
        """Stop the queries if still running (the connection is then unusable and is terminated)."""
        if self._task is None:
            return
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.conn.terminate()
        else:
            await asyncio.gather(self._task, return_exceptions=True)
