"""``examgate rehearse``: does this build, on this machine, hold the peaks? Calibrate, run, judge, keep the evidence.

1. The gateway must answer ``/readyz``; if it does not, nothing is run (exit code 4).
2. Calibration (``loadtest.calibrate``): the scenarios' own Locust generator against the gateway's
   do-nothing route and the bare aiohttp app, a few seconds each; the factor (the bare app's rate over
   the reference machine's) scales every scenario's users and rate target (``loadtest/targets.toml``,
   read by ``loadtest.targets``). A do-nothing route fallen further below the bare floor than the file
   allows fails the rehearsal: the gateway got slower.
3. Each scenario of the file (or ``--scenarios``), at each phase: ``target`` — its users (times the
   factor) in a spike, every user within a second, then held for the run's duration — and ``double``,
   twice the users, where shedding's 429 and 503 are allowed and failures still are not. A run is made
   as ``examgate loadtest`` makes it (``loadtest.run``: load-test token, waiting room, Locust master and
   workers), with Locust's full CSV history, and, while it runs, the gateway's, Redis's, PostgreSQL's and
   the generator's figures each second in ``metrics.jsonl`` (``loadtest.sampler``, when it is there).
4. Each run is judged on its figures (``loadtest.targets.judge``), the scenario's own checks (the review's
   approvals, the SMS outbox's drain) and the generator's CPU: a saturated generator makes the run
   invalid, as in ``examgate loadtest``.
5. ``rehearsal.json`` is written after the calibration and after every run, so a stopped rehearsal keeps
   what it measured; at the end ``loadtest.report.write`` draws the report (when that module is there).
6. One verdict line per scenario and phase on stdout (progress on stderr); the exit code: 0 every run held,
   1 a figure was missed (or the edge check failed), 4 a run could not be made, 3 a run was invalid
   (the generator saturated), in that order of precedence.

The output, under ``loadtest/reports/<UTC timestamp>/`` (``--out``)::

    rehearsal.json        when, machine, calibration, runs (scenario, phase, dir, target, verdicts, passed,
                          invalid), passed
    calibration-noop/     the calibration runs' Locust reports
    calibration-bare/
    <scenario>-<phase>/   one run: locust_stats.csv, locust_stats_history.csv, locust_failures.csv,
                          summary.json, summary.txt, report.html, metrics.jsonl, the Locust logs
    index.html, summary.png   the report
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.calibrate import Calibration, CalibrationFailed, calibrate
from loadtest.processes import ROOT
from loadtest.run import REPORTS_DIR, RunOptions, run_loadtest
from loadtest.scenarios import SCENARIOS
from loadtest.summary import Summary, summarize
from loadtest.targets import Criteria, FigureVerdict, Targets, judge
from loadtest.verdicts import EXIT_INVALID, EXIT_NOT_RUN, EXIT_PASSED, EXIT_THRESHOLD_MISSED, Thresholds, cpu_saturation

__all__ = ["RehearsalOptions", "default_out_dir", "machine", "rehearse"]

PAUSE_BETWEEN_RUNS_S = 1.0  # the worker catches up with what the last run left (payments, holds) before the next
READY_TIMEOUT_S = 5.0


def default_out_dir(now: datetime | None = None) -> Path:
    """``loadtest/reports/<UTC timestamp>/`` under the working directory (``20261203T170000Z``)."""
    return REPORTS_DIR / f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"


@dataclass(frozen=True)
class RehearsalOptions:
    """Everything a rehearsal needs; ``examgate rehearse`` builds it from its options and the settings."""

    host: str
    admin_token: str
    targets: Targets
    out_dir: Path
    scenarios: Sequence[str]
    phases: Sequence[str] = ("target", "double")
    duration_s: int | None = None  # None: the targets file's
    processes: int | None = None  # None: the targets file's
    metrics_token: str = ""
    redis_url: str = ""
    pg_dsn: str | None = None
    first_candidate: int = 0
    candidates: int = 2000
    keys_dir: str = ".run/keys"
    alipay_app_id: str = ""
    wechat_app_id: str = ""
    wechat_mch_id: str = ""


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU model, memory, Python and the commit."""
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                                text=True, cwd=ROOT, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": memory_gib,
            "python": platform.python_version(), "commit": commit}


