"""Locust plumbing every locustfile shares: the run's options, CPU sampling on workers, the master's summary.

Importing this module registers the listeners (Locust's way). Workers sample their own CPU once a
second and send the samples with their stats reports; the master keeps them per worker and, when
the run ends, writes ``--summary-file``: every recorded request name with its percentiles, the
percentiles of all served requests together (refusals and flows left out), the failures and the CPU
samples. ``examgate loadtest`` reads that file for its table and verdicts.
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
from locust.runners import WorkerRunner
from locust.stats import StatsEntry

from loadtest.answers import FLOW, split_name

log = logging.getLogger("examgate.loadtest")

CPU_SAMPLE_S = 1.0
SUMMARY_FAILURES = 20
PERCENTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}
REPORT_KEY = "examgate_cpu"
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


_sampler = _Sampler()
_cpu_by_worker: dict[str, list[float]] = defaultdict(list)


class _RunClock:
    """When this process's part of the run started (Locust's test_start, on workers and local runners)."""

    started_s: float | None = None


def seconds_left(duration_s: int) -> float | None:
    """Seconds left of a run lasting ``duration_s`` by this process's clock; None when either is unknown."""
    if not duration_s or _RunClock.started_s is None:
        return None
    return duration_s - (time.monotonic() - _RunClock.started_s)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    _RunClock.started_s = time.monotonic()
    if isinstance(environment.runner, WorkerRunner):
        _sampler.start()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        _sampler.stop()


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data[REPORT_KEY], _sampler.samples = _sampler.samples, []


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    _cpu_by_worker[client_id].extend(data.get(REPORT_KEY) or [])


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
        "workers": getattr(runner, "worker_count", 1),
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
