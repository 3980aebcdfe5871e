"""``examgate soak`` and ``examgate chaos``, plugin commands like ``examgate loadtest`` (entry points in pyproject).

``soak`` holds a scenario against a running gateway (``make demo``) for a long time and checks that
nothing grows (``loadtest.soak``); ``chaos`` starts a stack of its own and breaks one part of it
during each run of a scenario (``loadtest.chaos``). Both write their runs into a rehearsal's report
directory (``loadtest/reports/<UTC timestamp>/``: ``rehearsal.json`` and one directory per run).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from loadtest.cli import _duration, _settings
from loadtest.scenarios import SCENARIOS

REPORTS_DIR = Path("loadtest") / "reports"


def _report_dir(raw: str | None) -> Path:
    return Path(raw) if raw else REPORTS_DIR / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@click.command("soak")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default="mixed-peak", show_default=True)
@click.option("--duration", default="30m", show_default=True, help="How long the load is held: 2m, 30m, 1h.")
@click.option("--users", type=click.IntRange(1), default=20, show_default=True, help="Simulated users.")
@click.option("--spawn-rate", type=click.FloatRange(0.01), help="Users started per second (default: all in 1 s).")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Local Locust worker processes.")
@click.option("--host", default="http://127.0.0.1:8080", show_default=True, help="The gateway's base URL.")
@click.option("--run-dir", help="Where the gateway's and worker's pid files are (gateway.pid, worker.pid; "
                                "default EXAMGATE_RUN_DIR, where make demo writes them).")
@click.option("--interval", "interval_s", type=click.FloatRange(1), default=10, show_default=True,
              help="Seconds between two samples of the processes and stores.")
@click.option("--hold-ttl-s", type=click.IntRange(60, 86_400),
              help="Live seats.hold_ttl_s for the run (put back after): holds expire within a short soak.")
@click.option("--place-ttl-s", type=click.IntRange(10, 86_400),
              help="Live place_ttl_s of the open exam's waiting room for the run (put back after).")
@click.option("--admission-ttl-s", type=click.IntRange(10, 86_400),
              help="Live admission_ttl_s of that room for the run (put back after): a passed place is forgotten "
                   "two place TTLs and one admission TTL after it was passed.")
@click.option("--max-fail-ratio", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Fail above this share of failed requests.")
@click.option("--rss-growth-mib", type=click.FloatRange(0), default=32, show_default=True,
              help="Most a process's RSS may grow from the middle to the last third (or 10%).")
@click.option("--redis-growth-mib", type=click.FloatRange(0), default=16, show_default=True,
              help="Most Redis used_memory may grow from the middle to the last third (or 10%).")
@click.option("--key-growth", type=click.IntRange(0), default=50, show_default=True,
              help="Most keys of a family (entries of a kind) may grow from the middle to the last third (or 10%).")
@click.option("--first-candidate", type=click.IntRange(0), default=0, show_default=True)
@click.option("--candidates", type=click.IntRange(1), default=2000, show_default=True,
              help="The window of seeded candidates the users take (a closed window: what they leave is bounded).")
@click.option("--think-ms", type=click.IntRange(0, 600_000), default=500, show_default=True)
@click.option("--admin-token", help="Operator token (default: the first one in the settings / secrets file).")
@click.option("--report-dir", help="The rehearsal's directory (default loadtest/reports/<UTC timestamp>/).")
def soak_command(scenario: str, duration: str, users: int, spawn_rate: float | None, processes: int, host: str,
                 run_dir: str | None, interval_s: float, hold_ttl_s: int | None, place_ttl_s: int | None,
                 admission_ttl_s: int | None,
                 max_fail_ratio: float, rss_growth_mib: float, redis_growth_mib: float, key_growth: int,
                 first_candidate: int, candidates: int, think_ms: int, admin_token: str | None,
                 report_dir: str | None) -> None:
    """Hold a scenario against a running gateway and check nothing grows; exit 0 passed, 1 grew, 3 invalid, 4 not run.

    Samples every process's RSS, Redis memory, keys by family and clients, PostgreSQL connections.
    """
    from loadtest.admin import GatewayError, Operator
    from loadtest.resources import processes_of
    from loadtest.run import RunOptions
    from loadtest.soak import Bounds, SoakPlan, run_soak
    from loadtest.verdicts import Thresholds
    from seed import EXAM_B_CODE

    settings = _settings()
    pids = Path(run_dir or settings.run_dir)
    if _pid(pids / "gateway.pid") is None:
        raise click.ClickException(f"no gateway pid in {pids}/gateway.pid (start it with make demo, or --run-dir)")
    out = _report_dir(report_dir)
    token = admin_token or next(iter(settings.admin_tokens.values()))
    live: dict[str, object] = {}
    if hold_ttl_s is not None:
        live["seats"] = {"hold_ttl_s": hold_ttl_s}
    room = {name: ttl for name, ttl in (("place_ttl_s", place_ttl_s), ("admission_ttl_s", admission_ttl_s))
            if ttl is not None}
    if room:
        try:
            exam_id = Operator(host.rstrip("/"), token).exam_id(EXAM_B_CODE)
        except GatewayError as exc:
            raise click.ClickException(str(exc)) from None
        live["queue"] = {"exams": {str(exam_id): room}}

    def watched() -> list[tuple[str, int]]:
        roots = {name: pid for name in ("gateway", "worker") if (pid := _pid(pids / f"{name}.pid")) is not None}
        return processes_of(roots)

    options = RunOptions(
        scenario=SCENARIOS[scenario], host=host.rstrip("/"), admin_token=token, users=users,
        spawn_rate=spawn_rate or float(users), duration_s=_duration(duration), processes=processes,
        out_dir=out / f"{scenario}-soak", thresholds=Thresholds(None, max_fail_ratio, None, None),
        first_candidate=first_candidate, candidates=candidates, think_ms=think_ms, keys_dir=settings.keys_dir,
        alipay_app_id=settings.alipay_app_id, wechat_app_id=settings.wechat_app_id,
        wechat_mch_id=settings.wechat_mch_id,
    )  # fmt: skip
    plan = SoakPlan(options, settings.redis_url, settings.database_url, watched, report_dir=out,
                    interval_s=interval_s, bounds=Bounds(key_growth=key_growth, rss_growth_mib=rss_growth_mib,
                                                         redis_memory_growth_mib=redis_growth_mib),
                    metrics_token=settings.metrics_token or None, live_config=live or None)
    code = run_soak(plan, echo=click.echo)
    _write_report(out)
    sys.exit(code)


@click.command("chaos")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default="mixed-peak", show_default=True)
@click.option("--events", default="kill-gateway,restart-worker,pause-redis,restart-postgres", show_default=True,
              help="Events, comma-separated, each during a run of its own.")
@click.option("--duration", default="30s", show_default=True, help="Each run's length.")
@click.option("--event-at", "event_at_s", type=click.FloatRange(1), default=8, show_default=True,
              help="Seconds after the users' first requests when the event is made.")
@click.option("--pause", "pause_s", type=click.FloatRange(0.1, 60), default=2, show_default=True,
              help="How long pause-redis stops redis-server.")
@click.option("--users", type=click.IntRange(1), default=10, show_default=True)
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--think-ms", type=click.IntRange(0, 600_000), default=100, show_default=True)
@click.option("--candidates", type=click.IntRange(10), default=800, show_default=True,
              help="Candidates seeded into the stack; each event's run takes a window of its own.")
@click.option("--gateway-processes", type=click.IntRange(2, 64), default=2, show_default=True)
@click.option("--settle", "settle_s", type=click.FloatRange(0), default=60, show_default=True,
              help="How long the invariants may take to hold once the users have stopped.")
@click.option("--report-dir", help="The rehearsal's directory (default loadtest/reports/<UTC timestamp>/).")
def chaos_command(scenario: str, events: str, duration: str, event_at_s: float, pause_s: float, users: int,
                  processes: int, think_ms: int, candidates: int, gateway_processes: int, settle_s: float,
                  report_dir: str | None) -> None:
    """Break one part of a stack of its own during each run of a scenario; what candidates saw, the invariants after.

    Starts its own redis-server and PostgreSQL (never the machine's), seeds them, runs a gateway, the
    worker and the payment simulator. Exit 0 every event passed, 1 one failed, 3 invalid, 4 not run.
    """
    from loadtest.chaos import EVENTS, ChaosPlan, run_chaos
    from loadtest.pg_server import PostgresUnavailable
    from loadtest.private_stack import PrivateStack, provider_ids
    from loadtest.run import RunOptions
    from loadtest.verdicts import EXIT_NOT_RUN, Thresholds

    chosen = tuple(e.strip() for e in events.split(",") if e.strip())
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown event(s) {', '.join(unknown) or '(none)'}; choose from "
                                 f"{', '.join(EVENTS)}", param_hint="--events")
    out = _report_dir(report_dir)
    # The stack's keys and secrets stay out of the report (it is shown around); its logs are copied in.
    base = Path(tempfile.mkdtemp(prefix="examgate-chaos-"))
    try:
        stack = PrivateStack.start(base, candidates, gateway_processes=gateway_processes, echo=click.echo)
    except (PostgresUnavailable, RuntimeError, TimeoutError) as exc:
        click.echo(f"error: the stack could not be started: {exc}")
        shutil.rmtree(base, ignore_errors=True)
        sys.exit(EXIT_NOT_RUN)
    try:
        ids = provider_ids()
        options = RunOptions(
            scenario=SCENARIOS[scenario], host="", admin_token="", users=users, spawn_rate=float(users),
            duration_s=_duration(duration), processes=processes, out_dir=out,
            thresholds=Thresholds(None, None, None, None), think_ms=think_ms, keys_dir=str(stack.keys_dir),
            alipay_app_id=ids["alipay_app_id"], wechat_app_id=ids["wechat_app_id"], wechat_mch_id=ids["wechat_mch_id"],
        )  # fmt: skip
        plan = ChaosPlan(options, out, chosen, event_at_s=event_at_s, pause_s=pause_s, settle_s=settle_s)
        code = run_chaos(stack, plan, echo=click.echo)
    finally:
        stack.stop()
        logs = out / "chaos-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for log in [stack.gateway.log_path, *base.glob("*.log")]:
            shutil.copy(log, logs / log.name)
        shutil.rmtree(base, ignore_errors=True)
    _write_report(out)
    sys.exit(code)


def _write_report(report_dir: Path) -> None:
    """The rehearsal's report (index.html, summary.png) with the runs just made."""
    from loadtest import report

    if (report_dir / "rehearsal.json").exists():
        click.echo(f"report: {report.write(report_dir)}")
