"""The worker loops (write-behind, sweeper) under a supervisor: cancelling them always stops them.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands as its awaitable completes
(redis-py 8 sends every command under one). The sources below swallow one the same way, every
time, so the loops must notice the request themselves (``Task.cancelling()``).
"""

from __future__ import annotations

import asyncio
import functools
import random

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.loops import pause, raise_if_cancelled, should_stop
from core.tasks import Supervisor
from queueing import keys
from queueing.holds import hold_seat
from queueing.sweeper import run_sweeper
from queueing.writebehind import run_consumer
from tests.queueing.test_holds import exam_with_sites, make_registrations

TTL_S = 1800


async def swallow_a_cancellation(seconds: float = 0.01) -> None:
    """Wait, and swallow a cancellation meanwhile, as 3.11's wait_for does when its awaitable is done."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        pass


async def test_pause_and_should_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pause(0.05, stop)
    assert loop.time() - started >= 0.04
    loop.call_later(0.02, stop.set)
    started = loop.time()
    await pause(10, stop)
    assert loop.time() - started < 1
    assert should_stop(stop) and not should_stop(None)
    raise_if_cancelled()  # nothing was asked


async def test_a_swallowed_cancellation_is_raised_at_the_next_pause() -> None:
    reached = []

    async def loop_body() -> None:
        await swallow_a_cancellation(10)
        reached.append("after the swallow")
        await pause(10)
        reached.append("after the pause")

    task = asyncio.create_task(loop_body())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled() and reached == ["after the swallow"]

    async def stop_check() -> None:
        await swallow_a_cancellation(10)
        should_stop(asyncio.Event())

    task = asyncio.create_task(stop_check())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled()


@pytest.mark.parametrize("share_stop", [False, True], ids=["cancel-only", "shared-stop-event"])
async def test_a_supervisor_stops_its_loops_promptly(pg_dsn: str, pg: asyncpg.Connection, redis: aioredis.Redis,
                                                     share_stop: bool) -> None:
    exam_id, sites = await exam_with_sites(pg, redis, [500])
    regs = await make_registrations(pg, exam_id, 300)
    stream = keys.holds_stream(exam_id)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    rng = random.Random(3)

    async def exams() -> list[int]:
        await swallow_a_cancellation()
        return [exam_id]

    async def streams() -> list[str]:
        await swallow_a_cancellation()
        return [stream]

    try:
        for round_no in range(10):  # stop at a different moment each time, while holds come in
            stop = asyncio.Event()
            extra = {"stop_event": stop} if share_stop else {}
            supervisor = Supervisor({
                "writebehind": functools.partial(run_consumer, redis, pool, consumer_name="w", streams=streams,
                                                 block_ms=20, batch_size=5, streams_refresh_s=0, **extra),
                "sweeper": functools.partial(run_sweeper, redis, exams=exams, interval_s=0.001, **extra),
            }, restart_delay_s=0.5)
            running = asyncio.create_task(supervisor.run(stop))
            for reg in rng.sample(regs, 20):
                await hold_seat(redis, exam_id, reg, sites[0], ttl_s=TTL_S)
            await asyncio.sleep(rng.uniform(0, 0.05))
            stop.set()
            done, _ = await asyncio.wait({running}, timeout=2)
            assert done, f"round {round_no}: the supervisor did not stop ({supervisor.states})"
            running.result()
            assert all(state.failures == 0 for state in supervisor.states.values()), supervisor.states
    finally:
        await pool.close()


async def test_run_sweeper_and_run_consumer_stop_on_their_own_event(pg_dsn: str, redis: aioredis.Redis) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    stop = asyncio.Event()
    try:
        tasks = [asyncio.create_task(run_sweeper(redis, exams=[123456], stop_event=stop, interval_s=10)),
                 asyncio.create_task(run_consumer(redis, pool, consumer_name="w", streams=[], stop_event=stop,
                                                  block_ms=10_000))]
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
    finally:
        await pool.close()
