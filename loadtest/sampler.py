"""What the system did during a load run, once a second, into ``metrics.jsonl`` beside Locust's reports.

``with Sampler(...):`` around a run starts a background thread that, every ``interval_s``, writes one
JSON object a line::

    {"t": 1764781200.0,                       # unix seconds
     "gateway": {"examgate_requests_in_flight": 12.0, 'examgate_shed_total{route_class="login",...}': 3.0, ...},
     "redis_cpu_s": 41.2,                     # INFO cpu: used_cpu_sys + used_cpu_user (the server's main process)
     "pg_cpu_s": 17.9,                        # PostgreSQL's CPU seconds (see below)
     "pg_cpu_source": "proc",                 # "proc" or "pg_stat_activity": how pg_cpu_s was measured
     "generator_cpu_pct": 37.5,               # the busiest load-generator process, % of one core since the last line
     "generator_processes": 3}

- ``gateway`` is the gateway's ``/metrics`` (every process's figures together; prometheus-client's
  multiprocess mode) as ``{'name{labels}': value}``, scraped with the metrics token. Histogram
  buckets and ``_created`` stamps are left out (a bucket per route per second would make the file
  most of a rehearsal's size); their ``_sum`` and ``_count`` stay.
- ``redis_cpu_s`` and ``pg_cpu_s`` are running totals: the report draws their rate (CPU seconds per
  second, % of one core).
- PostgreSQL's CPU is read from ``/proc`` when the server runs on this machine: the sampler asks its
  connection's backend pid, takes that process's parent (the postmaster), and adds up the postmaster's
  own time, the time of the children it has reaped (backends that have ended) and that of every live
  child (backends, the checkpointer, WAL writer, autovacuum). When the server is elsewhere (or the
  pid is not a postgres process here: another machine or container) it falls back to
  ``pg_stat_activity``: the client backends in state ``active`` counted each second, added up as
  backend-seconds. That is an upper bound of their CPU (a backend waiting on a lock or on I/O is
  active too); the lines say which with ``pg_cpu_source``.
- ``generator_cpu_pct`` is the busiest of the load generator's processes (``generator_pids``, by
  default every Locust process started by this one) as a share of one core over the last interval:
  one process at 90 % of a core for seconds measures itself, not the gateway.

A source that does not answer (a gateway restarting, Redis paused, PostgreSQL restarted) leaves its
field empty (``{}`` or ``null``) in that line, with its error under ``errors``; the sampler tries
again on the next tick and reconnects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil
import redis

SCRAPE_TIMEOUT_S = 2.0
STORE_TIMEOUT_S = 1.0
# Samples whose growth would make the file large for little to read: per-bucket histogram counts, creation stamps.
_LEFT_OUT_SUFFIXES = ("_bucket", "_created")

__all__ = ["Sampler", "parse_metrics", "PgCpu", "GeneratorCpu"]


def parse_metrics(text: str) -> dict[str, float]:
    """A Prometheus text exposition as ``{'name{labels}': value}``, comments, buckets and ``_created`` left out."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.partition("{")[0].endswith(_LEFT_OUT_SUFFIXES):
            continue
        try:
            values[name] = float(value)
        except ValueError:
            continue
    return values


def scrape(gateway_url: str, metrics_token: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[str, float]:
    """The gateway's ``/metrics`` now (``parse_metrics``)."""
    request = urllib.request.Request(gateway_url.rstrip("/") + "/metrics",
                                     headers={"Authorization": f"Bearer {metrics_token}"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return parse_metrics(resp.read().decode())


def _process_cpu_s(process: psutil.Process, *, reaped_children: bool = False) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    if reaped_children:
        total += times.children_user + times.children_system
    return float(total)


def _is_loopback(dsn: str) -> bool:
    host = urlsplit(dsn).hostname or ""
    if host in ("", "localhost") or host.startswith("/"):
        return True  # no host (or a directory): the local Unix socket
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PgCpu:
    """PostgreSQL's CPU seconds so far: from ``/proc`` when the server is local, else active backend-seconds."""

    def __init__(self, dsn: str, *, local: bool | None = None) -> None:
        self.dsn = dsn
        self.local = _is_loopback(dsn) if local is None else local
        self.source: str | None = None
        self.postmaster: psutil.Process | None = None
        self.active_s = 0.0
        self.last_t: float | None = None
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, STORE_TIMEOUT_S * 2))

    def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = self._run(asyncpg.connect(self.dsn, timeout=STORE_TIMEOUT_S * 2))
        return self._conn

    def _find_postmaster(self) -> psutil.Process | None:
        pid = int(self._run(self._connection().fetchval("SELECT pg_backend_pid()")))
        try:
            backend = psutil.Process(pid)
            parent = backend.parent()
            if parent is None or not all("postgres" in p.name() or "postmaster" in p.name()
                                         for p in (backend, parent)):
                return None  # the pid is some other process here: the server runs elsewhere
            return parent
        except psutil.Error:
            return None

    def read(self) -> float:
        """CPU seconds so far (``source`` says how they were measured); raises on an unreachable server."""
        if self.source is None:
            self.postmaster = self._find_postmaster() if self.local else None
            self.source = "proc" if self.postmaster is not None else "pg_stat_activity"
        if self.postmaster is not None:
            total = _process_cpu_s(self.postmaster, reaped_children=True)
            for child in self.postmaster.children():
                try:
                    total += _process_cpu_s(child)
                except psutil.Error:
                    continue  # ended between the listing and the reading: the postmaster counts it once reaped
            return total
        active = int(self._run(self._connection().fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")))
        now = time.monotonic()
        if self.last_t is not None:
            self.active_s += active * (now - self.last_t)
        self.last_t = now
        return self.active_s

    def close(self) -> None:
        """Close the connection and the sampler's own event loop."""
        if self._conn is not None and not self._conn.is_closed():
            try:
                self._run(self._conn.close())
            except (OSError, asyncpg.PostgresError, TimeoutError):
                self._conn.terminate()
        self._loop.close()


def locust_children() -> list[int]:
    """Every Locust process this process started (directly or below), the default load generator."""
    found: list[int] = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("locust" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


class GeneratorCpu:
    """The busiest load-generator process's share of one core between two readings."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.seen: dict[int, tuple[psutil.Process, float, float]] = {}  # pid: (process, cpu s, monotonic s)

    def read(self) -> tuple[float | None, int]:
        """(peak % of a core since the last reading or None on the first, processes measured)."""
        peak: float | None = None
        now_seen: dict[int, tuple[psutil.Process, float, float]] = {}
        for pid in self.pids():
            try:
                known = self.seen.get(pid)
                process = known[0] if known is not None and known[0].is_running() else psutil.Process(pid)
                cpu_s, now = _process_cpu_s(process), time.monotonic()
            except psutil.Error:
                continue
            now_seen[pid] = (process, cpu_s, now)
            if known is not None and known[0] is process and now > known[2]:
                share = 100.0 * (cpu_s - known[1]) / (now - known[2])
                peak = share if peak is None else max(peak, share)
        self.seen = now_seen
        return (None if peak is None else round(peak, 1)), len(now_seen)


class Sampler:
    """A background thread writing the gateway's, Redis's, PostgreSQL's and the generator's figures to ``out``."""

    def __init__(self, gateway_url: str, metrics_token: str, redis_url: str, pg_dsn: str | None, out: Path,
                 interval_s: float = 1.0, generator_pids: Callable[[], list[int]] | None = None) -> None:
        self.gateway_url = gateway_url
        self.metrics_token = metrics_token
        self.redis_url = redis_url
        self.pg_dsn = pg_dsn
        self.out = Path(out)
        self.interval_s = interval_s
        self.generator = GeneratorCpu(generator_pids or locust_children)
        self.lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start sampling (the first line at once)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="examgate-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write a last line and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SCRAPE_TIMEOUT_S + 4 * STORE_TIMEOUT_S + 5)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=STORE_TIMEOUT_S,
                                      socket_connect_timeout=STORE_TIMEOUT_S)
        pg = PgCpu(self.pg_dsn) if self.pg_dsn else None
        next_at = time.monotonic()
        try:
            with open(self.out, "a", encoding="utf-8") as fh:
                while True:
                    stopping = self._stop.is_set()
                    try:
                        line = self.sample(client, pg)
                    except Exception as exc:  # a failure no source expects must not end the sampling of a run
                        line = {"t": round(time.time(), 3), "gateway": {}, "redis_cpu_s": None, "pg_cpu_s": None,
                                "generator_cpu_pct": None, "errors": {"sampler": repr(exc)[:200]}}
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                    fh.flush()
                    self.lines += 1
                    if stopping:
                        return
                    # On schedule; a slow tick (a scrape waiting on a busy gateway) is not made up for.
                    next_at = max(next_at + self.interval_s, time.monotonic())
                    self._stop.wait(next_at - time.monotonic())
        finally:
            client.close()
            if pg is not None:
                pg.close()

    def sample(self, client: redis.Redis, pg: PgCpu | None) -> dict[str, Any]:
        """One line: every source read now; one that fails leaves its field empty and says why in ``errors``."""
        line: dict[str, Any] = {"t": round(time.time(), 3), "gateway": {}, "redis_cpu_s": None, "pg_cpu_s": None,
                                "pg_cpu_source": pg.source if pg is not None else None}
        errors: dict[str, str] = {}
        try:
            line["gateway"] = scrape(self.gateway_url, self.metrics_token)
        except (OSError, ValueError) as exc:  # refused, timed out, 5xx, a restart's half-written answer
            errors["gateway"] = str(exc)[:200]
        try:
            cpu = client.info("cpu")
            line["redis_cpu_s"] = round(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), 3)
        except (redis.RedisError, KeyError, ValueError) as exc:
            errors["redis"] = str(exc)[:200]
        if pg is not None:
            try:
                line["pg_cpu_s"] = round(pg.read(), 3)
                line["pg_cpu_source"] = pg.source
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, psutil.Error) as exc:
                errors["postgres"] = str(exc)[:200] or type(exc).__name__
                pg.postmaster = None
                pg.source = None  # a restarted server has another postmaster: find it again
        line["generator_cpu_pct"], line["generator_processes"] = self.generator.read()
        if errors:
            line["errors"] = errors
        return line
