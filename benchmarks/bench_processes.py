"""One gateway process and two: the do-nothing route and one auto-pipelined Redis GET.

The other benchmarks pin one gateway process to core 0 and wrk to core 1, so that ratios
compare like with like. Production runs ``--workers N`` (one per core); this shows what the
second process adds on this machine: one process pinned to core 0, then two processes free
to use both cores — which they share with wrk, still pinned to core 1, so on two cores the
second process mostly competes with the load generator. Measured in interleaved rounds;
no target (the scaling depends on the cores the machine has beyond the generator's).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.common import scratch_stores
from benchmarks.wrk import run_wrk
from loadtest.processes import start_gateway

ROUNDS = 3
ROUND_S = 4
ROUTES = {"noop": "/_bench/noop", "redis_get": "/_bench/redis-get"}


def run() -> list[dict[str, Any]]:
    """Measure and return the figures."""
    samples: dict[str, list[float]] = {f"{name}_{n}p": [] for n in (1, 2) for name in ROUTES}
    with scratch_stores() as (pg_dsn, redis_url):
        gateways = {1: start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")}
        try:
            gateways[2] = start_gateway(pg_dsn, redis_url, workers=2, EXAMGATE_BENCH_ROUTES="true")
            for gateway in gateways.values():
                for path in ROUTES.values():
                    run_wrk(gateway.url + path, duration_s=1)
            for round_no in range(ROUNDS):
                order = [(n, name) for n in (1, 2) for name in ROUTES]
                for n, name in order if round_no % 2 == 0 else order[::-1]:
                    rps = run_wrk(gateways[n].url + ROUTES[name], duration_s=ROUND_S).requests_per_s
                    samples[f"{name}_{n}p"].append(rps)
                    print(f"  round {round_no + 1}/{ROUNDS} {name}, {n} process(es): {rps:,.0f} req/s", flush=True)
        finally:
            for gateway in gateways.values():
                gateway.stop()
    median = {name: round(statistics.median(values)) for name, values in samples.items()}
    figures = []
    for name in ROUTES:
        one, two = median[f"{name}_1p"], median[f"{name}_2p"]
        figures += [
            {"benchmark": "processes", "metric": f"{name}_1_process_rps", "value": one, "unit": "req/s",
             "target": None, "passed": None, "details": {"samples": samples[f"{name}_1p"], "gateway_cpus": "0"}},
            {"benchmark": "processes", "metric": f"{name}_2_processes_rps", "value": two, "unit": "req/s",
             "target": None, "passed": None,
             "details": {"samples": samples[f"{name}_2p"], "gateway_cpus": "any (shared with wrk on core 1)",
                         "vs_1_process": round(two / one, 2)}},
        ]
    return figures


if __name__ == "__main__":
    for figure in run():
        print(figure)
