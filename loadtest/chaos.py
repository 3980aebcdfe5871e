"""Chaos during load: a scenario runs while one part of the system fails; what candidates saw, and the invariants.

Each event happens during a run of its own (``event_at_s`` after the users started), on a stack the
chaos run owns whole (``PrivateStack``: its own redis-server and PostgreSQL server, seeded, a
2-process gateway, the worker, the payment simulator), so nothing anyone else runs is paused or
restarted:

- ``kill-gateway``: ``kill -9`` of one gateway process (a child of ``examgate serve``; the supervisor
  starts another in its place);
- ``restart-worker``: ``kill -9`` of the worker, and a new one started at once (what a crash and
  its restart by systemd do; the new worker takes over the events the dead one had read after
  ``EXAMGATE_WRITEBEHIND_CLAIM_MIN_IDLE_MS``);
- ``pause-redis``: ``SIGSTOP`` of redis-server for ``pause_s`` (2 s), then ``SIGCONT`` (a stall: a
  fork for a snapshot on a big instance, a VM paused);
- ``restart-postgres``: PostgreSQL stopped (``pg_ctl stop -m fast``: every session rolled back and
  cut) and started again.

After each run, what the candidates saw (``candidates_saw``, from Locust's stats history and
failures): failures by status and error, the served requests' p95/p99 before the event and at their
worst after it, requests per second before it and at their lowest after, and when the last failure
was. Two verdicts come from that: ``answers`` (every failure was the outage's — a 5xx or no answer,
never a wrong answer) and ``recovered`` (no failure in the run's last ``quiet_s``). Then the
invariants (``loadtest.invariants``: capacity, holds, payments, stuck), checked in PostgreSQL and
Redis until they hold or ``settle_s`` has passed.

Each run is one entry of ``rehearsal.json`` (phase ``chaos:<event>``), its reports in
``<scenario>-chaos-<event>/`` with ``chaos.json`` (the event, what candidates saw, the invariants).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.invariants import GRACE_S, SETTLE_S, settle
from loadtest.private_stack import PrivateStack
from loadtest.rehearsal_record import append_run, run_entry
from loadtest.verdicts import Verdict

__all__ = [
    "EVENTS", "ChaosPlan", "EventRecord", "Timeline",
    "candidates_saw", "failure_kind", "run_chaos", "run_event", "saw_verdicts",
]  # fmt: skip

PAUSE_S = 2.0
RPS_BASELINE_S = 6.0  # requests/s before an event: the last two of the workers' 3 s reports, not the ramp
LOAD_START_S = 120.0  # Locust's start-up and its workers connecting
HOLD_TTL_S = 60  # the shortest the live config allows: a hold (and its order) left unpaid expires within the run


# --- the events -----------------------------------------------------------------------------------------

class EventRecord(NamedTuple):
    """When an event began and ended (unix seconds), and what was done and seen."""

    name: str
    started_at: float
    ended_at: float
    detail: str


def kill_gateway(stack: PrivateStack, _: float) -> EventRecord:
    """``kill -9`` one gateway process; ends when the supervisor has started another and the gateway is ready."""
    children = stack.gateway_children()
    if not children:
        raise RuntimeError("the gateway has no child process to kill")
    victim = children[0]
    started = time.time()
    os.kill(victim, signal.SIGKILL)
    port = int(stack.gateway.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 30
    while True:
        replaced = [pid for pid in stack.gateway_children() if pid not in children]
        if replaced and _listening(replaced[0], port):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway's supervisor did not replace the killed process within 30 s")
        time.sleep(0.05)
    ended = time.time()
    return EventRecord("kill-gateway", started, ended, f"killed gateway process {victim} (of {len(children)}); process "
                                                       f"{replaced[0]} listening in its place {ended - started:.1f} s "
                                                       "later")


def _listening(pid: int, port: int) -> bool:
    import psutil

    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


def restart_worker(stack: PrivateStack, _: float) -> EventRecord:
    """``kill -9`` the worker and start a new one at once; ends when the new one runs its tasks."""
    old = stack.worker.proc.pid
    started = time.time()
    stack.worker.proc.send_signal(signal.SIGKILL)
    stack.worker.proc.wait()
    stack.restart_worker()
    ended = time.time()
    return EventRecord("restart-worker", started, ended, f"killed worker {old}; worker {stack.worker.proc.pid} "
                                                         f"running its tasks {ended - started:.1f} s later")


def pause_redis(stack: PrivateStack, pause_s: float) -> EventRecord:
    """``SIGSTOP`` redis-server for ``pause_s``, then ``SIGCONT``."""
    assert stack.redis.proc is not None
    pid = stack.redis.proc.pid
    started = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(pause_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    ended = time.time()
    return EventRecord("pause-redis", started, ended, f"redis-server {pid} stopped for {ended - started:.1f} s")


def restart_postgres(stack: PrivateStack, _: float) -> EventRecord:
    """Stop PostgreSQL (fast: sessions rolled back and cut) and start it again; ends when it accepts connections."""
    if stack.postgres is None:
        raise RuntimeError("the stack's PostgreSQL is not its own: it is never restarted")
    started = time.time()
    stack.postgres.stop(mode="fast")
    down = time.time()
    stack.postgres.start()
    ended = time.time()
    return EventRecord("restart-postgres", started, ended, f"PostgreSQL stopped in {down - started:.1f} s, "
                                                           f"accepting connections again {ended - started:.1f} s after "
                                                           "the stop began")


class Event(NamedTuple):
    """A failure made during a run."""

    name: str
    about: str
    make: Callable[[PrivateStack, float], EventRecord]


EVENTS: dict[str, Event] = {e.name: e for e in (
    Event("kill-gateway", "kill -9 one gateway process (the supervisor starts another)", kill_gateway),
    Event("restart-worker", "kill -9 the worker and start a new one", restart_worker),
    Event("pause-redis", "SIGSTOP redis-server for the pause, then SIGCONT", pause_redis),
    Event("restart-postgres", "stop PostgreSQL (fast) and start it again", restart_postgres),
)}


# --- what the candidates saw ----------------------------------------------------------------------------

class Point(NamedTuple):
    """One row of Locust's stats history (every request together): the moment and the figures then."""

    t: float
    rps: float
    p95_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int


