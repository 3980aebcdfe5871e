"""``python -m benchmarks [NAME …]`` (``make bench``): run benchmarks side by side, write the results."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCHMARKS = {
    "seed": "benchmarks.bench_seed",
    "redis_get": "benchmarks.bench_redis_get",
    "ratelimit": "benchmarks.bench_ratelimit",
    "login": "benchmarks.bench_login",
    "captcha": "benchmarks.bench_captcha",
    "seats": "benchmarks.bench_seats",
    "payments": "benchmarks.bench_payments",
}
RESULTS = Path(__file__).parent / "results"


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def table(figures: list[dict[str, Any]]) -> str:
    """A Markdown table of the figures."""
    lines = ["| benchmark | metric | value | target | verdict |", "|---|---|---:|---|---|"]
    for f in figures:
        verdict = {True: "pass", False: "FAIL", None: ""}[f["passed"]]
        value = f"{f['value']:,}" if isinstance(f["value"], (int, float)) else f["value"]
        lines.append(f"| {f['benchmark']} | {f['metric']} | {value} {f['unit']} | {f['target'] or ''} | {verdict} |")
    return "\n".join(lines)


def main(names: list[str]) -> int:
    """Run the named benchmarks (all when none); exit 1 when a target is missed."""
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}")
        return 2
    figures: list[dict[str, Any]] = []
    for name in names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        figures.extend(importlib.import_module(BENCHMARKS[name]).run())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "machine": _machine(), "figures": figures}, indent=2))
    rendered = table(figures)
    (RESULTS / "latest.md").write_text(rendered + "\n")
    print(rendered)
    print(f"\nresults: {out}")
    return 1 if any(f["passed"] is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
