"""``examgate loadtest`` and ``examgate rehearse``, plugin commands (entry points in ``examgate.commands``).

The product never imports ``loadtest``: ``examgate.cli`` finds these commands through their entry
point when it is named, so the load tests stay above the product and use only its public parts.
"""

from __future__ import annotations

import sys

import click

from gateway import config
from loadtest.scenarios import SCENARIOS


def _settings() -> config.Settings:
    try:
        return config.load()
    except config.ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None


def _duration(raw: str) -> int:
    from loadtest.run import parse_duration

    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None


@click.command("loadtest")
@click.argument("scenario", type=click.Choice(list(SCENARIOS)))
@click.option("--users", type=click.IntRange(1, 1_000_000), default=20, show_default=True, help="Simulated users.")
@click.option("--spawn-rate", type=click.FloatRange(0.01), help="Users started per second (default: all in 1 s).")
@click.option("--duration", default="30s", show_default=True, help="Run time: 90, 90s, 2m, 1h.")
@click.option("--processes", type=click.IntRange(0, 256), default=1, show_default=True,
              help="Local Locust worker processes (one core each; 0: only --remote-workers).")
@click.option("--host", default="http://127.0.0.1:8080", show_default=True, help="The gateway's base URL.")
@click.option("--shape", type=click.Choice(("spike", "steps")), default="spike", show_default=True,
              help="spike: every user within seconds, then hold; steps: users added in --steps equal steps.")
@click.option("--steps", type=click.IntRange(1, 100), default=4, show_default=True, help="Steps of --shape steps.")
@click.option("--target-rps", type=click.FloatRange(0), help="Fail below this many req/s answered as due.")
@click.option("--max-fail-ratio", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Fail above this share of failed requests.")
@click.option("--p95-ms", type=click.FloatRange(0), help="Fail when the served requests' p95 exceeds this.")
@click.option("--p99-ms", type=click.FloatRange(0), help="Fail when the served requests' p99 exceeds this.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Reports directory "
              "(default loadtest/reports/<timestamp>-<scenario>/).")
@click.option("--admin-token", help="Operator token (default: the first one in the settings / secrets file).")
@click.option("--keys-dir", help="Payment keys for the notification flood (default EXAMGATE_KEYS_DIR).")
@click.option("--first-candidate", type=click.IntRange(0), default=0, show_default=True,
              help="First seeded candidate index the users may take.")
@click.option("--candidates", type=click.IntRange(1), default=2000, show_default=True,
              help="How many seeded candidates the users may take (examgate seed --candidates).")
@click.option("--candidate-offset", type=click.IntRange(0), help="Where in that window to start (default: random).")
@click.option("--think-ms", type=click.IntRange(0, 600_000), default=500, show_default=True,
              help="Mean pause between a user's steps.")
@click.option("--admit-per-s", type=click.FloatRange(0.1), default=200, show_default=True,
              help="Waiting-room admission rate when the run turns the room on.")
@click.option("--remote-workers", type=click.IntRange(0), default=0, show_default=True,
              help="Workers started on other machines (examgate loadtest SCENARIO --worker --master-host THIS_HOST).")
@click.option("--master-bind-host", default="127.0.0.1", show_default=True,
              help="Where the master listens for workers (0.0.0.0 for remote workers).")
@click.option("--master-port", type=click.IntRange(1, 65535),
              help="The master's port (default: 5557 with remote workers or --worker, else a free one).")
@click.option("--worker", "worker_mode", is_flag=True,
              help="Run only --processes workers for a master on another machine (--master-host); "
                   "the master prints the verdicts.")
@click.option("--master-host", help="With --worker: the machine running the master.")
@click.option("--cpu-limit", type=click.FloatRange(1, 100), default=90, show_default=True,
              help="A worker at this CPU share or more for 3 s in a row makes the run invalid.")
def loadtest_command(scenario: str, users: int, spawn_rate: float | None, duration: str, processes: int, host: str,
                     shape: str, steps: int, target_rps: float | None, max_fail_ratio: float, p95_ms: float | None,
                     p99_ms: float | None, out_dir: str | None, admin_token: str | None, keys_dir: str | None,
                     first_candidate: int, candidates: int, candidate_offset: int | None, think_ms: int,
                     admit_per_s: float, remote_workers: int, master_bind_host: str, master_port: int | None,
                     worker_mode: bool, master_host: str | None, cpu_limit: float) -> None:
    """Run a Locust scenario against a gateway; exit 0 passed, 1 threshold missed, 3 invalid (CPU), 4 not run.

    With ``--worker``, run only load-generator processes for a master started on another machine.
    """
    from pathlib import Path

    from loadtest.run import RunOptions, default_out_dir, run_loadtest, run_workers
    from loadtest.verdicts import Thresholds

    if worker_mode:
        if not master_host:
            raise click.UsageError("--worker needs --master-host (the machine running the master)")
        if remote_workers:
            raise click.UsageError("--remote-workers is the master's option, not a worker's")
        if processes < 1:
            raise click.BadParameter("a worker machine runs at least one process", param_hint="--processes")
        sys.exit(run_workers(SCENARIOS[scenario], master_host, master_port, processes,
                             Path(out_dir) if out_dir else default_out_dir(f"{scenario}-worker"), echo=click.echo))
    if master_host:
        raise click.UsageError("--master-host is for --worker (the master listens on --master-bind-host)")
    if processes + remote_workers < 1:
        raise click.BadParameter("no workers: give --processes or --remote-workers", param_hint="--processes")
    settings = _settings()
    options = RunOptions(
        scenario=SCENARIOS[scenario], host=host.rstrip("/"),
        admin_token=admin_token or next(iter(settings.admin_tokens.values())),
        users=users, spawn_rate=spawn_rate or float(users), duration_s=_duration(duration), processes=processes,
        out_dir=Path(out_dir) if out_dir else default_out_dir(scenario),
        thresholds=Thresholds(target_rps, max_fail_ratio, p95_ms, p99_ms), shape=shape, steps=steps,
        remote_workers=remote_workers, master_bind_host=master_bind_host, master_port=master_port,
        first_candidate=first_candidate, candidates=candidates, candidate_offset=candidate_offset, think_ms=think_ms,
        admit_per_s=admit_per_s, keys_dir=keys_dir or settings.keys_dir, alipay_app_id=settings.alipay_app_id,
        wechat_app_id=settings.wechat_app_id, wechat_mch_id=settings.wechat_mch_id, cpu_limit_pct=cpu_limit,
    )  # fmt: skip
    sys.exit(run_loadtest(options, echo=click.echo))


def _names(raw: str | None, known: list[str], option: str) -> list[str] | None:
    """``a,b`` (or ``a b``) as a list of known names; None when not given."""
    if raw is None:
        return None
    names = [name for name in raw.replace(",", " ").split() if name]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown: {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})",
                                 param_hint=option)
    return names


