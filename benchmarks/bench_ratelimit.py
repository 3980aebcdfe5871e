"""A route checked by 3 rate-limit rules vs the bare aiohttp app, the same route with none, and ``limits``.

The rules are generous (nothing is refused): the benchmark measures what deciding them
costs. The target is a ratio to the framework's floor (``benchmarks.bare_app``, measured in
the same rounds); the ratio to examgate's own do-nothing route stays beside it as a secondary
figure. ``limits`` is the peer library, measured through the same edge with one rule of its
moving window (async redis-py storage): a figure, no target.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import bare_app, measure_routes, median_rps, ratio, scratch_stores
from loadtest.processes import start_gateway

ROUTES = {"none": "/_bench/noop", "three_rules": "/_bench/throttled", "limits_moving_window": "/_bench/limits"}
GENEROUS = {"rate": 10_000_000, "period_s": 1, "burst": 10_000_000, "mode": "enforce", "on_redis_error": "open"}
RULES = [
    {"id": "bench-ip", "routes": ["bench.throttled"], "key": "ip", **GENEROUS},
    {"id": "bench-global", "routes": ["bench.throttled"], "key": "global", **GENEROUS},
    {"id": "bench-ip-hour", "routes": ["bench.throttled"], "key": "ip", **{**GENEROUS, "period_s": 3600}},
]


def run(rounds: int = 7, duration_s: int = 4) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    with scratch_stores() as (pg_dsn, redis_url), bare_app() as bare_url:
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true",
                                EXAMGATE_REDIS_CONNECTIONS="1")
        try:
            gateway.patch_config({"ratelimit": {"rules": RULES}, "shedding": {"max_loop_lag_ms": 0}})
            samples = measure_routes(gateway.url, {"bare": bare_url + "/noop", **ROUTES}, rounds=rounds,
                                     duration_s=duration_s)
        finally:
            gateway.stop()
    vs_bare = ratio(samples, "three_rules", "bare")
    vs_none = ratio(samples, "three_rules", "none")
    vs_limits = ratio(samples, "three_rules", "limits_moving_window")
    return [
        {"benchmark": "ratelimit", "metric": "three_rules_vs_bare_aiohttp", "value": round(vs_bare, 3), "unit": "×",
         "target": ">= 0.6", "passed": vs_bare >= 0.6,
         "details": {"requests_per_s": median_rps(samples), "samples": samples}},
        {"benchmark": "ratelimit", "metric": "three_rules_vs_noop", "value": round(vs_none, 3), "unit": "×",
         "target": None, "passed": None, "details": {}},
        {"benchmark": "ratelimit", "metric": "three_rules_vs_limits_moving_window_1_rule",
         "value": round(vs_limits, 2), "unit": "×", "target": None, "passed": None, "details": {}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
