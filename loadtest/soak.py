"""Soak: one scenario held for a long time (30 minutes on demand, 2 in CI) while nothing may grow.

A peak that lasts an afternoon fails differently from one that lasts a minute: a cache without a
bound, a key written without a TTL, a connection opened per retry and never closed. Each shows as
a figure that keeps rising while the load stays the same. So, besides the scenario's own verdicts,
a soak samples every ``interval_s`` (10 s, ``loadtest.resources``): the RSS of every gateway and worker
process (the supervisor and each child, by pid); Redis's ``used_memory``, ``connected_clients`` and every
key counted by family (``eg:session:*``, ``eg:{candidate:*}:sessions``, ``eg:{rl}:login-ip:*``,
``eg:{exam:*}:holds``) with its TTL; the entries inside the exams' keys (seat holds, expiring and
overdue; waiting-room places, live and expired but stored; the hold stream); PostgreSQL's connections.

The samples go to ``soak.jsonl`` in the run's directory, one JSON object a line, beside Locust's reports
and the per-second ``metrics.jsonl`` of ``loadtest.sampler`` (the gateway's own figures). The verdicts
compare the run's last third with its middle third (the first third is the warm-up: users arriving,
caches filling, the first TTLs running out):

- ``keys``: no family and no kind of entry grew by more than ``max(key_growth, key_growth_ratio ×
  its middle-third mean)``. A few keys of each family have their TTL read at every sample: a family
  whose keys live longer than a third of the run cannot have reached its steady count by the middle
  third (the per-second stats buckets live 120 s, cached ticket PDFs a day), so it is listed as not
  judged rather than failed; a family with a key without a TTL is always judged (that is where leaks
  live);
- ``cleanup``: no hold overdue in the steady part of the run (the expired holds were released), and
  the waiting-room places that expired, still stored, grew by no more than ``expired_places_growth``;
  sessions (their keys expire by TTL) are judged with the keys. Give them short lives for the run
  (``EXAMGATE_SESSION_IDLE_TIMEOUT_S`` / ``_ABSOLUTE_TIMEOUT_S``, live ``place_ttl_s`` and
  ``hold_ttl_s``) so they expire within it;
- ``memory``: each process's RSS, and Redis's ``used_memory``, grew by less than the bound (median of
  the last third against the middle third's);
- ``connections``: Redis clients and PostgreSQL connections peaked no higher in the last third than in
  the middle one (plus ``connection_growth``).

A run whose users are drawn from a closed window of seeded candidates (``--candidates``) is what
makes the key verdict sharp: everything a candidate legitimately leaves behind (a registration, a
paid seat, a place record, cached lookups) is bounded by the window and stops growing once the
window has been gone through, while a leak keeps growing with time. Each slope is printed per minute.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.rehearsal_record import append_run, run_entry
from loadtest.resources import SAMPLE_INTERVAL_S, SAMPLES_FILE, ResourceSampler, Sample
from loadtest.verdicts import Verdict, number

__all__ = ["Bounds", "SoakPlan", "judge", "run_soak", "soak_lines", "thirds"]

_MIB = 1 << 20


# --- verdicts ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounds:
    """How much may grow from the middle third of a soak to its last third."""

    key_growth: int = 50  # keys of a family, or entries of a kind
    key_growth_ratio: float = 0.10  # ... or this share of its middle-third mean, whichever is larger
    rss_growth_mib: float = 32.0  # per process
    rss_growth_ratio: float = 0.10
    redis_memory_growth_mib: float = 16.0
    redis_memory_growth_ratio: float = 0.10
    connection_growth: int = 2  # peak clients / connections
    overdue_holds: int = 0  # holds past their expiry (and the grace) at any steady sample
    expired_places_growth: int = 10  # waiting-room places expired and still stored


class Thirds(NamedTuple):
    """A soak's samples split by time: the warm-up, the middle and the last third."""

    warmup: list[Sample]
    middle: list[Sample]
    last: list[Sample]


