"""A rehearsal's record and run directories as the report reads them (``loadtest/reports/<ts>/``).

``rehearsal.json`` names each run (scenario, phase, its directory, the criteria scaled to the machine,
its verdicts); each run's directory holds Locust's CSVs, the run's ``summary.json`` and the sampler's
``metrics.jsonl``. ``load_runs`` reads them all, in scenario then phase order, noting what is missing
instead of failing; the helpers read a run's criteria (``loadtest.targets`` writes them) and say
whether its load generator was saturated.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.answers import FLOW, split_name
from loadtest.summary import Summary, summarize
from loadtest.verdicts import CPU_LIMIT_PCT, SATURATED_RUN_S

Points = list[tuple[float, float]]  # (seconds, value), as loadtest.charts draws them

REHEARSAL_FILE = "rehearsal.json"
HISTORY_FILE = "locust_stats_history.csv"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ALL_REQUESTS = "all requests"
ALL = "all"  # a latency criterion on every served request together (loadtest.targets)
# Where a run's scaled criteria keep each figure (the first key present wins).
RPS_KEYS = ("target_rps", "rps", "min_rps")
P95_KEYS = ("p95_ms", "max_p95_ms")
P99_KEYS = ("p99_ms", "max_p99_ms")
FAIL_KEYS = ("max_fail_ratio", "fail_ratio")
_PHASES = {"target": 0, "double": 1, "soak": 2}

__all__ = ["REHEARSAL_FILE", "History", "RunData", "Latency", "load_runs", "read_history", "read_metrics",
           "criterion", "latency_limits", "closest_to_limit", "judged", "saturated_streak"]


@dataclass
class History:
    """Locust's history per request type, seconds since the epoch: requests/s, failures/s, refusals/s, percentiles."""

    requests: dict[str, Points] = field(default_factory=dict)
    failures: dict[str, Points] = field(default_factory=dict)
    refusals: dict[str, Points] = field(default_factory=dict)
    percentiles: dict[str, dict[str, Points]] = field(default_factory=lambda: {"p50": {}, "p95": {}, "p99": {}})
    users_from: float | None = None  # the first moment with users running

    def start(self) -> float | None:
        """The first moment recorded."""
        moments = [t for group in (self.requests, self.failures) for points in group.values() for t, _ in points]
        return min(moments, default=None)


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_history(path: Path) -> History:
    """``locust_stats_history.csv`` folded by request type (a type's refusals beside it, flows apart)."""
    sums: dict[str, dict[str, dict[float, float]]] = {key: defaultdict(lambda: defaultdict(float))
                                                     for key in ("requests", "failures", "refusals")}
    history = History()
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    per_type = any(row.get("Name") != "Aggregated" for row in rows)
    for row in rows:
        t = _float(row.get("Timestamp"))
        rps, fails = _float(row.get("Requests/s")) or 0.0, _float(row.get("Failures/s")) or 0.0
        if t is None:
            continue
        if history.users_from is None and (_float(row.get("User Count")) or 0) > 0:
            history.users_from = t
        method, name = row.get("Type") or "", row.get("Name") or ""
        if name == "Aggregated":
            if per_type:
                continue
            label, reason = ALL_REQUESTS, None
        else:
            base, reason = split_name(name)
            label = f"{method} {base}".strip()
        sums["failures"][label][t] += fails
        if method == FLOW:
            continue  # a flow is no request: its failures count, its rate and time do not
        sums["requests"][label][t] += rps
        if reason is not None:
            sums["refusals"][f"{label} ({reason})"][t] += rps
        elif rps > 0:
            for key, column in (("p50", "50%"), ("p95", "95%"), ("p99", "99%")):
                value = _float(row.get(column))
                if value is not None:
                    history.percentiles[key].setdefault(label, []).append((t, value))
    history.requests = {k: sorted(v.items()) for k, v in sums["requests"].items()}
    history.failures = {k: sorted(v.items()) for k, v in sums["failures"].items() if any(v.values())}
    history.refusals = {k: sorted(v.items()) for k, v in sums["refusals"].items()}
    return history


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The sampler's lines (a line cut short by a stopped run is skipped)."""
    lines: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("t"), (int, float)):
                lines.append(line)
    return sorted(lines, key=lambda line: float(line["t"]))


