"""Pausing the worker's loops (write-behind, sweeper, order reconciler) so that a cancellation is never lost.

On Python 3.11 ``asyncio.wait_for`` returns its awaitable's result when a cancellation lands
just as that awaitable completes, and the cancellation is gone. redis-py 8 wraps every
command's send in one (its default ``socket_timeout`` is 5 s), so a task cancelled in the
middle of a Redis call can carry on as if nothing had happened. ``Task.cancelling()`` still
counts the request, so the loops check it before every pause, and they pause with
``asyncio.sleep`` / ``asyncio.wait``, which never swallow one.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and the request was swallowed below."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float, stop_event: asyncio.Event | None = None) -> None:
    """Sleep ``seconds``, or until ``stop_event`` is set; a (possibly swallowed) cancellation raises."""
    raise_if_cancelled()
    if stop_event is None:
        await asyncio.sleep(seconds)
        return
    if stop_event.is_set():
        return
    waiter = asyncio.ensure_future(stop_event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


def should_stop(stop_event: asyncio.Event | None) -> bool:
    """True once ``stop_event`` is set (never without one); a swallowed cancellation raises first."""
    raise_if_cancelled()
    return stop_event is not None and stop_event.is_set()