def thirds(samples: Sequence[Sample]) -> Thirds:
    """The samples in each third of the time from the first to the last."""
    if not samples:
        return Thirds([], [], [])
    start, end = samples[0].t, samples[-1].t
    cut1, cut2 = start + (end - start) / 3, start + 2 * (end - start) / 3
    return Thirds([s for s in samples if s.t < cut1], [s for s in samples if cut1 <= s.t < cut2],
                  [s for s in samples if s.t >= cut2])


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (t seconds, value), per minute; 0 for fewer than two times."""
    if len({t for t, _ in points}) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den * 60


class Growth(NamedTuple):
    """One series from the middle third to the last: the two figures, the allowance and the slope."""

    name: str
    middle: float
    last: float
    allowed: float
    slope_per_min: float

    @property
    def grew(self) -> bool:
        """Whether it grew beyond its allowance."""
        return self.last - self.middle > self.allowed


def _series(samples: Sequence[Sample], read: Callable[[Sample], float | None]) -> list[tuple[float, float]]:
    return [(s.t, float(v)) for s in samples if (v := read(s)) is not None]


def _growth(name: str, parts: Thirds, read: Callable[[Sample], float | None], floor: float, ratio: float,
            average: Callable[[list[float]], float] = statistics.fmean) -> Growth | None:
    middle = [v for _, v in _series(parts.middle, read)]
    last = [v for _, v in _series(parts.last, read)]
    if not middle or not last:
        return None
    middle_value, last_value = average(middle), average(last)
    slope = slope_per_min(_series(parts.middle + parts.last, read))
    return Growth(name, middle_value, last_value, max(floor, ratio * middle_value), slope)


def _say(growth: Growth, unit: str = "", scale: float = 1.0) -> str:
    def figure(value: float) -> str:
        return number(round(value / scale, 1)) + unit

    return (f"{growth.name} {figure(growth.middle)} → {figure(growth.last)} "
            f"({growth.slope_per_min / scale:+,.1f}{unit}/min, allowed +{figure(growth.allowed)})")


def _judged(name: str, growths: list[Growth], what: str, unit: str = "", scale: float = 1.0) -> Verdict:
    grown = [g for g in growths if g.grew]
    if not growths:
        return Verdict(name, False, f"FAIL {name}: too few samples to compare the middle and last thirds")
    if grown:
        listed = "; ".join(_say(g, unit, scale) for g in sorted(grown, key=lambda g: g.middle - g.last))
        return Verdict(name, False, f"FAIL {name}: {len(grown)} of {len(growths)} {what} grew from the middle to the "
                                    f"last third: {listed}")
    top = max(growths, key=lambda g: g.last - g.middle)
    return Verdict(name, True, f"ok   {name}: none of {len(growths)} {what} grew beyond its bound from the middle to "
                               f"the last third (most: {_say(top, unit, scale)})")


def _keys_of(family: str) -> Callable[[Sample], float | None]:
    return lambda s: None if s.redis_memory is None else s.keys.get(family, 0)


def _entries_of(kind: str) -> Callable[[Sample], float | None]:
    return lambda s: None if s.redis_memory is None else s.entries.get(kind, 0)


def _rss_of(label: str) -> Callable[[Sample], float | None]:
    return lambda s: s.rss.get(label)


ENTRIES = "entries: "


def judge(samples: Sequence[Sample], bounds: Bounds = Bounds()) -> list[Verdict]:
    """The soak's verdicts on its samples: keys, cleanup, memory, connections."""
    parts = thirds(samples)
    lives = _lives(samples)
    third_s = (samples[-1].t - samples[0].t) / 3 if samples else 0.0
    unjudged = {f: ttl for f, ttl in lives.items() if ttl > third_s}
    series = [(f, _keys_of(f)) for f in sorted({f for s in samples for f in s.keys}) if f not in unjudged]
    series += [(ENTRIES + e, _entries_of(e)) for e in sorted({e for s in samples for e in s.entries})]
    key_growths = [g for name, read in series
                   if (g := _growth(name, parts, read, bounds.key_growth, bounds.key_growth_ratio)) is not None]
    keys = _judged("keys", key_growths, "key families and kinds of entries")
    if unjudged and key_growths:
        listed = ", ".join(f"{f} {ttl:,.0f} s" for f, ttl in sorted(unjudged.items(), key=lambda i: i[1]))
        keys = keys._replace(text=f"{keys.text}; not judged, their keys live longer than a third of the run "
                                  f"({third_s:,.0f} s): {listed}")
    verdicts = [keys]
    verdicts.append(_cleanup(samples, parts, bounds))

    memory = [g for label in sorted({p for s in samples for p in s.rss})
              if (g := _growth(label, parts, _rss_of(label), bounds.rss_growth_mib * _MIB, bounds.rss_growth_ratio,
                               statistics.median)) is not None]
    redis_memory = _growth("redis used_memory", parts, lambda s: s.redis_memory, bounds.redis_memory_growth_mib * _MIB,
                           bounds.redis_memory_growth_ratio, statistics.median)
    if redis_memory is not None:
        memory.append(redis_memory)
    verdicts.append(_judged("memory", memory, "processes (RSS) and Redis", " MiB", _MIB))

    connections = [g for name, read in (("redis connected_clients", _clients), ("postgresql connections", _pg))
                   if (g := _growth(name, parts, read, bounds.connection_growth, 0.0, max)) is not None]
    verdicts.append(_judged("connections", connections, "connection counts (peaks)"))
    return verdicts


