"""One load-test run: issue a load-test token, start a headless Locust master and its workers, judge the result.

The steps, in order: the gateway issues a load-test token (audited) for the run; scenarios that
go through the waiting room turn it on for the open exam (and put the operator's setting back
afterwards); scenarios with operator users get the run's operator token (both tokens reach the
master through its environment, never a command line, and the master hands them to its workers);
a headless Locust master starts with ``--expect-workers`` and waits for the ``processes`` local
workers (plus any ``remote_workers`` started on other machines); the run writes Locust's CSV and
HTML reports and the master's ``summary.json`` under ``out_dir``; a scenario with a watch
(``loadtest.watch``) observes the system once the users have stopped (the SMS outbox draining); then
the summary table and the verdicts (the thresholds', the scenario's own checks and its watch's) are
printed and the exit code returned (``loadtest.verdicts``).
Locust never runs in this process: it monkey-patches the standard library with gevent.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from loadtest.admin import GatewayError, Operator
from loadtest.processes import Process, free_port, start_locust
from loadtest.scenarios import Scenario
from loadtest.summary import Summary, render, summarize
from loadtest.verdicts import (
    CPU_LIMIT_PCT,
    EXIT_NOT_RUN,
    Thresholds,
    Verdict,
    cpu_saturation,
    evaluate,
    exit_code,
)
from loadtest.watch import WatchFailed
from seed import EXAM_B_CODE

REPORTS_DIR = Path("loadtest") / "reports"
STARTUP_S = 90.0  # Locust start-up and waiting for the workers
STOP_S = 30.0  # the master's stop, reports and quit
TOKEN_SPARE_S = 600  # the load-test token outlives the run by this much
CONFIG_APPLIED_S = 5.0
THROTTLED_HINT_SHARE = 0.5
LOCUST_MASTER_PORT = 5557
# The master's alone: the tokens it hands its workers, and --csv-full-history (a worker has no --csv and refuses it).
MASTER_ONLY_ENV = ("LOCUST_LOADTEST_TOKEN", "LOCUST_OPERATOR_TOKEN", "LOCUST_CSV_FULL_HISTORY")
_DURATION = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$")
_WORKER_SENT = re.compile(r"worker (\S+ \(index -?\d+\) sent \d+ requests, \d+ failed)")


def parse_duration(raw: str) -> int:
    """``90``, ``90s``, ``2m`` or ``1h`` as seconds; ValueError otherwise."""
    match = _DURATION.match(raw)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {raw!r} (e.g. 30, 30s, 2m, 1h)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def default_out_dir(scenario: str, now: datetime | None = None) -> Path:
    """``loadtest/reports/<timestamp>-<scenario>/`` under the working directory."""
    return REPORTS_DIR / f"{(now or datetime.now()):%Y%m%d-%H%M%S}-{scenario}"


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs; ``examgate loadtest`` builds it from its options and the settings."""

    scenario: Scenario
    host: str
    admin_token: str
    users: int
    spawn_rate: float
    duration_s: int
    processes: int
    out_dir: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    shape: str = "spike"
    steps: int = 4
    remote_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int | None = None
    first_candidate: int = 0
    candidates: int = 2000
    candidate_offset: int | None = None  # None: a random place in the window, so runs use different candidates
    think_ms: int = 500
    admit_per_s: float = 200.0
    keys_dir: str = ".run/keys"
    alipay_app_id: str = ""
    wechat_app_id: str = ""
    wechat_mch_id: str = ""
    cpu_limit_pct: float = CPU_LIMIT_PCT
    csv_full_history: bool = False  # every request name's figures over time in locust_stats_history.csv


class NotRun(Exception):
    """The run could not be made (gateway unreachable, keys missing, Locust failed); nothing was judged."""


def run_loadtest(options: RunOptions, echo: Callable[[str], None] = print) -> int:
    """Run the scenario, print the summary and the verdicts, write the reports; the exit code."""
    try:
        return _run(options, echo)
    except NotRun as exc:
        echo(f"error: {exc}")
        return EXIT_NOT_RUN


