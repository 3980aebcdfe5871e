"""One Redis GET per request: auto-pipelined client vs plain redis-py vs a route doing nothing vs the floor.

One gateway process pinned to core 0, wrk on core 1, 64 connections; the bare aiohttp app
(``benchmarks.bare_app``, pinned to core 0 too) and the three routes are measured in interleaved
rounds in one run and the per-round ratios' median is reported. The targets are ratios to the
bare app: the do-nothing route says what the edge costs a request, the GET route what one Redis
round trip adds; the ratios to examgate's own do-nothing route stay beside them.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import bare_app, measure_routes, median_rps, ratio, scratch_stores
from loadtest.processes import start_gateway

ROUTES = {"noop": "/_bench/noop", "auto": "/_bench/redis-get", "plain": "/_bench/redis-get-plain"}


def run(rounds: int = 3, duration_s: int = 6) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    with scratch_stores() as (pg_dsn, redis_url), bare_app() as bare_url:
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true",
                                EXAMGATE_REDIS_CONNECTIONS="1")
        try:
            samples = measure_routes(gateway.url, {"bare": bare_url + "/noop", **ROUTES}, rounds=rounds,
                                     duration_s=duration_s)
        finally:
            gateway.stop()
    noop_vs_bare = ratio(samples, "noop", "bare")
    auto_vs_bare = ratio(samples, "auto", "bare")
    auto_ratio = ratio(samples, "auto", "noop")
    plain_ratio = ratio(samples, "plain", "noop")
    details = {"requests_per_s": median_rps(samples), "samples": samples, "connections": 64,
               "gateway_processes": 1}
    return [
        {"benchmark": "redis_get", "metric": "noop_rps", "value": median_rps(samples)["noop"], "unit": "req/s",
         "target": None, "passed": None, "details": details},
        {"benchmark": "redis_get", "metric": "noop_vs_bare_aiohttp", "value": round(noop_vs_bare, 3),
         "unit": "×", "target": ">= 0.85", "passed": noop_vs_bare >= 0.85,
         "details": {"meaning": "examgate's do-nothing route through the whole edge, over aiohttp's own"}},
        {"benchmark": "redis_get", "metric": "auto_pipelined_get_vs_bare_aiohttp", "value": round(auto_vs_bare, 3),
         "unit": "×", "target": ">= 0.8", "passed": auto_vs_bare >= 0.8, "details": {}},
        {"benchmark": "redis_get", "metric": "auto_pipelined_get_vs_noop", "value": round(auto_ratio, 3),
         "unit": "×", "target": None, "passed": None, "details": {}},
        {"benchmark": "redis_get", "metric": "plain_redis_py_get_vs_noop", "value": round(plain_ratio, 3),
         "unit": "×", "target": "about 0.3 (baseline)", "passed": None, "details": {}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