def _lives(samples: Sequence[Sample]) -> dict[str, float]:
    """How long each family's keys live, as the samples saw it (-1: some key had no TTL)."""
    lives: dict[str, float] = {}
    for sample in samples:
        for family, ttl in sample.ttls.items():
            known = lives.get(family)
            lives[family] = -1.0 if ttl < 0 or known == -1.0 else max(ttl, known or 0.0)
    return lives


def _clients(sample: Sample) -> float | None:
    return sample.redis_clients


def _pg(sample: Sample) -> float | None:
    return sample.pg_connections


def _cleanup(samples: Sequence[Sample], parts: Thirds, bounds: Bounds) -> Verdict:
    steady = parts.middle + parts.last
    if not parts.middle or not parts.last:
        return Verdict("cleanup", False, "FAIL cleanup: too few samples to judge the middle and last thirds")
    overdue = max((s.entries.get("holds overdue", 0) for s in steady), default=0)
    places = _growth("waiting-room places expired", parts, _entries_of("waiting-room places expired"),
                     bounds.expired_places_growth, 0.0)
    sessions = [s.keys.get("eg:session:*", 0) for s in samples]
    problems = []
    if overdue > bounds.overdue_holds:
        problems.append(f"up to {overdue:,} seat holds overdue (past their expiry, not released: is the worker's "
                        "sweeper running?)")
    if places is not None and places.grew:
        problems.append(f"waiting-room places that expired are kept: {_say(places)}")
    seen = f"sessions {min(sessions, default=0):,}–{max(sessions, default=0):,} keys (judged with the keys)"
    if problems:
        return Verdict("cleanup", False, f"FAIL cleanup: {'; '.join(problems)}; {seen}")
    kept = f"{places.middle:,.0f} → {places.last:,.0f}" if places is not None else "none"
    return Verdict("cleanup", True, f"ok   cleanup: no seat hold overdue in the steady part; expired waiting-room "
                                    f"places kept: {kept}; {seen}")