class Timeline(NamedTuple):
    """The run's figures second by second.

    Locust's master writes a row a second, but its workers report every 3 s, so a failure is placed in
    time to within about 3 s; the percentiles are Locust's current ones (its last 10 s of requests).
    """

    points: list[Point]

    @classmethod
    def read(cls, path: Path) -> Timeline:
        """``locust_stats_history.csv``'s ``Aggregated`` rows."""
        if not path.exists():
            return cls([])

        def ms(raw: str) -> float | None:
            return None if raw in ("", "N/A") else float(raw)

        points = []
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("Name") != "Aggregated":
                    continue
                # A row is stamped with its whole second: what it counts was known by the second's end.
                points.append(Point(float(row["Timestamp"]) + 1, float(row.get("Requests/s") or 0),
                                    ms(row.get("95%", "")), ms(row.get("99%", "")),
                                    int(row.get("Total Request Count") or 0), int(row.get("Total Failure Count") or 0)))
        return cls(points)

    def started(self) -> float | None:
        """When the first request was counted."""
        return next((p.t for p in self.points if p.requests > 0), None)


_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def failure_kind(error: str) -> str:
    """A failure's status class: ``503``, ``no answer``, ``flow`` …; the error text says the rest."""
    status = _STATUS.search(error)
    if status:
        return status.group(1)
    if error.startswith("no answer"):
        return "no answer"
    return "other"


_OUTAGE = re.compile(r"^(5\d\d|no answer)$")


def candidates_saw(run_dir: Path, event: EventRecord, window_s: float = 15.0) -> dict[str, Any]:
    """What the users saw around ``event``: failures by kind and error, latency and throughput before and after."""
    timeline = Timeline.read(run_dir / "locust_stats_history.csv")
    figures = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    failures = figures.get("failures") or []
    by_kind: Counter[str] = Counter()
    for failure in failures:
        by_kind[failure_kind(str(failure.get("error", "")))] += int(failure.get("occurrences", 0))
    before = [p for p in timeline.points if p.t < event.started_at and p.requests > 0]
    around = [p for p in timeline.points if event.started_at <= p.t <= event.ended_at + window_s]
    failed_at = [b.t for a, b in zip(timeline.points, timeline.points[1:], strict=False) if b.failures > a.failures]
    failures_before = before[-1].failures if before else 0
    last = timeline.points[-1] if timeline.points else None

    def pick(points: list[Point], attr: str, how: Callable[[list[float]], float]) -> float | None:
        values = [v for p in points if (v := getattr(p, attr)) is not None]
        return round(how(values), 1) if values else None

    return {
        "event": event._asdict(),
        "requests": last.requests if last else 0,
        "failures": last.failures if last else 0,
        "failures_before_event": failures_before,
        "failures_by_kind": dict(by_kind.most_common()),
        "failures_by_error": [{"request": f"{f.get('method', '')} {f.get('name', '')}".strip(),
                               "error": f.get("error"), "count": f.get("occurrences")} for f in failures[:12]],
        "refused": _refused(figures),
        "p95_ms_before": pick(before, "p95_ms", statistics.median),
        "p99_ms_before": pick(before, "p99_ms", statistics.median),
        "p95_ms_after_worst": pick(around, "p95_ms", max),
        "p99_ms_after_worst": pick(around, "p99_ms", max),
        "rps_before": pick([p for p in before if p.t >= event.started_at - RPS_BASELINE_S], "rps", statistics.median),
        "rps_after_lowest": pick(around, "rps", min),
        "last_failure_s_after_event": round(max(failed_at) - event.started_at, 1) if failed_at and
        max(failed_at) >= event.started_at else None,
        "run_ended_s_after_event": round(last.t - event.started_at, 1) if last else None,
    }