def _run(options: RunOptions, echo: Callable[[str], None]) -> int:
    scenario = options.scenario
    operator = Operator(options.host, options.admin_token)
    if scenario.payment_keys:
        _check_keys(options.keys_dir)
    try:
        token = operator.issue_loadtest_token(options.duration_s + TOKEN_SPARE_S, f"loadtest {scenario.name}")
    except GatewayError as exc:
        raise NotRun(f"{exc} (is the gateway running, and is the admin token right? --admin-token)") from None
    try:
        room = _RoomSwitch.for_run(operator, scenario, options.admit_per_s)
    except GatewayError as exc:
        raise NotRun(str(exc)) from None
    out_dir = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        watch = scenario.watch() if scenario.watch is not None else None
    except WatchFailed as exc:
        raise NotRun(str(exc)) from None
    workers = options.processes + options.remote_workers
    echo(f"examgate loadtest {scenario.name}: {options.users} users ({options.shape}, {options.spawn_rate:g}/s), "
         f"{options.duration_s} s, {workers} worker process{'es' if workers != 1 else ''} -> {options.host}")
    echo(f"reports: {out_dir}/")
    if options.remote_workers:
        port = options.master_port or LOCUST_MASTER_PORT
        echo(f"waiting for {options.remote_workers} remote worker(s); on each machine run: examgate loadtest "
             f"{scenario.name} --worker --master-host <this host> --master-port {port} [--processes N]")
    try:
        room.switch_on()
        if watch is not None:
            watch.before()
        master_code = _locust(options, token, room.on, out_dir)
    except (GatewayError, WatchFailed) as exc:
        raise NotRun(str(exc)) from None
    finally:
        room.restore(echo)
    checks = list(scenario.checks)
    if watch is not None and (out_dir / "summary.json").exists():  # the users have stopped: what follows
        checks += watch.after(out_dir, echo)
    return judge(out_dir, options.thresholds, options.cpu_limit_pct, echo, master_code=master_code,
                 checks=checks)


def _check_keys(keys_dir: str) -> None:
    from payments import keys as payment_keys
    from payments.errors import KeysInvalid, KeysMissing

    try:
        payment_keys.load(keys_dir)
    except (KeysMissing, KeysInvalid) as exc:
        raise NotRun(f"the notification flood signs with the providers' keys: {exc} (--keys-dir)") from None


class _RoomSwitch:
    """Turns the open exam's waiting room on for a run that goes through it, and back as the operator had it."""

    def __init__(self, operator: Operator, exam_id: int | None, before: dict[str, object] | None, on: bool,
                 wanted: dict[str, object] | None) -> None:
        self.operator = operator
        self.exam_id = exam_id
        self.before = before
        self.on = on
        self.wanted = wanted
        self.switched = False

    @classmethod
    def for_run(cls, operator: Operator, scenario: Scenario, admit_per_s: float) -> _RoomSwitch:
        """Find out whether the room is on; plan to turn it on when the scenario needs it and it is off."""
        if not scenario.holds_seats:
            return cls(operator, None, None, False, None)
        exam_id = operator.exam_id(EXAM_B_CODE)
        before = operator.waiting_room(exam_id)
        enabled = bool(before and before.get("enabled") is True)
        if enabled or not scenario.waiting_room:
            return cls(operator, exam_id, before, enabled, None)
        return cls(operator, exam_id, before, True, {"enabled": True, "admit_per_s": admit_per_s})

    def switch_on(self) -> None:
        """Apply the planned change and wait until the gateway processes have it."""
        if self.wanted is None or self.exam_id is None:
            return
        version = self.operator.patch_waiting_room(self.exam_id, self.wanted)
        self.switched = True
        self.operator.wait_applied(version, CONFIG_APPLIED_S)

    def restore(self, echo: Callable[[str], None]) -> None:
        """Put the operator's setting back (a key the run added is removed again)."""
        if not self.switched or self.exam_id is None or self.wanted is None:
            return
        before = self.before or {}
        patch = None if self.before is None else {key: before.get(key) for key in self.wanted}
        try:
            self.operator.patch_waiting_room(self.exam_id, patch)
        except GatewayError as exc:
            echo(f"warning: could not turn the waiting room of exam {self.exam_id} back off: {exc}")