def soak_lines(samples: Sequence[Sample], top: int = 12) -> list[str]:
    """A table for people: the key families and entries that changed most, first sample → last, and the slopes."""
    if not samples:
        return ["no samples"]
    parts = thirds(samples)
    first, last = samples[0], samples[-1]
    lines = [(f"soak: {len(samples)} samples over {last.t - first.t:,.0f} s "
              f"(warm-up {len(parts.warmup)}, middle {len(parts.middle)}, last {len(parts.last)})")]
    rows = [(f, first.keys.get(f, 0), last.keys.get(f, 0), _keys_of(f)) for f in {*first.keys, *last.keys}]
    rows += [(ENTRIES + e, first.entries.get(e, 0), last.entries.get(e, 0), _entries_of(e))
             for e in {*first.entries, *last.entries}]
    rows.sort(key=lambda r: -abs(r[2] - r[1]))
    lines.append(f"  {'keys / entries':<48} {'first':>9} {'last':>9} {'slope/min (steady)':>19}")
    for name, a, b, read in rows[:top]:
        slope = slope_per_min(_series(parts.middle + parts.last, read))
        lines.append(f"  {name:<48} {a:>9,} {b:>9,} {slope:>+19,.1f}")
    for label in sorted({*first.rss, *last.rss}):
        a_rss, b_rss = first.rss.get(label), last.rss.get(label)
        if a_rss is not None and b_rss is not None:
            lines.append(f"  RSS {label:<44} {a_rss / _MIB:>8,.1f}M {b_rss / _MIB:>8,.1f}M")
    if first.redis_memory is not None and last.redis_memory is not None:
        lines.append(f"  {'redis used_memory':<48} {first.redis_memory / _MIB:>8,.1f}M "
                     f"{last.redis_memory / _MIB:>8,.1f}M")
    lines.append(f"  {'redis connected_clients (max)':<48} {'':>9} "
                 f"{max((s.redis_clients or 0) for s in samples):>9,}")
    lines.append(f"  {'postgresql connections (max)':<48} {'':>9} "
                 f"{max((s.pg_connections or 0) for s in samples):>9,}")
    errors = Counter(e.split(":", 1)[0] for s in samples for e in s.errors)
    if errors:
        lines.append("  samples with errors: " + ", ".join(f"{k} ×{n}" for k, n in errors.items()))
    return lines


def load_verdicts(run_dir: Path, code: int) -> tuple[list[Verdict], str | None]:
    """The Locust run's own verdict lines (from its ``summary.txt``) as one verdict, and why it is invalid if it is."""
    from loadtest.verdicts import EXIT_INVALID, EXIT_NOT_RUN, EXIT_PASSED

    text = (run_dir / "summary.txt").read_text() if (run_dir / "summary.txt").exists() else ""
    lines = [line for line in text.splitlines() if line.startswith(("ok   ", "FAIL "))]
    invalid = next((line for line in text.splitlines() if line.startswith("invalid:")), None)
    if code == EXIT_INVALID:
        return [Verdict("load", False, "FAIL load: " + "; ".join(lines))], invalid or "load generator CPU-saturated"
    if code == EXIT_NOT_RUN:
        return [Verdict("load", False, "FAIL load: the run could not be made")], None
    return [Verdict("load", code == EXIT_PASSED, ("ok   load: " if code == EXIT_PASSED else "FAIL load: ")
                    + "; ".join(line[5:] for line in lines))], None


def metrics_sampler(gateway_url: str, metrics_token: str | None, redis_url: str, pg_dsn: str | None,
                    out: Path) -> AbstractContextManager[object]:
    """The per-second ``metrics.jsonl`` of the run (``loadtest.sampler``), when the scrape token is known."""
    from loadtest.sampler import Sampler

    if metrics_token is None:
        return nullcontext()
    return Sampler(gateway_url, metrics_token, redis_url, pg_dsn, out)


# --- the command's run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SoakPlan:
    """A soak: the load (``loadtest.run.RunOptions``), where its stores and processes are, the bounds."""

    run: Any  # loadtest.run.RunOptions (imported lazily: it pulls Locust's helpers in)
    redis_url: str
    pg_dsn: str | None
    processes: Callable[[], list[tuple[str, int]]]
    report_dir: Path | None = None  # rehearsal.json there gets the run
    interval_s: float = SAMPLE_INTERVAL_S
    bounds: Bounds = Bounds()
    metrics_token: str | None = None
    live_config: dict[str, Any] | None = None  # merged into the live config for the run, put back after


