"""``examgate serve`` with two processes: both serve, metrics add up, SIGTERM drains."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

from loadtest.processes import Process, start_gateway


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2)
    yield process
    assert process.stop() == 0, process.log()


def metric_total(text: str, route: str) -> float:
    pattern = re.compile(r'^examgate_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
    total = 0.0
    for match in pattern.finditer(text):
        if f'route="{route}"' in match["labels"]:
            total += float(match["value"])
    return total


def histogram_count(text: str, route: str) -> float:
    pattern = re.compile(r'^examgate_request_duration_seconds_count\{route="(?P<route>[^"]*)"\} (?P<value>\S+)$', re.M)
    return sum(float(m["value"]) for m in pattern.finditer(text) if m["route"] == route)


async def test_two_processes_serve_and_metrics_add_up(gateway: Process) -> None:
    pids: set[int] = set()
    sent = 0
    deadline = time.monotonic() + 30
    # New connections are spread over the processes by the kernel (SO_REUSEPORT).
    while len(pids) < 2 or sent < 200:
        assert time.monotonic() < deadline, f"only saw processes {pids}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            replies = await asyncio.gather(*(session.get(gateway.url + "/healthz") for _ in range(20)))
            for reply in replies:
                assert reply.status == 200
                pids.add((await reply.json())["pid"])
                reply.release()
            sent += len(replies)

    # Each process exports what it counted once a second (and the one scraped, before it renders; a
    # render is reused for a second): within a few seconds the sum is exact, never above it.
    scraper = {"Authorization": f"Bearer {gateway.metrics_token()}"}
    seen: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not seen or seen[-1] != sent:
            assert time.monotonic() < deadline + 5, f"/healthz counted {seen}, sent {sent}"
            async with session.get(gateway.url + "/metrics", headers=scraper) as resp:
                text = await resp.text()
            seen.append(metric_total(text, "/healthz"))
            assert seen[-1] <= sent
            await asyncio.sleep(0.25)
    assert histogram_count(text, "/healthz") == sent
    assert "examgate_request_duration_seconds_bucket" in text
    assert "examgate_event_loop_lag_seconds_bucket" in text
    lag_pids = set(re.findall(r'examgate_event_loop_lag_last_seconds\{pid="(\d+)"\}', text))
    assert {int(p) for p in lag_pids} >= pids


async def test_exams_answer_through_the_served_gateway(gateway: Process) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/api/v1/exams") as resp:
            assert resp.status == 200
            assert isinstance(await resp.json(), list)
            assert resp.headers["X-Request-Id"]


def test_sigterm_drains_in_flight_requests(pg_dsn: str) -> None:
    from tests.conftest import TEST_REDIS_URL

    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, EXAMGATE_BENCH_ROUTES="true")

    async def slow_then_stop() -> int:
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(session.get(process.url + "/_bench/sleep?ms=1500"))
            await asyncio.sleep(0.5)
            process.proc.send_signal(signal.SIGTERM)
            async with await request as resp:
                return resp.status

    try:
        assert asyncio.run(slow_then_stop()) == 200
        assert process.proc.wait(20) == 0
        assert "draining" in process.log()
    finally:
        process.stop()


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    script = ("import resource; from gateway.serve import raise_open_files_limit; "
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
              "print(raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30)
    limit, soft, hard = (int(part) for part in done.stdout.split())
    assert limit == soft
    assert soft == hard or hard == -1  # -1: unlimited, raised to a ceiling instead