def _locust_args(options: RunOptions, room_on: bool, out_dir: Path, master_port: int) -> list[str]:
    scenario = options.scenario
    offset = options.candidate_offset
    if offset is None:
        offset = random.randrange(options.candidates)
    return [
        "--headless", "--master", "--only-summary",
        "--expect-workers", str(options.processes + options.remote_workers),
        "--expect-workers-max-wait", str(int(STARTUP_S)),
        "--master-bind-host", options.master_bind_host, "--master-bind-port", str(master_port),
        "--host", options.host,
        "--users", str(options.users), "--spawn-rate", f"{options.spawn_rate:g}",
        "--run-time", f"{options.duration_s}s", "--duration-s", str(options.duration_s),
        "--csv", str(out_dir / "locust"), *(["--csv-full-history"] if options.csv_full_history else []),
        "--html", str(out_dir / "report.html"),
        "--scenario", scenario.name, "--shape", options.shape, "--steps", str(options.steps),
        "--first-candidate", str(options.first_candidate), "--candidates", str(options.candidates),
        "--candidate-offset", str(offset), "--think-ms", str(options.think_ms),
        "--waiting-room", "on" if room_on else "off",
        "--keys-dir", str(Path(options.keys_dir).resolve()) if scenario.payment_keys else "",
        "--alipay-app-id", options.alipay_app_id, "--wechat-app-id", options.wechat_app_id,
        "--wechat-mch-id", options.wechat_mch_id,
        "--summary-file", str(out_dir / "summary.json"),
    ]


def _locust(options: RunOptions, token: str, room_on: bool, out_dir: Path) -> int | None:
    """Run the master and the local workers to the end; the master's exit code (None if it had to be stopped)."""
    # Remote workers need to know the port in advance: Locust's default unless told otherwise.
    master_port = options.master_port or (LOCUST_MASTER_PORT if options.remote_workers else free_port())
    env = dict(os.environ)
    env["LOCUST_LOADTEST_TOKEN"] = token  # in the environment, not on a command line anyone can list
    if options.scenario.operators:
        env["LOCUST_OPERATOR_TOKEN"] = options.admin_token  # the master hands both to its workers
    files = [options.scenario.locustfile]
    master = start_locust(files, _locust_args(options, room_on, out_dir, master_port),
                          log_path=out_dir / "locust-master.log", env=env)
    worker_env = {k: v for k, v in os.environ.items() if k not in MASTER_ONLY_ENV}
    workers: list[Process] = []
    try:
        for number in range(options.processes):
            workers.append(start_locust(
                files, ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
                log_path=out_dir / f"locust-worker-{number + 1}.log", env=worker_env))
        return _supervise(master, workers, options.duration_s)
    finally:
        for process in [master, *workers]:
            process.stop(timeout_s=10)


def run_workers(scenario: Scenario, master_host: str, master_port: int | None, processes: int, out_dir: Path,
                echo: Callable[[str], None] = print) -> int:
    """Run ``processes`` Locust workers for a master on another machine until it sends them home; the exit code.

    The master (``examgate loadtest … --remote-workers N``) sends them the run's options and tokens,
    collects their figures and judges the run; here each worker's own count is printed. 0 when every
    worker ended when the master told it to, 4 when one failed (its last log lines are printed).
    """
    port = master_port or LOCUST_MASTER_PORT
    out_dir.mkdir(parents=True, exist_ok=True)
    echo(f"examgate loadtest {scenario.name}: {processes} worker process{'es' if processes != 1 else ''} "
         f"for the Locust master at {master_host}:{port} (it runs the scenario and prints the verdicts)")
    echo(f"logs: {out_dir}/")
    env = {k: v for k, v in os.environ.items() if k not in MASTER_ONLY_ENV}
    workers: list[Process] = []
    try:
        for number in range(processes):
            workers.append(start_locust(
                [scenario.locustfile], ["--worker", "--master-host", master_host, "--master-port", str(port)],
                log_path=out_dir / f"locust-worker-{number + 1}.log", env=env))
        while any(w.proc.poll() is None for w in workers):
            if any(w.proc.poll() not in (None, 0) for w in workers):
                break  # one failed: the others stop too
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop(timeout_s=10)
    failed = False
    for number, worker in enumerate(workers, start=1):
        log_path = out_dir / f"locust-worker-{number}.log"
        sent = _WORKER_SENT.findall(log_path.read_text(errors="replace")) if log_path.exists() else []
        if worker.proc.returncode == 0 and sent:
            echo(f"worker {number}: {sent[-1]}")
        elif worker.proc.returncode == 0:
            echo(f"worker {number}: ended without a run (the master quit before starting one)")
        else:
            failed = True
            echo(f"worker {number} exited with {worker.proc.returncode}; last log lines:\n{_tail(log_path)}")
    return EXIT_NOT_RUN if failed else 0


