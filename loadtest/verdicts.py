"""Pass or fail: a run's figures against its thresholds, and whether the load generator itself was the limit.

Exit codes of ``examgate loadtest``: 0 every threshold met; 1 a threshold missed; 3 the run is
invalid because a load-generator process was CPU-saturated (its figures measure the generator,
not the gateway; this wins over 1); 4 the run could not be made (see ``run``). 2 is click's
usage error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from loadtest.summary import Summary

EXIT_PASSED = 0
EXIT_THRESHOLD_MISSED = 1
EXIT_INVALID = 3
EXIT_NOT_RUN = 4

CPU_LIMIT_PCT = 90.0
# Seconds in a row at or above the limit that make a process saturated: a start-up burst is not.
SATURATED_RUN_S = 3


@dataclass(frozen=True)
class Thresholds:
    """What a run must reach; None leaves a figure unchecked."""

    target_rps: float | None = None
    max_fail_ratio: float | None = 0.01
    p95_ms: float | None = None
    p99_ms: float | None = None


class Verdict(NamedTuple):
    """One threshold checked: its option name, whether it held, and a line saying so (and by how much)."""

    option: str
    passed: bool
    text: str


class Saturation(NamedTuple):
    """Whether a load-generator process was CPU-saturated, and what was seen."""

    saturated: bool
    text: str


def number(value: float) -> str:
    """A figure for people: 10,000,000 rather than 1e+07, 0.001 rather than 0.00."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"


def _share(part: float, whole: float) -> str:
    return f"{number(float(f'{part / whole * 100:.3g}'))}%" if whole else "-"


def _at_most(option: str, label: str, measured: float | None, limit: float, unit: str) -> Verdict:
    if measured is None:
        return Verdict(option, False, f"FAIL {option} {number(limit)} {unit}: no served request to measure {label} on")
    if measured <= limit:
        return Verdict(option, True, f"ok   {option}: {label} {number(measured)} {unit} <= {number(limit)} {unit}")
    return Verdict(option, False, f"FAIL {option}: {label} {number(measured)} {unit} > {number(limit)} {unit} "
                                  f"(over by {number(measured - limit)} {unit}, "
                                  f"{_share(measured - limit, limit)} above the threshold)")


def evaluate(summary: Summary, thresholds: Thresholds) -> list[Verdict]:
    """Every threshold set, checked against the run's figures (a run without a single request fails)."""
    verdicts: list[Verdict] = []
    if summary.total.requests == 0:
        verdicts.append(Verdict("requests", False, "FAIL the run made no request at all"))
    if thresholds.target_rps is not None:
        rps, target = summary.good_rps, thresholds.target_rps
        if rps >= target:
            verdicts.append(Verdict("--target-rps", True, f"ok   --target-rps: {rps:,.1f} req/s answered as due "
                                                          f">= {number(target)} req/s"))
        else:
            verdicts.append(Verdict("--target-rps", False, f"FAIL --target-rps: {rps:,.1f} req/s answered as due "
                                                           f"< {number(target)} req/s (short by {target - rps:,.1f} "
                                                           f"req/s, reached {_share(rps, target)} of the target)"))
    if thresholds.max_fail_ratio is not None:
        ratio, limit = summary.fail_ratio, thresholds.max_fail_ratio
        counted = f"{summary.total.failures:,} of {summary.total.requests:,} requests"
        if ratio <= limit:
            verdicts.append(Verdict("--max-fail-ratio", True,
                                    f"ok   --max-fail-ratio: {ratio:.4f} ({counted}) <= {number(limit)}"))
        else:
            verdicts.append(Verdict("--max-fail-ratio", False,
                                    f"FAIL --max-fail-ratio: {ratio:.4f} ({counted}) > {number(limit)} "
                                    f"(over by {ratio - limit:.4f})"))
    if thresholds.p95_ms is not None:
        verdicts.append(_at_most("--p95-ms", "p95", summary.total.p95_ms, thresholds.p95_ms, "ms"))
    if thresholds.p99_ms is not None:
        verdicts.append(_at_most("--p99-ms", "p99", summary.total.p99_ms, thresholds.p99_ms, "ms"))
    return verdicts


# The review scenario's rows: a registration submitted (its confirmation answered as due) and its end.
SUBMITTED = "POST /api/v1/registrations/{id}/confirm"
APPROVED_AFTER_REVIEW = "registration approved after review"


def every_submission_approved(summary: Summary) -> Verdict:
    """Every registration submitted for review was seen approved before the run ended (and at least one was)."""
    rows = {row.name: row for row in summary.rows}
    confirmed = rows.get(SUBMITTED)
    flow = rows.get(f"FLOW {APPROVED_AFTER_REVIEW}")
    submitted = 0 if confirmed is None else confirmed.requests - confirmed.failures - confirmed.refused
    approved = 0 if flow is None else flow.requests - flow.failures
    failed = 0 if flow is None else flow.failures
    option = "review"
    if submitted == 0:
        return Verdict(option, False, "FAIL review: no registration was submitted for review")
    if approved == submitted and failed == 0:
        return Verdict(option, True, f"ok   review: every registration submitted ended approved "
                                     f"({approved:,} of {submitted:,})")
    undecided = max(0, submitted - approved - failed)
    return Verdict(option, False, f"FAIL review: {approved:,} of {submitted:,} registrations submitted ended approved"
                                  f" ({failed:,} went otherwise or waited too long, {undecided:,} undecided when the"
                                  " run ended: too few reviewers for the load?)")


def cpu_saturation(cpu: dict[str, Any], limit_pct: float = CPU_LIMIT_PCT,
                   run_s: int = SATURATED_RUN_S) -> Saturation:
    """Saturated when a worker used ``limit_pct`` of a core or more ``run_s`` seconds in a row, or Locust warned.

    ``cpu`` is the master's record: ``{"workers": {worker: [percent per second, …]}, "locust_warning": bool}``.
    """
    workers: dict[str, list[float]] = cpu.get("workers") or {}
    peak = max((max(samples) for samples in workers.values() if samples), default=None)
    for number, (_, samples) in enumerate(sorted(workers.items()), start=1):
        longest = streak = 0
        for sample in samples:
            streak = streak + 1 if sample >= limit_pct else 0
            longest = max(longest, streak)
        if longest >= run_s:
            return Saturation(True, f"invalid: load generator CPU-saturated (worker {number} of {len(workers)} at "
                                    f">= {limit_pct:g}% of a core for {longest} s in a row, peak {max(samples):.0f}%; "
                                    f"add --processes or machines)")
    if cpu.get("locust_warning"):
        return Saturation(True, "invalid: load generator CPU-saturated (Locust reported CPU usage above 90%; "
                                "add --processes or machines)")
    if peak is None:
        return Saturation(False, "load generator CPU: not sampled (run shorter than a second)")
    return Saturation(False, f"load generator CPU: peak {peak:.0f}% of a core per worker (limit {limit_pct:g}%)")


def exit_code(verdicts: list[Verdict], saturation: Saturation) -> int:
    """The command's exit code: invalid wins over a missed threshold."""
    if saturation.saturated:
        return EXIT_INVALID
    if not all(v.passed for v in verdicts):
        return EXIT_THRESHOLD_MISSED
    return EXIT_PASSED
