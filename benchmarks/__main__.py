"""``python -m benchmarks [NAME …]`` (``make bench``): run benchmarks side by side, write the report.

The load generator's ceiling is measured first (``loadgen``), so a run whose generator could
not outpace the gateway says so. Every run writes ``results/<timestamp>.json`` (every figure
with its details), ``results/<timestamp>.md`` (the table), ``results/<timestamp>.png`` (the
ratio figures against their targets) and ``results/latest.md``; a run of every benchmark
also replaces the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import chart, costs

BENCHMARKS = {
    "loadgen": "benchmarks.bench_loadgen",
    "processes": "benchmarks.bench_processes",
    "seed": "benchmarks.bench_seed",
    "redis_get": "benchmarks.bench_redis_get",
    "ratelimit": "benchmarks.bench_ratelimit",
    "login": "benchmarks.bench_login",
    "captcha": "benchmarks.bench_captcha",
    "seats": "benchmarks.bench_seats",
    "payments": "benchmarks.bench_payments",
    "lookups": "benchmarks.bench_lookups",
    "certificates": "benchmarks.bench_certificates",
    "photos": "benchmarks.bench_photos",
    "imports": "benchmarks.bench_imports",
    "cluster": "benchmarks.bench_cluster",
}
HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"
TABLE_START = "<!-- latest-table:start -->"
TABLE_END = "<!-- latest-table:end -->"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gib": memory_gib,
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit}


def cpu_times() -> tuple[int, int]:
    """(all CPU time, time stolen by the hypervisor) in ticks since boot (``/proc/stat``); (0, 0) elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(value) for value in fields[:8]]
    return sum(ticks), ticks[7] if len(ticks) > 7 else 0


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the machine's CPU time the hypervisor gave to others between two ``cpu_times``."""
    total = after[0] - before[0]
    return round(100 * (after[1] - before[1]) / total, 1) if total > 0 else None


def table(figures: list[dict[str, Any]]) -> str:
    """A Markdown table of the figures."""
    lines = ["| benchmark | metric | value | target | verdict |", "|---|---|---:|---|---|"]
    for f in figures:
        verdict = {True: "pass", False: "FAIL", None: ""}[f["passed"]]
        value = f"{f['value']:,}" if isinstance(f["value"], (int, float)) else f["value"]
        lines.append(f"| {f['benchmark']} | {f['metric']} | {value} {f['unit']} | {f['target'] or ''} | {verdict} |")
    return "\n".join(lines)


def report(figures: list[dict[str, Any]], stamp: str, about: dict[str, Any], elapsed_s: float,
           steal: dict[str, float | None] | None = None) -> str:
    """The Markdown report: when, on what, how much CPU the machine lost to its neighbours, the table."""
    cpus = f"{about['cpus']} × {about['cpu_model']}"
    stolen = ""
    if steal and any(value is not None for value in steal.values()):
        stolen = ("\n\nCPU time taken by the hypervisor (steal) during each benchmark: "
                  + ", ".join(f"{name} {value:g} %" for name, value in steal.items() if value is not None)
                  + ". Ratios are measured side by side, but a run with much steal is noisier.")
    return (f"Measured {stamp} (commit {about['commit'] or 'unknown'}) on {cpus}, {about['memory_gib']} GiB, "
            f"Python {about['python']}; the run took {elapsed_s / 60:.1f} min.{stolen}\n\n{table(figures)}\n")


def update_readme(text: str, image_name: str | None) -> None:
    """Replace the table between the README's markers with ``text`` (and the chart's link)."""
    readme = README.read_text()
    if TABLE_START not in readme or TABLE_END not in readme:
        raise RuntimeError(f"{README} lacks the {TABLE_START} / {TABLE_END} markers")
    chart_line = f"\n![ratios against their targets](results/{image_name})\n" if image_name else ""
    block = f"{TABLE_START}\n{text}{chart_line}{TABLE_END}"
    README.write_text(re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: block, readme,
                             flags=re.S))


def main(names: list[str]) -> int:
    """Run the named benchmarks (all when none); exit 1 when a target is missed."""
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}")
        return 2
    chosen = names or list(BENCHMARKS)
    started = time.perf_counter()
    figures: list[dict[str, Any]] = []
    steal: dict[str, float | None] = {}
    for index, name in enumerate(chosen, 1):
        print(f"== {name} ({index}/{len(chosen)}, {(time.perf_counter() - started) / 60:.1f} min so far)", flush=True)
        before = cpu_times()
        try:
            figures.extend(importlib.import_module(BENCHMARKS[name]).run())
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            figures.append({"benchmark": name, "metric": "did_not_finish", "value": type(exc).__name__, "unit": "",
                            "target": "finishes", "passed": False, "details": {"error": str(exc)[:2000]}})
        steal[name] = steal_percent(before, cpu_times())
    elapsed_s = time.perf_counter() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    about = machine()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "machine": about, "benchmarks": chosen,
                               "elapsed_s": round(elapsed_s, 1), "steal_percent": steal, "figures": figures,
                               "costs": costs.RECORDED}, indent=2))
    rendered = report(figures, stamp, about, elapsed_s, steal)
    (RESULTS / f"{stamp}.md").write_text(rendered)
    (RESULTS / "latest.md").write_text(rendered)
    image = chart.draw(figures, RESULTS / f"{stamp}.png", f"examgate benchmarks {stamp}")
    if image is not None:
        (RESULTS / "latest.png").write_bytes(image.read_bytes())
    if not names:
        update_readme(rendered, "latest.png" if image is not None else None)
    print(rendered)
    print(f"results: {out}" + (f", chart: {image}" if image else ""))
    return 1 if any(f["passed"] is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