def _supervise(master: Process, workers: list[Process], duration_s: int) -> int | None:
    deadline = time.monotonic() + STARTUP_S + duration_s + STOP_S
    while master.proc.poll() is None:
        crashed = [w for w in workers if w.proc.poll() not in (None, 0)]
        if crashed or time.monotonic() > deadline:
            master.stop(timeout_s=STOP_S)
            return None
        time.sleep(0.2)
    return master.proc.returncode


def _worker_lines(tallies: dict[str, dict[str, int]], total: int) -> list[str]:
    """Each worker's own count of its requests beside the merged figures' total (a lost report shows here)."""
    if not tallies:
        return []
    counts = sorted((t["index"], t["requests"]) for t in tallies.values())
    counted = sum(n for _, n in counts)
    each = ", ".join(f"#{index} {n:,}" for index, n in counts)
    line = f"load generator workers: {len(counts)} reported, requests {each}"
    if counted == total:
        return [f"{line} = {total:,}, the figures above"]
    return [(f"{line}; warning: they made {counted:,} requests, the figures above hold {total:,} "
             f"(a worker's last report did not reach the master)")]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def judge(out_dir: Path, thresholds: Thresholds, cpu_limit_pct: float = CPU_LIMIT_PCT,
          echo: Callable[[str], None] = print, *, master_code: int | None = 0,
          checks: Sequence[Callable[[Summary], Verdict]] = ()) -> int:
    """Judge a finished run from its ``summary.json``: print and write the table and verdicts; the exit code.

    ``checks`` are the scenario's own verdicts (the review scenario's: every submission approved).

    Raises ``NotRun`` when there is no summary (the master's exit code, None if it was stopped, says why).
    """
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        logs = sorted(out_dir.glob("locust-*.log"))
        detail = "\n".join(f"--- {log.name}\n{_tail(log)}" for log in logs)
        state = "was stopped" if master_code is None else f"exited with {master_code}"
        raise NotRun(f"the Locust run did not finish (master {state}); last log lines:\n{detail}")
    figures = json.loads(summary_path.read_text())
    summary = summarize(figures)
    verdicts = evaluate(summary, thresholds) + [check(summary) for check in checks]
    exceptions = figures.get("exceptions") or []
    if exceptions:
        count = sum(int(e.get("count", 1)) for e in exceptions)
        first = str(exceptions[0].get("msg", ""))[:200]
        verdicts.append(Verdict("users", False, f"FAIL the load users raised {count} exception(s): {first} "
                                                f"(see {out_dir}/locust-master.log)"))
    saturation = cpu_saturation(figures.get("cpu") or {}, cpu_limit_pct)
    lines = [render(summary), ""]
    throttled = summary.total.reasons.get("429", 0)
    if summary.total.requests and throttled / summary.total.requests >= THROTTLED_HINT_SHARE:
        lines.append("hint: most requests were throttled (429). Rate limits key on the client address: let the "
                     "gateway trust the load generator (EXAMGATE_TRUSTED_PROXIES=<its address>), so each candidate "
                     "counts as its own X-Forwarded-For address, or put the rules in shadow mode for the rehearsal.")
    lines += [v.text for v in verdicts]
    lines.append(saturation.text)
    lines += _worker_lines(figures.get("worker_requests") or {}, summary.total.requests)
    code = exit_code(verdicts, saturation)
    lines.append({0: "PASSED", 1: "FAILED: a threshold was missed", 3: "INVALID: load generator CPU-saturated"}[code]
                 + f" (exit code {code})")
    text = "\n".join(lines)
    (out_dir / "summary.txt").write_text(text + "\n")
    echo(text)
    return code
