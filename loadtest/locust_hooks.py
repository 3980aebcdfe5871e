"""Locust plumbing every locustfile shares: the run's options, CPU sampling on workers, the master's summary.

Importing this module registers the listeners (Locust's way). Workers sample their own CPU once a
second and send the samples with their stats reports, with their own running count of the requests
they made; the master keeps both per worker and, when the run ends, writes ``--summary-file``: every
recorded request name with its percentiles (Locust's stats, merged from every worker's reports), the
percentiles of all served requests together (refusals and flows left out), the failures, the CPU
samples and each worker's own count. ``examgate loadtest`` reads that file for its table and verdicts.

When a headless run ends, Locust's master sends its workers ``quit`` and gives their last reports
half a second to arrive before it writes its stats: a worker on another machine, or one still
stopping its users, would be left out. So when the run stops, the master first asks each worker to
stop its users (``examgate_stop``) and waits (up to ``FINAL_REPORT_WAIT_S``) until each has sent
the report it sends once its users have stopped; only then does Locust send ``quit``. The summary
thus holds every request any worker made.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gevent
import psutil
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

from loadtest.answers import FLOW, split_name

log = logging.getLogger("examgate.loadtest")

CPU_SAMPLE_S = 1.0
SUMMARY_FAILURES = 20
PERCENTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}
REPORT_KEY = "examgate_cpu"
TALLY_KEY = "examgate_requests"
STOP_MESSAGE = "examgate_stop"
FINAL_REPORT_WAIT_S = 30.0
_WRAPPED_ERROR = re.compile(r"^CatchResponseError\((['\"])(.*)\1\)$", re.DOTALL)


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """The options of an examgate run (the master sends them to its workers)."""
    parser.add_argument("--loadtest-token", default="", env_var="LOCUST_LOADTEST_TOKEN", is_secret=True,
                        help="X-Loadtest-Token issued by POST /admin/api/v1/loadtest-tokens (lets captcha pass)")
    parser.add_argument("--operator-token", default="", env_var="LOCUST_OPERATOR_TOKEN", is_secret=True,
                        help="operator bearer token the review scenario's operators decide with")
    parser.add_argument("--duration-s", type=int, default=0,
                        help="the run's length in seconds (Locust keeps --run-time from its workers)")
    parser.add_argument("--scenario", default="", help="scenario name, for the summary")
    parser.add_argument("--first-candidate", type=int, default=0, help="first seeded candidate index to use")
    parser.add_argument("--candidates", type=int, default=2000, help="how many seeded candidates to use")
    parser.add_argument("--candidate-offset", type=int, default=0, help="where in the window to start")
    parser.add_argument("--think-ms", type=int, default=500, help="mean pause between a user's steps, ms")
    parser.add_argument("--waiting-room", choices=("on", "off"), default="off",
                        help="whether the open exam's waiting room is on (seat holds then need admission)")
    parser.add_argument("--keys-dir", default="", help="payment keys directory (notification flood)")
    parser.add_argument("--alipay-app-id", default="", help="the gateway's Alipay app id")
    parser.add_argument("--wechat-app-id", default="", help="the gateway's WeChat Pay app id")
    parser.add_argument("--wechat-mch-id", default="", help="the gateway's WeChat Pay merchant id")
    parser.add_argument("--shape", choices=("spike", "steps"), default="spike", help="load shape")
    parser.add_argument("--steps", type=int, default=4, help="steps of the steps shape")
    parser.add_argument("--summary-file", default="", include_in_web_ui=False,
                        help="where the master writes the run's figures (JSON)")


class _Sampler:
    """This worker's CPU use, one sample a second, drained into each stats report."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self.greenlet is None or self.greenlet.dead:
            self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    def _run(self) -> None:
        process = psutil.Process()
        process.cpu_percent(None)  # the first call only starts the measurement
        while True:
            gevent.sleep(CPU_SAMPLE_S)
            self.samples.append(process.cpu_percent(None))


class _Tally:
    """The requests this process made in this run (Locust's request events, which its stats count too)."""

    requests = 0
    failures = 0
    worker_index = -1
    final = False  # the users have stopped: no request follows


_sampler = _Sampler()
_cpu_by_worker: dict[str, list[float]] = defaultdict(list)
_tally_by_worker: dict[str, dict[str, int]] = {}


class _RunClock:
    """When this process's part of the run started (Locust's test_start, on workers and local runners)."""

    started_s: float | None = None


def seconds_left(duration_s: int) -> float | None:
    """Seconds left of a run lasting ``duration_s`` by this process's clock; None when either is unknown."""
    if not duration_s or _RunClock.started_s is None:
        return None
    return duration_s - (time.monotonic() - _RunClock.started_s)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(STOP_MESSAGE, lambda environment, msg, **_: runner.stop())


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    _RunClock.started_s = time.monotonic()
    if isinstance(environment.runner, WorkerRunner):
        _Tally.requests = _Tally.failures = 0  # the worker's stats start again with the run too
        _Tally.final = False
        _Tally.worker_index = environment.runner.worker_index
        _sampler.start()
    if isinstance(environment.runner, MasterRunner):
        _cpu_by_worker.clear()
        _tally_by_worker.clear()


