"""What every benchmark needs: scratch stores it creates and removes itself."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from core import db, migrate

PG_SERVER = os.environ.get("EXAMGATE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("EXAMGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@contextmanager
def scratch_database(prefix: str = "examgate_bench") -> Iterator[str]:
    """A migrated database made for one benchmark, dropped afterwards."""
    dsn = db.with_database(PG_SERVER, f"{prefix}_{secrets.token_hex(3)}")

    asyncio.run(migrate.create_and_migrate(dsn))
    try:
        yield dsn
    finally:
        asyncio.run(db.drop_database(dsn))


@contextmanager
def scratch_stores() -> Iterator[tuple[str, str]]:
    """A scratch database and the benchmarks' Redis database (flushed before and after)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        with scratch_database() as dsn:
            yield dsn, REDIS_URL
    finally:
        client.flushdb()
        client.close()


@contextmanager
def bare_app(cpus: str = "0") -> Iterator[str]:
    """The bare aiohttp + uvloop app (``benchmarks.bare_app``) pinned like the gateway: its base URL while it runs."""
    from loadtest.processes import free_port, wait_http

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bare_app", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/noop")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def measure_routes(base_url: str, routes: dict[str, str], *, rounds: int = 3, duration_s: int = 6,
                   label: str = "") -> dict[str, list[float]]:
    """Requests/s of each route, measured in interleaved rounds (alternating order) after a short warm-up.

    A route given as a whole URL (the bare app's) is measured there instead of on ``base_url``.
    """
    from benchmarks.wrk import run_wrk

    urls = {name: path if path.startswith("http") else base_url + path for name, path in routes.items()}
    for url in urls.values():
        run_wrk(url, duration_s=2)
    samples: dict[str, list[float]] = {name: [] for name in urls}
    order = list(urls.items())
    for round_no in range(rounds):
        # Odd rounds run the routes in reverse, so a machine whose speed drifts during a round
        # favours no route: on a shared VM the do-nothing route alone varies ±25 % minute to minute.
        for name, url in (order if round_no % 2 == 0 else order[::-1]):
            result = run_wrk(url, duration_s=duration_s)
            if result.non_2xx:
                raise RuntimeError(f"{url}: {result.non_2xx} non-2xx responses")
            samples[name].append(result.requests_per_s)
            print(f"  {label}round {round_no + 1}/{rounds} {routes[name]}: {result.requests_per_s:,.0f} req/s",
                  flush=True)
    return samples


def ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of name/baseline (each pair measured seconds apart)."""
    import statistics

    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline], strict=True))


def median_rps(samples: dict[str, list[float]]) -> dict[str, float]:
    """Median requests/s per route."""
    import statistics

    return {name: round(statistics.median(values)) for name, values in samples.items()}


def scrape_metrics(base_url: str, token: str) -> dict[str, float]:
    """The gateway's ``/metrics`` as ``{'name{labels}': value}`` (comments dropped), scraped with ``token``.

    A process renders at most once per ``EXAMGATE_METRICS_CACHE_S`` (1 s): two scrapes less
    than that apart may read the same figures.
    """
    import urllib.request

    request = urllib.request.Request(base_url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def wait_config_version(base_url: str, version: int, timeout_s: float = 5) -> None:
    """Wait until the gateway answering ``base_url`` runs live config ``version`` or newer."""
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(base_url + "/healthz", timeout=5) as resp:
            if int(json.loads(resp.read())["config_version"]) >= version:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"live config version {version} not applied in {timeout_s} s")
        time.sleep(0.05)