@click.command("rehearse")
@click.option("--scenarios", help="Comma-separated scenarios (default: every one in the targets file).")
@click.option("--phases", default="target,double", show_default=True,
              help="Which phases: target (the committed figures) and double (twice the users: shedding allowed).")
@click.option("--duration", help="Each run's length: 90, 90s, 2m (default: the targets file's run.duration_s).")
@click.option("--host", default="http://127.0.0.1:8080", show_default=True, help="The gateway's base URL.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Reports directory (default loadtest/reports/<UTC timestamp>/).")
@click.option("--targets", "targets_path", type=click.Path(dir_okay=False),
              help="The targets file (default loadtest/targets.toml).")
@click.option("--processes", type=click.IntRange(1, 256),
              help="Local Locust worker processes per run (default: the targets file's run.processes).")
@click.option("--admin-token", help="Operator token (default: the first one in the settings / secrets file).")
@click.option("--keys-dir", help="Payment keys for the notification flood (default EXAMGATE_KEYS_DIR).")
@click.option("--first-candidate", type=click.IntRange(0), default=0, show_default=True,
              help="First seeded candidate index the users may take.")
@click.option("--candidates", type=click.IntRange(1), default=2000, show_default=True,
              help="How many seeded candidates the users may take (examgate seed --candidates).")
def rehearse_command(scenarios: str | None, phases: str, duration: str | None, host: str, out_dir: str | None,
                     targets_path: str | None, processes: int | None, admin_token: str | None,
                     keys_dir: str | None, first_candidate: int, candidates: int) -> None:
    """Calibrate, run each scenario at its committed target and at twice it, judge; exit 0 held, 1 a figure missed.

    3: a run invalid (the load generator saturated); 4: not run (the gateway did not answer).
    """
    from pathlib import Path

    from loadtest import targets as targetsmod
    from loadtest.rehearse import RehearsalOptions, default_out_dir, rehearse

    try:
        targets = targetsmod.load(Path(targets_path) if targets_path else targetsmod.TARGETS_FILE, known=SCENARIOS)
    except targetsmod.TargetsError as exc:
        raise click.ClickException(str(exc)) from None
    chosen = _names(scenarios, list(targets.scenarios), "--scenarios") or list(targets.scenarios)
    settings = _settings()
    options = RehearsalOptions(
        host=host.rstrip("/"), admin_token=admin_token or next(iter(settings.admin_tokens.values())),
        targets=targets, out_dir=Path(out_dir) if out_dir else default_out_dir(), scenarios=chosen,
        phases=_names(phases, list(targetsmod.PHASES), "--phases") or list(targetsmod.PHASES),
        duration_s=_duration(duration) if duration else None, processes=processes,
        metrics_token=settings.metrics_token, redis_url=settings.redis_url, pg_dsn=settings.database_url,
        first_candidate=first_candidate, candidates=candidates, keys_dir=keys_dir or settings.keys_dir,
        alipay_app_id=settings.alipay_app_id, wechat_app_id=settings.wechat_app_id,
        wechat_mch_id=settings.wechat_mch_id,
    )
    sys.exit(rehearse(options, echo=click.echo, progress=lambda line: click.echo(line, err=True)))
