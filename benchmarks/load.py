"""An asyncio + aiohttp HTTP load generator for POST routes, run in its own process pinned to a core.

Two shapes:

- **closed loop** (``mode: closed``): ``concurrency`` clients, each sending its next request
  when the previous answer arrives; it counts the answers with ``ok_status`` completed inside
  the measured window (after ``warmup_s``), i.e. the throughput the server sustains.
- **open loop** (``mode: open``): requests started at a fixed rate whatever the answers
  (no coordinated omission: a slow server does not slow the sender down); each request's
  latency is measured from the time it was *scheduled*, and every answer's status, latency
  and error code is returned.

The parent calls ``run_load(spec)``; the child reads the spec as JSON on stdin and writes its
result as JSON on stdout, so the load never shares a core or an event loop with the gateway.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0–100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_load(spec: dict[str, Any], *, cpus: str | None = "1") -> dict[str, Any]:
    """Run one load in a child process pinned to ``cpus`` (taskset) and return its result."""
    command = [sys.executable, "-m", "benchmarks.load"]
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    budget_s = spec.get("warmup_s", 0) + spec["duration_s"] + spec.get("timeout_s", 10) + 30
    done = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True, timeout=budget_s)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _send(session: aiohttp.ClientSession, url: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, str]:
    """POST once; (status, error code or "") — status 0 when the request failed or timed out."""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            if resp.status < 300:
                return resp.status, ""
            try:
                error = orjson.loads(raw)["error"]
                reason = (error.get("details") or {}).get("reason")
                return resp.status, error["code"] + (f"/{reason}" if reason else "")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return resp.status, "unreadable"
    except TimeoutError:
        return 0, "timeout"
    except aiohttp.ClientError as exc:
        return 0, type(exc).__name__


async def _get(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as resp:
        await resp.read()


def _session(spec: dict[str, Any]) -> aiohttp.ClientSession:
    # limit=0: as many connections as requests in flight, so the client never queues them itself.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout_s", 10))
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """``concurrency`` clients back to back; answers with ``ok_status`` per second inside the window."""
    url, headers = spec["url"], {"Content-Type": "application/json", **spec.get("headers", {})}
    bodies = [orjson.dumps(b) for b in spec["bodies"]]
    warmup_s, duration_s = spec.get("warmup_s", 1.0), spec["duration_s"]
    ok_status = spec.get("ok_status", 200)
    statuses: dict[str, int] = {}
    latencies_ms: list[float] = []
    window = {"open": False, "ok": 0}
    stop = asyncio.Event()

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = i
        while not stop.is_set():
            started = time.perf_counter()
            status, code = await _send(session, url, bodies[n % len(bodies)], headers)
            n += spec["concurrency"]
            if window["open"] and not stop.is_set():
                key = f"{status} {code}".strip()
                statuses[key] = statuses.get(key, 0) + 1
                latencies_ms.append((time.perf_counter() - started) * 1000)
                if status == ok_status:
                    window["ok"] += 1

    async with _session(spec) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(spec["concurrency"])]
        await asyncio.sleep(warmup_s)
        window["open"] = True
        opened = time.perf_counter()
        await asyncio.sleep(duration_s)
        stop.set()
        elapsed_s = time.perf_counter() - opened
        await asyncio.wait(tasks, timeout=spec.get("timeout_s", 10))
        for task in tasks:
            task.cancel()
    return {
        "mode": "closed", "concurrency": spec["concurrency"], "window_s": round(elapsed_s, 3),
        "ok": window["ok"], "ok_per_s": window["ok"] / elapsed_s, "statuses": statuses,
        "latency_ms": {"p50": percentile(latencies_ms, 50), "p99": percentile(latencies_ms, 99)},
    }


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """Requests started at ``rate_per_s`` for ``duration_s``; every answer as [status, latency_ms, code]."""
    url, headers = spec["url"], {"Content-Type": "application/json", **spec.get("headers", {})}
    bodies = [orjson.dumps(b) for b in spec["bodies"]]
    rate, duration_s = spec["rate_per_s"], spec["duration_s"]
    total = int(rate * duration_s)
    samples: list[list[Any]] = []
    late_ms: list[float] = []

    async def one(session: aiohttp.ClientSession, n: int, scheduled: float) -> None:
        status, code = await _send(session, url, bodies[n % len(bodies)], headers)
        samples.append([status, round((time.perf_counter() - scheduled) * 1000, 3), code])

    async with _session(spec) as session:
        # Open the first connections before the clock starts, so the run measures the server.
        warm_url = spec.get("warm_url", url.split("/api/", 1)[0] + "/healthz")
        await asyncio.gather(*(_get(session, warm_url) for _ in range(8)), return_exceptions=True)
        tasks = []
        start = time.perf_counter() + 0.05
        for n in range(total):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            late_ms.append(max(0.0, (time.perf_counter() - scheduled) * 1000))
            tasks.append(asyncio.create_task(one(session, n, scheduled)))
        sent_s = time.perf_counter() - start
        await asyncio.wait(tasks, timeout=spec.get("timeout_s", 10) + 2)
    return {"mode": "open", "rate_per_s": rate, "requests": total, "sent_in_s": round(sent_s, 3),
            "send_lateness_ms": {"p50": percentile(late_ms, 50), "p99": percentile(late_ms, 99)},
            "samples": samples}


def main() -> None:
    """Read a spec on stdin, run it, print the result as JSON."""
    spec = json.loads(sys.stdin.read())
    runner = {"closed": closed_loop, "open": open_loop}[spec["mode"]]
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(runner(spec))
    else:
        result = uvloop.run(runner(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
