"""What one request of a peak path costs each store and the gateway, measured around a benchmark's rounds.

A benchmark makes a ``Meter`` for its gateway and scratch stores and wraps each *measured* run of a
peak path in ``meter.round(path)``; the meter adds up, over the path's rounds:

- **gateway CPU**: the CPU time of the gateway process and its descendants, every thread
  (``/proc/PID/task/*/schedstat``, nanoseconds: the event loop, the hashing and photo threads);
- **Redis**: the calls of every command but the meter's own INFO (``INFO commandstats``; commands
  run inside a script are counted too, beside the script call itself) and the CPU time of Redis'
  main thread
  (``INFO cpu`` ``used_cpu_*_main_thread``: the one thread that bounds a shard);
- **PostgreSQL**: the scratch database's ``pg_stat_database`` counters (``xact_commit``,
  ``tup_inserted`` + ``tup_updated`` + ``tup_deleted``), read from the server's maintenance
  database so the reads themselves count nowhere. A backend publishes its counters when it goes
  idle, at most once a second: the closing read waits ``PG_SETTLE_S`` after the round.

Redis is a shared server (other databases' clients run on it too), so each meter first samples it
for ``BACKGROUND_S`` with its gateway idle and subtracts that background rate from every round (the
raw figures are kept beside the net ones). Every finished round updates ``RECORDED`` (path → costs),
which ``python -m benchmarks`` writes into the results' ``"costs"`` section.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

from core import db

BACKGROUND_S = 3.0
PG_SETTLE_S = 1.2
RECORDED: dict[str, dict[str, Any]] = {}
_REQUESTS = re.compile(r"(\d+) requests in")


def wrk_requests(output: str) -> int:
    """The requests a wrk run completed (its ``N requests in …`` line)."""
    found = _REQUESTS.search(output)
    return int(found[1]) if found else 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from each task's ``children`` list)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def process_cpu_ns(pid: int) -> int:
    """CPU time (ns) of ``pid``, its descendants and all their threads; 0 where ``/proc`` is missing."""
    total = 0
    for process in _descendants(pid):
        for stat in Path(f"/proc/{process}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def redis_counters(client: redis.Redis) -> dict[str, float]:
    """Redis' main-thread CPU seconds (``cpu_s``) and each command's calls (``calls:<name>``)."""
    cpu = client.info("cpu")
    counters: dict[str, float] = {
        "cpu_s": float(cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"]))
        + float(cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"]))}
    for name, stats in client.info("commandstats").items():
        counters[f"calls:{name.removeprefix('cmdstat_')}"] = float(stats["calls"])
    return counters


async def _pg_counters(server_dsn: str, database: str) -> dict[str, float]:
    conn = await asyncpg.connect(server_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows_written"
            " FROM pg_stat_database WHERE datname = $1", database)
    finally:
        await conn.close()
    return {"xact_commit": float(row["xact_commit"]), "rows_written": float(row["rows_written"])} if row else {}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


@dataclass
class Round:
    """One measured run: set ``requests`` to what it completed (``wrk_requests`` for a wrk run)."""

    requests: int = 0


@dataclass
class _Totals:
    requests: int = 0
    seconds: float = 0.0
    rounds: int = 0
    load_1m: list[float] = field(default_factory=list)
    gateway_cpu_ns: int = 0
    redis: dict[str, float] = field(default_factory=dict)
    postgresql: dict[str, float] = field(default_factory=dict)


class Meter:
    """Costs per request of the paths one gateway serves (see the module)."""

    def __init__(self, benchmark: str, gateway_pid: int, redis_url: str, pg_dsn: str, *,
                 background_s: float = BACKGROUND_S) -> None:
        self.benchmark = benchmark
        self.gateway_pid = gateway_pid
        self.redis = redis.Redis.from_url(redis_url)
        self.pg_dsn = pg_dsn
        self.pg_server = db.with_database(pg_dsn, "postgres")
        self.database = pg_dsn.rsplit("/", 1)[1].split("?", 1)[0]
        self.totals: dict[str, _Totals] = {}
        before, started = redis_counters(self.redis), time.perf_counter()
        time.sleep(background_s)
        elapsed = time.perf_counter() - started
        self.background_per_s = {name: value / elapsed
                                 for name, value in _delta(redis_counters(self.redis), before).items() if value}

    def _pg(self) -> dict[str, float]:
        return asyncio.run(_pg_counters(self.pg_server, self.database))

    @contextmanager
    def round(self, path: str) -> Iterator[Round]:
        """Measure one run of ``path``; the caller sets the yielded ``Round.requests``."""
        pg_before = self._pg()
        redis_before = redis_counters(self.redis)
        cpu_before, started = process_cpu_ns(self.gateway_pid), time.perf_counter()
        measured = Round()
        yield measured
        cpu_after, seconds = process_cpu_ns(self.gateway_pid), time.perf_counter() - started
        redis_after = redis_counters(self.redis)
        time.sleep(PG_SETTLE_S)
        pg_after = self._pg()
        totals = self.totals.setdefault(path, _Totals())
        totals.requests += measured.requests
        totals.seconds += seconds
        totals.rounds += 1
        totals.load_1m.append(os.getloadavg()[0])
        totals.gateway_cpu_ns += cpu_after - cpu_before
        for name, value in _delta(redis_after, redis_before).items():
            totals.redis[name] = totals.redis.get(name, 0.0) + value
        for name, value in _delta(pg_after, pg_before).items():
            totals.postgresql[name] = totals.postgresql.get(name, 0.0) + value
        RECORDED[path] = self.costs(path)

    def costs(self, path: str) -> dict[str, Any]:
        """The path's costs per request so far (net of Redis' background), with the raw totals."""
        t = self.totals[path]
        n = max(1, t.requests)
        net = {name: value - self.background_per_s.get(name, 0.0) * t.seconds for name, value in t.redis.items()}
        calls = {name.removeprefix("calls:"): value for name, value in net.items()
                 if name.startswith("calls:") and name != "calls:info" and value / n >= 0.005}
        scripts = sum(value for name, value in calls.items() if name in ("evalsha", "eval", "fcall", "fcall_ro"))
        return {
            "benchmark": self.benchmark, "requests": t.requests, "rounds": t.rounds, "seconds": round(t.seconds, 2),
            "requests_per_s": round(t.requests / t.seconds, 1) if t.seconds else None,
            "gateway_cpu_us": round(t.gateway_cpu_ns / 1000 / n, 1),
            "gateway_cores_busy": round(t.gateway_cpu_ns / 1e9 / t.seconds, 3) if t.seconds else None,
            "redis_cpu_us": round(max(0.0, net.get("cpu_s", 0.0)) * 1e6 / n, 2),
            "redis_commands": round(sum(calls.values()) / n, 3),
            "redis_script_calls": round(scripts / n, 3),
            "redis_calls_by_command": {name: round(value / n, 3) for name, value in sorted(calls.items())},
            "redis_deferred_writes": round(calls.get("xadd", 0.0) / n, 3),
            "pg_rows_written": round(t.postgresql.get("rows_written", 0.0) / n, 3),
            "pg_transactions": round(t.postgresql.get("xact_commit", 0.0) / n, 3),
            "raw": {"gateway_cpu_s": round(t.gateway_cpu_ns / 1e9, 3),
                    "redis": {k: round(v, 4) for k, v in t.redis.items() if v},
                    "redis_background_per_s": {k: round(v, 4) for k, v in self.background_per_s.items()},
                    "postgresql": t.postgresql},
            "load_average_1m": {"min": round(min(t.load_1m), 2), "max": round(max(t.load_1m), 2)},
            "source": {"gateway_pid_tree": self.gateway_pid, "cpu_count": os.cpu_count(),
                       "pg_settle_s": PG_SETTLE_S},
        }

    def close(self) -> None:
        """Close the Redis connection."""
        self.redis.close()


@contextmanager
def metered(meter: Meter | None, path: str) -> Iterator[Round]:
    """``meter.round(path)``, or a round nobody records when ``meter`` is None (a warm-up, an unmetered load)."""
    if meter is None:
        yield Round()
        return
    with meter.round(path) as measured:
        yield measured
