"""``examgate serve``: N gateway processes sharing one port (SO_REUSEPORT), supervised by a parent.

The parent owns no socket: each child binds the port with SO_REUSEPORT and the kernel
spreads connections across them. The parent restarts a child that dies, forwards
SIGTERM/SIGINT, and gives the children ``shutdown_timeout_s`` to drain in-flight requests (after
``drain_s`` out of a load balancer's rotation, see ``gateway/draining.py``).
Each child serves through a guarded site (``gateway/connections.py``): connections per client
address capped, headers and bodies due in bounded time, bad HTTP answered in JSON.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import time
from multiprocessing.process import BaseProcess

from gateway.config import Settings

log = logging.getLogger("examgate.serve")

# A child that dies this soon after starting, this many times in a row, means start-up is broken.
EARLY_EXIT_S = 3.0
MAX_EARLY_EXITS = 3
# Used when the hard limit on open files is "unlimited", which setrlimit may refuse as a soft limit.
OPEN_FILES_CEILING = 1 << 20


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each connection is one); the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays %d (raising it to %d failed: %s)", soft, target, exc)
            return soft
        log.info("open files limit raised from %d to %d", soft, target)
        return target
    return soft


def run_child(settings: Settings, index: int) -> None:
    """Entry point of one gateway process: serve until SIGTERM, then drain and exit."""
    import uvloop

    from gateway.logs import configure_logging

    configure_logging(settings.log_level, f"gateway-{index}")
    raise_open_files_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    uvloop.run(_serve_forever(settings))


async def _serve_forever(settings: Settings) -> None:
    from aiohttp import web

    from gateway import draining
    from gateway.app import create_app
    from gateway.connections import ConnectionGuard, GuardedSite, handler_options

    app = create_app(settings)
    drain = draining.setup(app, settings.drain_s)
    options = handler_options(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_s, **options)
    await runner.setup()
    site = GuardedSite(runner, ConnectionGuard(settings), settings.host, settings.port, backlog=2048,
                       options=options)
    await site.start()
    # Everything loaded so far (modules, the app, its pools and caches) lives as long as the process:
    # kept out of the cyclic collector's scans, which otherwise walk it again and again under load.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    log.info("process %d serving on http://%s:%d", os.getpid(), settings.host, settings.port)
    await stop.wait()
    if settings.drain_s > 0:
        drain.begin()
        log.info("process %d leaving the rotation: /readyz 503 for %.1f s before it stops listening", os.getpid(),
                 settings.drain_s)
        await asyncio.sleep(settings.drain_s)
    log.info("process %d draining (up to %.0f s)", os.getpid(), settings.shutdown_timeout_s)
    await runner.cleanup()


class Supervisor:
    """Starts the gateway processes, restarts the ones that die, stops them all on a signal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, BaseProcess] = {}
        self._started_at: dict[int, float] = {}
        self._early_exits = 0
        self._stopping = False

    def _start(self, index: int) -> None:
        child = self._ctx.Process(target=run_child, args=(self.settings, index), name=f"gateway-{index}")
        child.start()
        self._children[index] = child
        self._started_at[index] = time.monotonic()

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit code."""
        from gateway import metrics

        metrics_dir = self.settings.metrics_dir
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[metrics.MULTIPROC_ENV] = str(metrics_dir.resolve())
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.settings.workers):
            self._start(index)
        log.info("examgate gateway: %d process(es) on http://%s:%d", self.settings.workers,
                 self.settings.host, self.settings.port)
        code = 0
        while not self._stopping:
            time.sleep(0.2)
            for index, child in list(self._children.items()):
                if child.is_alive() or self._stopping:
                    continue
                metrics.mark_process_dead(child.pid or 0)
                lived_s = time.monotonic() - self._started_at[index]
                log.error("gateway-%d (pid %s) exited with %s after %.1f s; restarting", index, child.pid,
                          child.exitcode, lived_s)
                self._early_exits = self._early_exits + 1 if lived_s < EARLY_EXIT_S else 0
                if self._early_exits >= MAX_EARLY_EXITS:
                    log.error("gateway processes keep dying at start-up (is port %d free?); giving up",
                              self.settings.port)
                    self._stopping, code = True, 1
                    break
                self._start(index)
        self._shutdown()
        return code

    def _shutdown(self) -> None:
        for child in self._children.values():
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_s + self.settings.shutdown_timeout_s + 5
        for child in self._children.values():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.warning("gateway (pid %s) did not drain in time; killing it", child.pid)
                child.kill()
                child.join()
        log.info("examgate gateway stopped")


def serve(settings: Settings, workers: int | None = None, port: int | None = None, host: str | None = None) -> int:
    """Run the gateway with the given overrides; blocks until stopped."""
    overrides = {k: v for k, v in {"workers": workers, "port": port, "host": host}.items() if v is not None}
    return Supervisor(settings.model_copy(update=overrides)).run()
