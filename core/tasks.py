"""Supervised background tasks: a task that fails is logged and restarted, never silently dead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("examgate.tasks")

TaskFactory = Callable[[], Awaitable[None]]


@dataclass
class TaskState:
    """What the supervisor knows of one task."""

    name: str
    runs: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass
class Supervisor:
    """Runs named tasks forever, restarting each after a failure with capped exponential backoff."""

    tasks: dict[str, TaskFactory]
    restart_delay_s: float = 1.0
    max_restart_delay_s: float = 30.0
    states: dict[str, TaskState] = field(default_factory=dict)

    async def _keep_running(self, name: str, factory: TaskFactory) -> None:
        state = self.states.setdefault(name, TaskState(name))
        delay_s = self.restart_delay_s
        loop = asyncio.get_running_loop()
        while True:
            state.runs += 1
            started = loop.time()
            try:
                await factory()
                log.warning("task %s returned; restarting it", name)
                delay_s = self.restart_delay_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.failures += 1
                state.last_error = repr(exc)
                log.exception("task %s failed (failure %d); restarting in %.1f s", name, state.failures, delay_s)
            if loop.time() - started > self.max_restart_delay_s:
                delay_s = self.restart_delay_s  # it ran well for a while: not a crash loop
            await asyncio.sleep(delay_s)
            delay_s = min(self.max_restart_delay_s, delay_s * 2)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task until ``stop`` is set, then cancel them and wait for them to end."""
        running = [asyncio.create_task(self._keep_running(n, f), name=n) for n, f in self.tasks.items()]
        try:
            await stop.wait()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