@dataclass
class RunRecord:
    """One run of the rehearsal as ``rehearsal.json`` keeps it."""

    scenario: str
    phase: str
    dir: str
    target: dict[str, Any]
    verdicts: list[FigureVerdict]
    invalid: str | None = None
    not_run: str | None = None

    @property
    def passed(self) -> bool:
        """Every figure held, in a valid run that was made."""
        return self.invalid is None and self.not_run is None and all(v.passed for v in self.verdicts)

    def as_json(self) -> dict[str, Any]:
        """As ``rehearsal.json`` shows it (a run not made is invalid, saying why)."""
        invalid = self.invalid if self.not_run is None else f"not run: {self.not_run}"
        return {"scenario": self.scenario, "phase": self.phase, "dir": self.dir, "target": self.target,
                "verdicts": [v._asdict() for v in self.verdicts], "passed": self.passed, "invalid": invalid}

    def line(self, summary: Summary | None) -> str:
        """The verdict line: what was missed, or the figures that held."""
        label = f"{self.scenario} {self.phase}"
        if self.not_run is not None:
            return f"NOT RUN {label}: {self.not_run}"
        if self.invalid is not None:
            return f"INVALID {label}: {self.invalid}"
        missed = [v.detail for v in self.verdicts if not v.passed]
        if missed:
            return f"FAIL {label}: {'; '.join(missed)}"
        shown = f"ok   {label}: {_users(self.target['users'])}"
        if summary is not None:
            total = summary.total
            shown += (f", {_rps(summary.good_rps)} answered as due"
                      + (f" (target {_rps(self.target['target_rps'])})" if self.target.get("target_rps") else "")
                      + f", p95 {_ms(total.p95_ms)}, p99 {_ms(total.p99_ms)}, {total.requests:,} requests, "
                        f"{total.failures:,} failed, {total.refused:,} refused")
        return shown


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _rps(value: float) -> str:
    return f"{value:,.1f} req/s" if value >= 10 else f"{value:.2f} req/s"


def _users(count: int) -> str:
    return f"{count:,} user{'s' if count != 1 else ''}"


class _Evidence:
    """``rehearsal.json``, rewritten whole (through a temporary file) after every step."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "rehearsal.json"
        self.document: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                                         "machine": machine(), "calibration": None, "runs": [], "passed": False}

    def save(self, calibration: Calibration | None, runs: list[RunRecord], passed: bool) -> None:
        self.document.update(calibration=None if calibration is None else calibration.as_json(),
                             runs=[run.as_json() for run in runs], passed=passed)
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.document, ensure_ascii=False, indent=1) + "\n")
        partial.replace(self.path)


def rehearse(options: RehearsalOptions, echo: Callable[[str], None] = print,
             progress: Callable[[str], None] | None = None) -> int:
    """Calibrate, run every scenario at every phase, judge, write the evidence; the exit code (see above)."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    targets = options.targets
    problem = _unready(options.host)
    if problem is not None:
        echo(f"error: {problem} (is the gateway running? make demo)")
        return EXIT_NOT_RUN
    out_dir = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    evidence = _Evidence(out_dir)
    say(f"examgate rehearse: {len(options.scenarios)} scenario(s) × {len(options.phases)} phase(s) against "
        f"{options.host}; targets {targets.path}; reports {out_dir}/")
    try:
        calibration = calibrate(options.host, targets, out_dir, processes=options.processes, progress=say)
    except CalibrationFailed as exc:
        echo(f"error: calibration: {exc}")
        evidence.save(None, [], False)
        return EXIT_NOT_RUN
    echo(calibration.line())
    if calibration.note:
        echo(f"note: {calibration.note}")
    edge = calibration.verdict()
    echo(f"{'ok  ' if edge.passed else 'FAIL'} calibration: {edge.detail}")
    evidence.save(calibration, [], False)
    runs: list[RunRecord] = []
    plan = [(scenario, phase) for scenario in options.scenarios for phase in options.phases]
    sampler_notice = [False]
    for number, (scenario, phase) in enumerate(plan, start=1):
        if number > 1:
            time.sleep(PAUSE_BETWEEN_RUNS_S)
        criteria = targets.criteria(scenario, phase, calibration.factor, calibration.capacity_rps)
        duration_s = options.duration_s or targets.duration_s
        say(f"[{number}/{len(plan)}] {scenario} {phase}: {_users(criteria.users)} ({criteria.think_ms} ms think "
            f"time), {duration_s} s" + (f", target {_rps(criteria.target_rps)}" if criteria.target_rps else ""))
        record, summary = _run_one(options, scenario, phase, criteria, duration_s, say, sampler_notice)
        runs.append(record)
        echo(record.line(summary))
        evidence.save(calibration, runs, False)
    passed = edge.passed and all(run.passed for run in runs)
    evidence.save(calibration, runs, passed)
    report = _write_report(out_dir, say)
    code = _exit_code(edge, runs)
    verdict = {EXIT_PASSED: "PASSED", EXIT_THRESHOLD_MISSED: "FAILED: a figure was missed",
               EXIT_NOT_RUN: "NOT RUN: a run could not be made",
               EXIT_INVALID: "INVALID: the load generator saturated"}[code]
    missed = [f"{run.scenario} {run.phase}" for run in runs if not run.passed]
    missed = missed if edge.passed else ["calibration", *missed]
    echo(f"rehearsal {verdict}" + (f" ({', '.join(missed)})" if missed else "") + f" (exit code {code}); "
         f"evidence {report or evidence.path}")
    return code


