"""The sampler beside a run: the gateway's /metrics, Redis's and PostgreSQL's CPU and the generator's, once a tick.

Against the load tests' stack (a real 2-process gateway, Redis, PostgreSQL on this machine), and
against sources that are not there or go away for a few ticks.
"""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from loadtest.pg_server import PostgresUnavailable, start_postgres
from loadtest.processes import free_port, start_redis
from loadtest.rehearsal_runs import read_metrics
from loadtest.sampler import PgCpu, Sampler, parse_metrics
from tests.conftest import TEST_REDIS_URL
from tests.loadtest.conftest import Stack

pytestmark = pytest.mark.timeout(90)


@pytest.mark.unit
def test_the_exposition_is_read_without_buckets_and_creation_stamps() -> None:
    text = "\n".join([
        "# HELP examgate_requests_in_flight Requests being handled",
        "# TYPE examgate_requests_in_flight gauge",
        "examgate_requests_in_flight 3.0",
        'examgate_request_duration_seconds_bucket{le="0.5",route="health.live"} 7.0',
        'examgate_request_duration_seconds_sum{route="health.live"} 0.25',
        'examgate_shed_total{reason="loop_lag",route_class="login"} 2.0',
        'examgate_shed_created{reason="loop_lag",route_class="login"} 1.7e9',
        "", "garbled line",
    ])
    assert parse_metrics(text) == {
        "examgate_requests_in_flight": 3.0,
        'examgate_request_duration_seconds_sum{route="health.live"}': 0.25,
        'examgate_shed_total{reason="loop_lag",route_class="login"}': 2.0,
    }


def _poke(url: str, until: float) -> None:
    while time.monotonic() < until:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            resp.read()
        time.sleep(0.01)


def test_a_tick_holds_the_gateway_redis_postgres_and_the_busiest_generator_process(stack: Stack,
                                                                                    tmp_path: Path) -> None:
    out = tmp_path / "metrics.jsonl"
    # A stand-in load generator that keeps one core busy: its share must read near 100 % of a core.
    burn = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", burn])
    try:
        with Sampler(stack.gateway.url, stack.gateway.metrics_token(), TEST_REDIS_URL, stack.dsn, out,
                     interval_s=0.5, generator_pids=lambda: [busy.pid]) as sampler:
            _poke(stack.gateway.url, time.monotonic() + 3)
    finally:
        busy.kill()
        busy.wait()
    lines = read_metrics(out)
    assert len(lines) == sampler.lines >= 6
    assert [line["t"] for line in lines] == sorted(line["t"] for line in lines)
    assert all("errors" not in line for line in lines), [line.get("errors") for line in lines]
    gateway = lines[-1]["gateway"]
    assert "examgate_requests_in_flight" in gateway
    assert any(name.startswith("examgate_event_loop_lag_last_seconds{") for name in gateway)
    assert any(name.startswith('examgate_password_pool_jobs{state="capacity"') for name in gateway)
    assert not [name for name in gateway if name.partition("{")[0].endswith(("_bucket", "_created"))]
    answered = [sum(v for k, v in line["gateway"].items() if k.startswith("examgate_requests_total{"))
                for line in lines]
    assert answered[-1] > answered[0]  # the pokes are counted as they happen
    redis_cpu = [line["redis_cpu_s"] for line in lines]
    assert redis_cpu[0] > 0 and redis_cpu == sorted(redis_cpu)
    pg_cpu = [line["pg_cpu_s"] for line in lines]
    assert {line["pg_cpu_source"] for line in lines} == {"proc"}  # the test server runs on this machine
    assert pg_cpu[0] > 0 and pg_cpu == sorted(pg_cpu)
    generator = [line["generator_cpu_pct"] for line in lines]
    assert generator[0] is None  # a share needs two readings
    assert all(line["generator_processes"] == 1 for line in lines)
    assert max(generator[1:]) > 40, generator  # one busy process on a shared 2-core machine: near a core


def test_without_a_local_postmaster_postgres_is_measured_in_active_backend_seconds(stack: Stack) -> None:
    async def busy_backend() -> None:
        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute("SELECT pg_sleep(1.2)")
        finally:
            await conn.close()

    pg = PgCpu(stack.dsn, local=False)
    try:
        assert pg.read() == 0.0
        assert pg.source == "pg_stat_activity"
        worker = threading.Thread(target=asyncio.run, args=(busy_backend(),))
        worker.start()
        time.sleep(0.4)
        pg.read()
        time.sleep(0.5)
        active_s = pg.read()
        worker.join()
    finally:
        pg.close()
    assert 0.4 <= active_s <= 2.0  # one backend active for the half second between the last two readings


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"examgate_requests_in_flight 1.0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def _serving(port: int) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_source_away_for_a_few_ticks_leaves_its_fields_empty_and_sampling_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "metrics.jsonl"
    port = free_port()
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # no Redis listens there: every tick says so
    with _serving(port):
        sampler = Sampler(f"http://127.0.0.1:{port}", "token", nobody, None, out, interval_s=0.2,
                          generator_pids=lambda: [])
        sampler.start()
        time.sleep(0.7)
    time.sleep(0.8)  # the gateway gone: restarting, say
    with _serving(port):
        time.sleep(0.7)
        sampler.stop()
    lines = read_metrics(out)
    up = [bool(line["gateway"]) for line in lines]
    assert up[0] and up[-1] and not all(up), up  # up, away for some ticks, up again
    assert "gateway" in lines[up.index(False)]["errors"]
    assert all(line["redis_cpu_s"] is None and "redis" in line["errors"] for line in lines)
    assert all(line["pg_cpu_s"] is None and line["generator_cpu_pct"] is None for line in lines)
    assert len(lines) >= 8


def _both_read(line: dict[str, Any]) -> bool:
    return line["redis_cpu_s"] is not None and line["pg_cpu_s"] is not None


def _read_again(since_down: list[dict[str, Any]]) -> bool:
    """Each went unread at some sample, and both were read at a later one."""
    missed = [next((i for i, line in enumerate(since_down) if line[key] is None), None)
              for key in ("redis_cpu_s", "pg_cpu_s")]
    if None in missed:
        return False
    return any(_both_read(line) for line in since_down[max(i for i in missed if i is not None) + 1:])


def test_redis_and_postgres_restarted_mid_run_are_read_again_once_back(tmp_path: Path) -> None:
    try:
        postgres = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    redis_server = start_redis()
    out = tmp_path / "metrics.jsonl"
    try:
        with Sampler(f"http://127.0.0.1:{free_port()}", "token", redis_server.url, postgres.dsn, out,
                     interval_s=0.25, generator_pids=lambda: []):
            time.sleep(0.8)
            before = len(read_metrics(out))
            redis_server.stop()  # killed: a crash
            postgres.stop()
            time.sleep(0.8)
            redis_server.start()
            postgres.start()
            back_by = time.monotonic() + 20  # read again at a sample taken once both answer
            while time.monotonic() < back_by and not _read_again(read_metrics(out)[before:]):
                time.sleep(0.25)
        lines = read_metrics(out)
    finally:
        redis_server.stop()
        postgres.destroy()
    down = lines[before:]
    assert lines[0]["redis_cpu_s"] is not None and lines[0]["pg_cpu_source"] == "proc"
    assert any(line["redis_cpu_s"] is None and "redis" in line["errors"] for line in down)
    assert any(line["pg_cpu_s"] is None and "postgres" in line["errors"] for line in down)
    last = lines[-1]
    assert _both_read(last), last
    assert last["pg_cpu_source"] == "proc"  # the new postmaster found