@events.request.add_listener
def _on_request(exception: BaseException | None = None, **_: Any) -> None:
    _Tally.requests += 1
    _Tally.failures += exception is not None


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _sampler.stop()
        _Tally.final = True
        runner._send_stats()  # the users have stopped: the last report, every listener's part in it
        log.info("worker %s (index %d) sent %d requests, %d failed", runner.client_id, _Tally.worker_index,
                 _Tally.requests, _Tally.failures)
    elif isinstance(runner, MasterRunner):
        _collect_final_reports(runner)


def _collect_final_reports(runner: MasterRunner) -> None:
    """Have every connected worker stop its users and wait until each one's last report is in.

    Workers stopped already (Locust's own stop, from its web UI) have sent theirs: they are not asked.
    """
    waiting = {client.id for client in runner.clients.all if not _tally_by_worker.get(client.id, {}).get("final")}
    for client_id in waiting:
        runner.send_message(STOP_MESSAGE, None, client_id=client_id)
    deadline = time.monotonic() + FINAL_REPORT_WAIT_S
    while True:
        waiting = {w for w in waiting if not _tally_by_worker.get(w, {}).get("final")
                   and w in runner.clients}  # a worker gone (quit, missing) sends nothing more
        if not waiting or time.monotonic() > deadline:
            break
        gevent.sleep(0.05)
    if waiting:
        log.warning("no last report from %d worker(s) within %.0f s: %s", len(waiting), FINAL_REPORT_WAIT_S,
                    ", ".join(sorted(waiting)))


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data[REPORT_KEY], _sampler.samples = _sampler.samples, []
    data[TALLY_KEY] = {"index": _Tally.worker_index, "requests": _Tally.requests, "failures": _Tally.failures,
                       "final": int(_Tally.final)}


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    _cpu_by_worker[client_id].extend(data.get(REPORT_KEY) or [])
    tally = data.get(TALLY_KEY)
    if tally is not None:  # running totals, in order on the worker's one connection: the latest wins
        _tally_by_worker[client_id] = {key: int(tally[key]) for key in ("index", "requests", "failures", "final")}


def _figures(entry: StatsEntry) -> dict[str, Any]:
    served = entry.num_requests - entry.num_none_requests
    figures: dict[str, Any] = {"method": entry.method or "", "name": entry.name, "requests": entry.num_requests,
                               "failures": entry.num_failures}
    for key, percent in PERCENTILES.items():
        figures[key] = entry.get_response_time_percentile(percent) if served else None
    figures["avg_ms"] = round(entry.avg_response_time, 2) if served else None
    figures["max_ms"] = entry.max_response_time if served else None
    return figures


def _error_text(error: object) -> str:
    """A failure as the user wrote it: Locust keeps ``CatchResponseError('HTTP 409 … where 200 was due')``."""
    text = str(error)
    match = _WRAPPED_ERROR.match(text)
    return match.group(2) if match else text


def summary(environment: Environment) -> dict[str, Any]:
    """The run's figures as the master (or a local runner) has them when the run ends."""
    runner = environment.runner
    assert runner is not None
    stats = runner.stats
    options = environment.parsed_options
    served = StatsEntry(stats, "served", "", use_response_times_cache=False)
    entries = []
    for entry in stats.entries.values():
        entries.append(_figures(entry))
        if split_name(entry.name)[1] is None and entry.method != FLOW:  # a flow's time is no request's
            served.extend(entry)
    total = stats.total
    elapsed_s = (total.last_request_timestamp - total.start_time) if total.last_request_timestamp else 0.0
    failures = sorted(stats.errors.values(), key=lambda e: -e.occurrences)[:SUMMARY_FAILURES]
    exceptions = [{"count": e["count"], "msg": e["msg"], "traceback": e["traceback"]}
                  for e in runner.exceptions.values()]
    return {
        "scenario": getattr(options, "scenario", ""),
        "host": environment.host,
        "users": getattr(options, "num_users", None),
        "spawn_rate": getattr(options, "spawn_rate", None),
        "run_time_s": getattr(options, "run_time", None),
        "shape": getattr(options, "shape", ""),
        "workers": len(_tally_by_worker) if isinstance(runner, MasterRunner) else 1,
        # Each worker's own count of the requests it made (its request events), by Locust client id.
        "worker_requests": {worker: dict(tally) for worker, tally in sorted(_tally_by_worker.items())},
        "elapsed_s": round(max(elapsed_s, 0.0), 3),
        "entries": sorted(entries, key=lambda e: (e["name"], e["method"])),
        "served": _figures(served),
        "failures": [{"method": e.method, "name": e.name, "error": _error_text(e.error), "occurrences": e.occurrences}
                     for e in failures],
        "exceptions": exceptions,
        "cpu": {
            "workers": {worker: [round(s, 1) for s in samples] for worker, samples in _cpu_by_worker.items()},
            "locust_warning": bool(getattr(runner, "worker_cpu_warning_emitted", False)
                                   or getattr(runner, "cpu_warning_emitted", False)),
        },
    }


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return
    path = getattr(environment.parsed_options, "summary_file", "")
    if not path:
        return
    figures = summary(environment)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(figures, ensure_ascii=False, indent=1))
    log.info("summary written to %s", path)
    # examgate loadtest judges the run from the summary; Locust's own "any failure → 1" would be noise.
    environment.process_exit_code = 0