def _refused(figures: dict[str, Any]) -> dict[str, int]:
    from loadtest.summary import summarize

    if not figures:
        return {}
    return dict(summarize(figures).total.reasons.most_common())


def saw_verdicts(saw: dict[str, Any], quiet_s: float) -> list[Verdict]:
    """The candidates' side: every failure was the outage's (5xx, no answer), none in the run's last ``quiet_s``."""
    kinds = saw["failures_by_kind"]
    wrong = {k: n for k, n in kinds.items() if not _OUTAGE.match(k)}
    total = saw["failures"]
    verdicts = []
    if wrong:
        errors = "; ".join(f"{f['count']}× {f['request']}: {f['error']}" for f in saw["failures_by_error"]
                           if not _OUTAGE.match(failure_kind(str(f["error"]))))
        verdicts.append(Verdict("answers", False, f"FAIL answers: {sum(wrong.values()):,} of {total:,} failures were "
                                                  f"not the outage's (a 5xx or no answer): {errors}"))
    else:
        detail = ", ".join(f"{k} ×{n:,}" for k, n in kinds.items()) or "none"
        verdicts.append(Verdict("answers", True, f"ok   answers: every failure was the outage's ({detail})"))
    last, ended = saw["last_failure_s_after_event"], saw["run_ended_s_after_event"]
    if last is None:
        verdicts.append(Verdict("recovered", True, "ok   recovered: no failure after the event"))
    elif ended is not None and ended - last >= quiet_s:
        verdicts.append(Verdict("recovered", True, f"ok   recovered: the last failure {last:.0f} s after the event, "
                                                   f"none in the run's last {ended - last:.0f} s"))
    else:
        verdicts.append(Verdict("recovered", False, f"FAIL recovered: failures until {last:.0f} s after the event, "
                                                    f"the run ended {ended} s after it (wanted {quiet_s:g} s quiet)"))
    return verdicts


# --- a chaos run ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChaosPlan:
    """What a chaos run does: the load (``loadtest.run.RunOptions`` without host and token), events and timing."""

    run: Any  # loadtest.run.RunOptions; host, admin token, out_dir and candidate window are set per event
    report_dir: Path
    events: tuple[str, ...] = tuple(EVENTS)
    event_at_s: float = 8.0
    pause_s: float = PAUSE_S
    quiet_s: float = 5.0  # no failure in the run's last seconds: the candidates saw it recover
    settle_s: float = SETTLE_S
    grace_s: float = GRACE_S
    extra: dict[str, Any] = field(default_factory=dict)


class EventResult(NamedTuple):
    """One event's run: its directory, the entry for ``rehearsal.json`` and what the candidates saw."""

    run_dir: Path
    entry: dict[str, Any]
    saw: dict[str, Any]
    settled_s: float