def _unready(host: str) -> str | None:
    try:
        with urllib.request.urlopen(host + "/readyz", timeout=READY_TIMEOUT_S) as resp:
            return None if resp.status == 200 else f"{host}/readyz answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{host}/readyz answered {exc.code}"
    except OSError as exc:
        return f"{host} does not answer: {exc}"


def _run_one(options: RehearsalOptions, scenario: str, phase: str, criteria: Criteria, duration_s: int,
             say: Callable[[str], None], sampler_notice: list[bool]) -> tuple[RunRecord, Summary | None]:
    """Run one scenario at one phase and judge it: its record and its figures (None when it was not made)."""
    run_dir = options.out_dir / f"{scenario}-{phase}"
    record = RunRecord(scenario, phase, run_dir.name, {**criteria.as_json(), "duration_s": duration_s}, [])
    run = RunOptions(
        scenario=SCENARIOS[scenario], host=options.host, admin_token=options.admin_token, users=criteria.users,
        spawn_rate=float(criteria.users), duration_s=duration_s,
        processes=options.processes or options.targets.processes, out_dir=run_dir,
        thresholds=Thresholds(None, None, None, None),  # judged here, on the targets file's figures
        shape="spike", first_candidate=options.first_candidate, candidates=options.candidates,
        think_ms=criteria.think_ms, keys_dir=options.keys_dir, alipay_app_id=options.alipay_app_id,
        wechat_app_id=options.wechat_app_id, wechat_mch_id=options.wechat_mch_id,
        cpu_limit_pct=options.targets.cpu_limit_pct, csv_full_history=True,  # each request name over time
    )
    printed: list[str] = []
    with _sampler(options, run_dir / "metrics.jsonl", say, sampler_notice):
        code = run_loadtest(run, echo=printed.append)
    lines = "\n".join(printed).splitlines()
    if code == EXIT_NOT_RUN:
        error = next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), "not run")
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        record.not_run = error.removesuffix("; last log lines:") + (f": {last}" if last and last not in error else "")
        for line in lines:
            say(f"  {line}")
        return record, None
    figures = json.loads((run_dir / "summary.json").read_text())
    summary = summarize(figures)
    record.verdicts = judge(summary, criteria) + _scenario_checks(lines)
    saturation = cpu_saturation(figures.get("cpu") or {}, options.targets.cpu_limit_pct)
    if saturation.saturated:
        record.invalid = saturation.text.removeprefix("invalid: ")
    return record, summary


def _scenario_checks(lines: list[str]) -> list[FigureVerdict]:
    """The scenario's own verdicts as ``examgate loadtest`` printed them (run without thresholds: only those)."""
    verdicts = []
    for line in lines:
        if line.startswith(("ok   ", "FAIL ")):
            text = line[5:]
            name, colon, _ = text.partition(":")
            verdicts.append(FigureVerdict(name if colon and len(name) <= 40 else "run", line.startswith("ok"), text))
    return verdicts


def _sampler(options: RehearsalOptions, out: Path, say: Callable[[str], None],
             notice: list[bool]) -> AbstractContextManager[Any]:
    """``loadtest.sampler.Sampler`` writing ``metrics.jsonl`` during the run; nothing if the module is absent."""
    try:
        from loadtest.sampler import Sampler
    except ImportError:
        if not notice[0]:
            say("notice: loadtest.sampler is not installed: the runs are made without metrics.jsonl")
            notice[0] = True
        return nullcontext()
    return Sampler(options.host, options.metrics_token, options.redis_url, options.pg_dsn, out)


def _write_report(out_dir: Path, say: Callable[[str], None]) -> Path | None:
    """``loadtest.report.write(out_dir)`` when the module is there; its index.html."""
    try:
        from loadtest import report
    except ImportError:
        say("notice: loadtest.report is not installed: no index.html or summary.png (rehearsal.json has the figures)")
        return None
    try:
        return Path(report.write(out_dir))
    except Exception as exc:  # the verdicts stand without the report; say why it is missing
        say(f"warning: the report could not be written: {exc!r}")
        return None


def _exit_code(edge: FigureVerdict, runs: list[RunRecord]) -> int:
    if not edge.passed or any(r.invalid is None and r.not_run is None and not r.passed for r in runs):
        return EXIT_THRESHOLD_MISSED
    if any(r.not_run is not None for r in runs):
        return EXIT_NOT_RUN
    if any(r.invalid is not None for r in runs):
        return EXIT_INVALID
    return EXIT_PASSED
