"""The sweeper: expired unpaid holds are released and their seats returned.

Each release is one ``hold_expire`` script call that acts only if the hold is still the
one seen (same site, same expiry) and still expired, so a hold refreshed, moved or paid
between the scan and the call is left alone. Each release appends an ``expire`` event
to the exam's stream, so PostgreSQL follows through the write-behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from core.loops import pause, should_stop
from queueing import keys
from queueing.holds import EXPIRE, clock_ms, event_keys

log = logging.getLogger("examgate.sweeper")

ExamSource = Sequence[int] | Callable[[], Awaitable[Sequence[int]]]


async def sweep_exam(redis: aioredis.Redis, exam_id: int, *, now_ms: int | None = None, batch_size: int = 500) -> int:
    """Release the exam's holds expired at ``now_ms``; the number released."""
    at = clock_ms() if now_ms is None else now_ms
    base = event_keys(exam_id)
    released = 0
    while True:
        # The client does not decode replies: members and site ids come back as bytes.
        due = cast("list[tuple[bytes, float]]", await redis.zrangebyscore(
            keys.hold_expiry(exam_id), "-inf", at, start=0, num=batch_size, withscores=True))
        if not due:
            return released
        sites = cast("list[bytes | None]", await redis.hmget(keys.holds(exam_id), [member for member, _ in due]))
        replies = await _expire_all(redis, exam_id, base, due, sites, at)
        released += sum(1 for reply in replies if int(reply[0]) == 1)
        if len(due) < batch_size or all(int(reply[0]) == 0 for reply in replies):
            # A full batch of entries that all changed meanwhile: leave them to the next pass.
            return released


async def _expire_all(redis: aioredis.Redis, exam_id: int, base: list[str], due: list[tuple[bytes, float]],
                      sites: list[bytes | None], at: int) -> list[Any]:
    """One ``hold_expire`` call per due hold, all in one pipeline (one round trip)."""
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for (member, score), site in zip(due, sites, strict=True):
                script_keys = list(base)
                if site is not None:
                    script_keys.append(keys.site_left(exam_id, int(site)))
                pipe.evalsha(EXPIRE.sha, len(script_keys), *script_keys, member,
                             b"" if site is None else site, int(score), at)
            replies = await pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(reply, NoScriptError) for reply in replies):
            await EXPIRE.load(redis)  # the calls that failed wrote nothing; the others check again
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
    raise AssertionError("unreachable")


async def sweep_once(redis: aioredis.Redis, exam_ids: Iterable[int], *, now_ms: int | None = None,
                     batch_size: int = 500) -> int:
    """Release expired holds of every exam; the number released."""
    released = 0
    for exam_id in exam_ids:
        released += await sweep_exam(redis, exam_id, now_ms=now_ms, batch_size=batch_size)
    return released


async def run_sweeper(redis: aioredis.Redis, *, exams: ExamSource, stop_event: asyncio.Event | None = None,
                      interval_s: float = 1.0, batch_size: int = 500) -> None:
    """Sweep every ``interval_s`` until cancelled, or until ``stop_event`` (if given) is set (a worker task).

    ``exams`` is a list of exam ids or an async function returning the current list
    (e.g. ``active_exam_ids(catalogue)``). Several sweepers may run: each release is atomic.
    Under a supervisor pass no ``stop_event``: cancelling the task is the one way to stop it,
    and a cancellation swallowed by a Redis call below is raised again (``core.loops``).
    """
    while not should_stop(stop_event):
        exam_ids = await exams() if callable(exams) else exams
        released = await sweep_once(redis, exam_ids, batch_size=batch_size)
        if released:
            log.info("sweeper released %d expired holds", released)
        await pause(interval_s, stop_event)
