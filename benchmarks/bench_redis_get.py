"""One Redis GET per request: auto-pipelined client vs plain redis-py vs a route doing nothing.

One gateway process pinned to core 0, wrk on core 1, 64 connections; the three routes are
measured in interleaved rounds in one run and the median of each is compared.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.common import scratch_stores
from benchmarks.wrk import run_wrk
from loadtest.processes import start_gateway

ROUTES = {"noop": "/_bench/noop", "auto": "/_bench/redis-get", "plain": "/_bench/redis-get-plain"}


def run(rounds: int = 3, duration_s: int = 6) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    with scratch_stores() as (pg_dsn, redis_url):
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true",
                                EXAMGATE_REDIS_CONNECTIONS="1")
        try:
            for path in ROUTES.values():  # warm up: connections, caches, branch predictors
                run_wrk(gateway.url + path, duration_s=2)
            samples: dict[str, list[float]] = {name: [] for name in ROUTES}
            for round_no in range(rounds):
                for name, path in ROUTES.items():
                    result = run_wrk(gateway.url + path, duration_s=duration_s)
                    if result.non_2xx:
                        raise RuntimeError(f"{path}: {result.non_2xx} non-2xx responses")
                    samples[name].append(result.requests_per_s)
                    print(f"  round {round_no + 1}/{rounds} {path}: {result.requests_per_s:,.0f} req/s", flush=True)
        finally:
            gateway.stop()
    rps = {name: statistics.median(values) for name, values in samples.items()}
    # Ratios per round (routes measured seconds apart), then the median: robust to a noisy neighbour.
    auto_ratio = statistics.median(a / n for a, n in zip(samples["auto"], samples["noop"]))
    plain_ratio = statistics.median(p / n for p, n in zip(samples["plain"], samples["noop"]))
    details = {"requests_per_s": rps, "samples": samples, "connections": 64, "gateway_processes": 1}
    return [
        {"benchmark": "redis_get", "metric": "noop_rps", "value": round(rps["noop"]), "unit": "req/s",
         "target": None, "passed": None, "details": details},
        {"benchmark": "redis_get", "metric": "auto_pipelined_get_vs_noop", "value": round(auto_ratio, 3),
         "unit": "×", "target": ">= 0.8", "passed": auto_ratio >= 0.8, "details": {}},
        {"benchmark": "redis_get", "metric": "plain_redis_py_get_vs_noop", "value": round(plain_ratio, 3),
         "unit": "×", "target": "about 0.3 (baseline)", "passed": None, "details": {}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
