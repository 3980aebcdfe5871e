"""The load generator's own ceiling, measured first: what wrk reaches against a server that does nothing.

A minimal HTTP server (``benchmarks.echo_server``: a uvloop protocol answering every request
with a fixed 200, no parsing beyond finding the end of each request) runs pinned to core 0,
as the gateway does in every other benchmark; wrk runs on core 1 with the same 64 connections.
The figure is at least wrk's ceiling here (the server may be what stops it); it is measured
again with a Lua script shaped like the benchmarks' own (a request picked per call, every
response's status counted), which costs wrk more per request. Every other
figure is valid only while it stays well below this: ``headroom`` is the ceiling over the
gateway's do-nothing route measured beside it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import scratch_stores
from benchmarks.wrk import LUA_STATUS_COUNTER, run_wrk
from loadtest.processes import free_port, start_gateway, wait_http

ROUNDS = 3
ROUND_S = 4
MIN_HEADROOM = 2.0  # the generator must manage at least twice what the gateway's best route does


def start_echo_server(port: int) -> subprocess.Popen[bytes]:
    """The do-nothing HTTP server pinned to core 0; waits until it answers."""
    command = [sys.executable, "-m", "benchmarks.echo_server", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
    except Exception:
        proc.kill()
        raise
    return proc


def _scripted(directory: Path) -> str:
    """A script shaped like the benchmarks' own: a POST body picked per request, every status counted."""
    path = directory / "scripted.lua"
    path.write_text("""local requests = {}
local n = 0
function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for i = 1, 1000 do requests[i] = wrk.format("POST", "/", headers, '{"exam_id":1,"id_number":"' .. i .. '"}') end
end
function request()
  n = n + 1
  return requests[n % 1000 + 1]
end
""" + LUA_STATUS_COUNTER)
    return str(path)


def run() -> list[dict[str, Any]]:
    """Measure and return the figures."""
    port = free_port()
    server = start_echo_server(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
            script = _scripted(Path(tmp))
            run_wrk(url, duration_s=2)
            ceiling = [run_wrk(url, duration_s=ROUND_S).requests_per_s for _ in range(ROUNDS)]
            scripted = [run_wrk(url, duration_s=ROUND_S, script=script).requests_per_s for _ in range(ROUNDS)]
    finally:
        server.kill()
        server.wait()
    with scratch_stores() as (pg_dsn, redis_url):
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")
        try:
            run_wrk(gateway.url + "/_bench/noop", duration_s=2)
            noop = [run_wrk(gateway.url + "/_bench/noop", duration_s=ROUND_S).requests_per_s for _ in range(ROUNDS)]
        finally:
            gateway.stop()
    best, noop_rps, lua = statistics.median(ceiling), statistics.median(noop), statistics.median(scripted)
    headroom = best / noop_rps
    print(f"  wrk ceiling {best:,.0f} req/s ({lua:,.0f} with a Lua script); gateway noop {noop_rps:,.0f} req/s; "
          f"headroom {headroom:.1f}×", flush=True)
    return [
        {"benchmark": "loadgen", "metric": "wrk_ceiling_rps", "value": round(best), "unit": "req/s",
         "target": None, "passed": None,
         "details": {"samples": ceiling, "server": "benchmarks.echo_server on core 0", "wrk_cpus": "1",
                     "connections": 64}},
        {"benchmark": "loadgen", "metric": "wrk_scripted_ceiling_rps", "value": round(lua), "unit": "req/s",
         "target": None, "passed": None,
         "details": {"samples": scripted, "script": "POST bodies chosen per request, every status counted "
                                                    "(the shape of the seats and lookups scripts)",
                     "vs_noop": round(lua / noop_rps, 2)}},
        {"benchmark": "loadgen", "metric": "headroom_over_noop", "value": round(headroom, 1), "unit": "×",
         "target": f">= {MIN_HEADROOM:g}", "passed": headroom >= MIN_HEADROOM,
         "details": {"noop_samples": noop, "meaning": "wrk's ceiling over the gateway's do-nothing route: "
                     "below 2× the load generator, not the gateway, would bound the figures"}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
