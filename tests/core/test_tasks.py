"""Supervised tasks: a failing task is restarted, and stopping cancels everything."""

from __future__ import annotations

import asyncio

import pytest

from core.tasks import Supervisor

pytestmark = pytest.mark.unit


async def test_failing_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError(f"attempt {attempts} failed")
        healthy.set()
        await asyncio.sleep(3600)

    supervisor = Supervisor({"flaky": flaky}, restart_delay_s=0.01, max_restart_delay_s=0.05)
    stop = asyncio.Event()
    runner = asyncio.create_task(supervisor.run(stop))
    await asyncio.wait_for(healthy.wait(), timeout=5)
    state = supervisor.states["flaky"]
    assert (state.runs, state.failures) == (3, 2)
    assert state.last_error == "RuntimeError('attempt 2 failed')"
    assert "task flaky failed" in caplog.text
    stop.set()
    await asyncio.wait_for(runner, timeout=5)


async def test_stop_cancels_running_tasks() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop = asyncio.Event()
    runner = asyncio.create_task(Supervisor({"forever": forever}).run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(runner, timeout=5)
    assert cancelled.is_set()