def run_event(stack: PrivateStack, plan: ChaosPlan, name: str, window: tuple[int, int],
              echo: Callable[[str], None] = print) -> EventResult:
    """One scenario run with ``name`` made ``event_at_s`` after the users started; judged and recorded."""
    from loadtest.run import run_loadtest
    from loadtest.sampler import Sampler
    from loadtest.verdicts import EXIT_INVALID, EXIT_NOT_RUN

    event = EVENTS[name]
    scenario = plan.run.scenario.name
    run_dir = plan.report_dir / f"{scenario}-chaos-{name}"
    options = replace(plan.run, host=stack.gateway.url, admin_token=stack.admin_token, out_dir=run_dir,
                      first_candidate=window[0], candidates=window[1], candidate_offset=0, csv_full_history=True)
    lines: list[str] = []
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run_loadtest(options, lines.append)), name=f"chaos-{name}")
    echo(f"chaos {name}: {event.about}, {plan.event_at_s:g} s into a {options.duration_s} s run of {scenario} "
         f"({options.users} users) -> {run_dir}/")
    record: EventRecord | None = None
    failed: str | None = None
    with Sampler(stack.gateway.url, stack.gateway.metrics_token(), stack.redis.url, stack.dsn,
                 run_dir / "metrics.jsonl"):
        thread.start()
        try:
            started = _wait_for_load(run_dir / "locust_stats_history.csv", thread)
            if started is None:
                failed = "the load never started"
            else:
                time.sleep(max(0.0, started + plan.event_at_s - time.time()))
                record = event.make(stack, plan.pause_s)
                echo(f"  event: {record.detail}")
        except Exception as exc:  # the event could not be made: the run goes on, and says so
            failed = f"{type(exc).__name__}: {exc}"
        finally:
            thread.join()
    code = codes[0] if codes else EXIT_NOT_RUN
    (run_dir / "loadtest.txt").write_text("\n".join(lines) + "\n")
    verdicts: list[Verdict] = []
    saw: dict[str, Any] = {}
    if record is None:
        verdicts.append(Verdict("event", False, f"FAIL event: {name} was not made: {failed}"))
    else:
        saw = candidates_saw(run_dir, record)
        verdicts += saw_verdicts(saw, plan.quiet_s)
    invariants, settled_s = settle(stack.dsn, stack.redis.url, stack.paysim.url, plan.settle_s, plan.grace_s)
    verdicts += invariants
    invalid = None
    if code == EXIT_INVALID:
        invalid = "load generator CPU-saturated"
    elif code == EXIT_NOT_RUN:
        verdicts.append(Verdict("load", False, "FAIL load: the run could not be made: " + " ".join(lines[-3:])))
    entry = run_entry(scenario, f"chaos:{name}", run_dir, {"event": name, "event_at_s": plan.event_at_s,
                      "duration_s": options.duration_s, "users": options.users, "pause_s": plan.pause_s,
                      "quiet_s": plan.quiet_s, "grace_s": plan.grace_s}, verdicts, invalid)
    (run_dir / "chaos.json").write_text(json.dumps({"entry": entry, "candidates_saw": saw,
                                                    "invariants_settled_s": round(settled_s, 1)},
                                                   ensure_ascii=False, indent=2) + "\n")
    append_run(plan.report_dir, entry)
    for line in describe(saw) + [v.text for v in verdicts]:
        echo(f"  {line}")
    return EventResult(run_dir, entry, saw, settled_s)


def _wait_for_load(history: Path, thread: threading.Thread) -> float | None:
    """When the users' first requests were counted (unix seconds), or None if the run ended without any."""
    deadline = time.monotonic() + LOAD_START_S
    while thread.is_alive() and time.monotonic() < deadline:
        started = Timeline.read(history).started()
        if started is not None:
            return started
        time.sleep(0.2)
    return None


def describe(saw: dict[str, Any]) -> list[str]:
    """What the candidates saw, in two lines."""
    if not saw:
        return []
    kinds = ", ".join(f"{k} ×{n:,}" for k, n in saw["failures_by_kind"].items()) or "none"
    refused = ", ".join(f"{k} ×{n:,}" for k, n in list(saw["refused"].items())[:4]) or "none"
    last = saw["last_failure_s_after_event"]
    return [f"candidates saw: {saw['failures']:,} failures of {saw['requests']:,} requests ({kinds}); "
            f"expected refusals {refused}; last failure "
            + (f"{last:g} s after the event" if last is not None else "none after the event"),
            (f"latency: p95 {saw['p95_ms_before']} ms before, worst {saw['p95_ms_after_worst']} ms after; p99 "
             f"{saw['p99_ms_before']} → {saw['p99_ms_after_worst']} ms; req/s {saw['rps_before']} → lowest "
             f"{saw['rps_after_lowest']}")]


def run_chaos(stack: PrivateStack, plan: ChaosPlan, echo: Callable[[str], None] = print) -> int:
    """Every event of the plan in turn, each on a window of candidates of its own; exit 0 when every run passed.

    1 when an invariant or a candidates' verdict failed, 3 when a run was invalid (generator CPU).
    """
    from loadtest.verdicts import EXIT_INVALID, EXIT_PASSED, EXIT_THRESHOLD_MISSED

    stack.set_live({"seats": {"hold_ttl_s": HOLD_TTL_S}})
    size = max(1, stack.candidates // max(1, len(plan.events)))
    results = [run_event(stack, plan, name, (i * size, size), echo) for i, name in enumerate(plan.events)]
    invalid = any(r.entry["invalid"] for r in results)
    passed = all(r.entry["passed"] for r in results)
    code = EXIT_INVALID if invalid else EXIT_PASSED if passed else EXIT_THRESHOLD_MISSED
    echo(f"chaos: {sum(r.entry['passed'] for r in results)} of {len(results)} events passed; "
         f"{plan.report_dir / 'rehearsal.json'} (exit code {code})")
    return code