@dataclass
class RunData:
    """One run of the rehearsal: its entry in ``rehearsal.json`` and what its directory holds."""

    entry: dict[str, Any]
    directory: Path
    summary: Summary | None = None
    history: History | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``scenario · phase``."""
        return f"{self.entry.get('scenario', '?')} · {self.entry.get('phase', '?')}"

    @property
    def anchor(self) -> str:
        """The run's id in the page."""
        return "run-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(self.entry.get("dir") or self.title))

    def invalid(self) -> str | None:
        """Why the run is invalid: the rehearsal's word, else the sampler's saturated generator; None if valid."""
        said = self.entry.get("invalid")
        if said:
            return str(said)
        streak = saturated_streak(self.metrics)
        if streak >= SATURATED_RUN_S:
            return (f"load generator CPU-saturated (a process at >= {CPU_LIMIT_PCT:g}% of a core for {streak} s "
                    f"in a row, sampled beside the run)")
        return None


def saturated_streak(metrics: list[dict[str, Any]], limit_pct: float = CPU_LIMIT_PCT) -> int:
    """The most samples in a row with a load-generator process at or above ``limit_pct`` of a core."""
    longest = streak = 0
    for line in metrics:
        value = line.get("generator_cpu_pct")
        streak = streak + 1 if isinstance(value, (int, float)) and value >= limit_pct else 0
        longest = max(longest, streak)
    return longest


def _phase_key(entry: dict[str, Any]) -> tuple[str, int, str]:
    phase = str(entry.get("phase", ""))
    return str(entry.get("scenario", "")), _PHASES.get(phase, 3), phase


def load_runs(report_dir: Path, rehearsal: dict[str, Any]) -> list[RunData]:
    """Every run of ``rehearsal`` (in scenario, then phase order) with what its directory holds."""
    runs: list[RunData] = []
    for entry in sorted(rehearsal.get("runs") or [], key=_phase_key):
        run = RunData(entry, report_dir / str(entry.get("dir") or ""))
        summary_path, history_path, metrics_path = (run.directory / name
                                                    for name in (SUMMARY_FILE, HISTORY_FILE, METRICS_FILE))
        if not entry.get("dir") or not run.directory.is_dir():
            run.missing.append("the run's directory")
        else:
            if summary_path.exists():
                run.summary = summarize(json.loads(summary_path.read_text()))
            else:
                run.missing.append(SUMMARY_FILE)
            if history_path.exists():
                run.history = read_history(history_path)
            else:
                run.missing.append(HISTORY_FILE)
            if metrics_path.exists():
                run.metrics = read_metrics(metrics_path)
            else:
                run.missing.append(METRICS_FILE)
        runs.append(run)
    return runs


def judged(value: object) -> bool | None:
    """A ``passed`` field as written: True or False, None when the run was not judged."""
    return value if isinstance(value, bool) else None


def criterion(target: dict[str, Any] | None, keys: Iterable[str]) -> float | None:
    """The first of ``keys`` that ``target`` (a run's scaled criteria) gives a number for."""
    for key in keys:
        value = (target or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def latency_limits(target: dict[str, Any] | None, keys: Iterable[str]) -> dict[str, float]:
    """A latency criterion as ``{request name or "all": ms}`` (a bare number is for every served request)."""
    for key in keys:
        value = (target or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {ALL: float(value)}
        if isinstance(value, dict) and value:
            return {str(name): float(ms) for name, ms in value.items()
                    if isinstance(ms, (int, float)) and not isinstance(ms, bool)}
    return {}


class Latency(NamedTuple):
    """A run's percentile beside its limit: for every served request (``name`` "all") or one request type."""

    name: str
    value_ms: float | None
    limit_ms: float | None


def closest_to_limit(summary: Summary | None, limits: dict[str, float], field_name: str) -> Latency:
    """The measured percentile nearest (or furthest over) its limit; the overall one when nothing limits it."""
    if summary is None:
        return Latency(ALL, None, None)
    rows = {row.name: row for row in summary.rows}
    pairs: list[Latency] = []
    for name, limit in limits.items():
        row = summary.total if name == ALL else rows.get(name)
        pairs.append(Latency(name, None if row is None else getattr(row, field_name), limit))
    measured = [pair for pair in pairs if pair.value_ms is not None and pair.limit_ms]
    if measured:
        return max(measured, key=lambda pair: (pair.value_ms or 0.0) / (pair.limit_ms or 1.0))
    return Latency(ALL, getattr(summary.total, field_name), limits.get(ALL))