def run_soak(plan: SoakPlan, echo: Callable[[str], None] = print) -> int:
    """Run the scenario while sampling; print the table and verdicts, write them; the exit code (as loadtest's)."""
    from loadtest.admin import GatewayError, Operator
    from loadtest.run import run_loadtest
    from loadtest.verdicts import EXIT_INVALID, EXIT_NOT_RUN, EXIT_PASSED, EXIT_THRESHOLD_MISSED

    options = replace(plan.run, csv_full_history=True)  # each request type over time, for the report
    out_dir: Path = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    operator = Operator(options.host, options.admin_token)
    try:
        restore = _apply_live(operator, plan.live_config)
    except GatewayError as exc:
        echo(f"error: {exc}")
        return EXIT_NOT_RUN
    echo(f"soak: sampling processes, Redis and PostgreSQL every {plan.interval_s:g} s into {out_dir / SAMPLES_FILE}")
    try:
        with ResourceSampler(plan.redis_url, plan.pg_dsn, plan.processes, out_dir / SAMPLES_FILE,
                             plan.interval_s) as sampler, \
                metrics_sampler(options.host, plan.metrics_token, plan.redis_url, plan.pg_dsn,
                                out_dir / "metrics.jsonl"):
            code = run_loadtest(options, echo)
    finally:
        _restore_live(operator, restore, echo)
    load, invalid = load_verdicts(out_dir, code)
    verdicts = load + judge(sampler.samples, plan.bounds)
    lines = soak_lines(sampler.samples) + [v.text for v in verdicts]
    passed = all(v.passed for v in verdicts)
    code_now = EXIT_NOT_RUN if code == EXIT_NOT_RUN else EXIT_INVALID if invalid else \
        EXIT_PASSED if passed else EXIT_THRESHOLD_MISSED
    lines.append(("SOAK PASSED" if code_now == EXIT_PASSED else "SOAK INVALID" if code_now == EXIT_INVALID
                  else "SOAK FAILED") + f" (exit code {code_now})")
    text = "\n".join(lines)
    (out_dir / "soak.txt").write_text(text + "\n")
    echo(text)
    entry = run_entry(options.scenario.name, "soak", out_dir, {
        "duration_s": options.duration_s, "users": options.users, "interval_s": plan.interval_s,
        "bounds": plan.bounds.__dict__, "max_fail_ratio": options.thresholds.max_fail_ratio}, verdicts, invalid)
    (out_dir / "soak.json").write_text(json.dumps(entry, ensure_ascii=False, indent=2) + "\n")
    if plan.report_dir is not None:
        append_run(plan.report_dir, entry)
    return code_now


def _apply_live(operator: Any, patch: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merge ``patch`` into the live config and wait until it is applied; the patch that puts it back."""
    if not patch:
        return None
    before = operator.call("GET", "/admin/api/v1/config")["config"]
    version = int(operator.call("PATCH", "/admin/api/v1/config", patch,
                                content_type="application/merge-patch+json")["version"])
    operator.wait_applied(version)
    return _undo(patch, before)


def _undo(patch: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """The merge patch that gives back ``before``'s values of every key ``patch`` set (null: it was not there)."""
    undo: dict[str, Any] = {}
    for key, value in patch.items():
        old = (before or {}).get(key) if isinstance(before, dict) else None
        if isinstance(value, dict) and isinstance(old, dict):
            undo[key] = _undo(value, old)
        else:
            undo[key] = old
    return undo


def _restore_live(operator: Any, undo: dict[str, Any] | None, echo: Callable[[str], None]) -> None:
    from loadtest.admin import GatewayError

    if undo is None:
        return
    try:
        operator.call("PATCH", "/admin/api/v1/config", undo, content_type="application/merge-patch+json")
    except GatewayError as exc:
        echo(f"warning: could not put the live config back ({json.dumps(undo)}): {exc}")
