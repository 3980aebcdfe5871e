"""``examgate``: one command-line entry; each command parses options, builds settings, calls one function.

Commands of the tools beside the product are plugins: ``examgate loadtest`` (``loadtest.cli``)
and ``examgate paysim`` (``simulators.cli``) are declared as entry points of the group
``examgate.commands`` in pyproject.toml, and ``main`` loads one from there when it is named (or
listed by ``--help``). Nothing here imports them, so the product keeps to its side of the import
contracts; a package installed beside examgate adds its commands the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import click

from examgate.ctl import ctl
from gateway import config as configmod


def _percent_of(bar: Any) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback moving a 0-100 click progress bar forward only."""
    shown = [0]

    def progress(done: int, total: int) -> None:
        percent = int(done * 100 / max(total, 1))
        if percent > shown[0]:
            bar.update(percent - shown[0])
            shown[0] = percent

    return progress


def _settings(**overrides: Any) -> configmod.Settings:
    try:
        return configmod.load(**{k: v for k, v in overrides.items() if v is not None})
    except configmod.ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None


def _run(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


COMMANDS_GROUP = "examgate.commands"


class PluginGroup(click.Group):
    """The built-in commands, then those of the ``examgate.commands`` entry points, loaded when named."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *entry_points(group=COMMANDS_GROUP).names})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        plugins = entry_points(group=COMMANDS_GROUP, name=cmd_name)
        return next(iter(plugins)).load() if plugins else None


@click.group(cls=PluginGroup)
@click.version_option(package_name="examgate")
def main() -> None:
    """examgate: the peak-hour edge of the exam registration system."""


@main.command("config")
@click.option("--variables", is_flag=True, help="List the EXAMGATE_* variables with defaults, as Markdown.")
def show_config(variables: bool) -> None:
    """Print the effective settings (secrets masked)."""
    if variables:
        click.echo("| variable | default | meaning |\n|---|---|---|")
        for env, default, meaning in configmod.describe():
            click.echo(f"| `{env}` | `{default}` | {meaning} |")
        return
    settings = _settings()
    shown = settings.masked()
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        click.echo(f"{name:<{width}}  {value}")


@main.command()
def migrate() -> None:
    """Create the database if needed and apply pending migrations."""
    from core import migrate as migrations

    settings = _settings()

    try:
        ran = _run(migrations.create_and_migrate(settings.database_url, progress=click.echo))
    except OSError as exc:
        raise click.ClickException(f"cannot reach PostgreSQL at {settings.masked()['database_url']}: {exc}") from None
    click.echo(f"migrations: {len(ran)} applied, schema current")


@main.command()
@click.option("--candidates", type=click.IntRange(1, 10_000_000), default=2000, show_default=True,
              help="How many demo candidates to create.")
@click.option("--reset", is_flag=True, help="Delete earlier demo data first.")
def seed(candidates: int, reset: bool) -> None:
    """Build the demo exams deterministically (candidates, sites, tickets, scores)."""
    import seed as seeding

    settings = _settings()
    with click.progressbar(length=100, label="seeding", show_percent=True, show_eta=True,
                           file=sys.stderr) as bar:
        progress = _percent_of(bar)

        try:
            report = _run(seeding.seed(settings.database_url, candidates, reset=reset, progress=progress))
        except seeding.SeedError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(str(report))


@main.command()
@click.option("--workers", type=click.IntRange(1, 64), help="Gateway processes (default EXAMGATE_WORKERS).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default EXAMGATE_PORT).")
@click.option("--host", help="Bind address (default EXAMGATE_HOST).")
def serve(workers: int | None, port: int | None, host: str | None) -> None:
    """Run the gateway: N processes sharing one port."""
    from gateway.logs import configure_logging
    from gateway.serve import serve as run_serve

    settings = _settings(workers=workers, port=port, host=host)
    configure_logging(settings.log_level, "gateway")
    sys.exit(run_serve(settings))


@main.command()
def worker() -> None:
    """Run the background tasks: waiting rooms, hold write-behind, sweeper, inventory, captcha pool, SMS delivery."""
    from examgate.worker import run_worker
    from gateway.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, "worker")
    _run(run_worker(settings))


@main.command("prewarm")
@click.option("--exam", "exam_id", type=click.IntRange(1), required=True, help="The exam whose records to load.")
def prewarm_command(exam_id: int) -> None:
    """Load every ticket and score record of an exam into Redis (lookups then never ask PostgreSQL)."""
    settings = _settings()
    try:
        report = _run(_prewarm(settings, exam_id))
    except OSError as exc:
        raise click.ClickException(f"cannot reach Redis or PostgreSQL: {exc}") from None
    click.echo(f"exam {report['exam_id']}: {report['tickets']:,} ticket records, {report['scores']:,} with scores, "
               f"loaded in {report['seconds']} s")


async def _prewarm(settings: configmod.Settings, exam_id: int) -> dict[str, Any]:
    from core import db, redis_cluster
    from lookups.prewarm import prewarm

    pool = await db.create_pool(db.PoolSettings(settings.database_url, 1, 2))
    redis = redis_cluster.redis_py(settings.redis_url, cluster=settings.redis_cluster)
    try:
        if await pool.fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
            raise click.ClickException(f"no exam {exam_id}")
        with click.progressbar(length=100, label=f"prewarming exam {exam_id}", file=sys.stderr) as bar:
            report = await prewarm(pool, redis, exam_id, progress=_percent_of(bar))
        return report.as_dict()
    finally:
        await redis.aclose()
        await pool.close()


@main.command("reconcile")
@click.option("--exam", "exam_id", type=click.IntRange(1), help="Only this exam (default: every exam).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(exam_id: int | None, as_json: bool) -> None:
    """Rebuild seat inventory and holds in Redis from PostgreSQL and print the drift repaired."""
    settings = _settings()
    try:
        report = _run(_reconcile(settings, exam_id))
    except OSError as exc:
        raise click.ClickException(f"cannot reach Redis or PostgreSQL: {exc}") from None
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        click.echo(render_reconcile(report))


async def _reconcile(settings: configmod.Settings, exam_id: int | None) -> dict[str, Any]:
    from core import db, redis_cluster
    from queueing.reconcile import reconcile

    conn = await db.connect(settings.database_url)
    redis = redis_cluster.redis_py(settings.redis_url, cluster=settings.redis_cluster)
    try:
        if exam_id is not None and await conn.fetchval("SELECT 1 FROM exams WHERE id = $1", exam_id) is None:
            raise click.ClickException(f"no exam {exam_id}")
        report = await reconcile(conn, redis, exam_id, min_idle_ms=settings.writebehind_claim_min_idle_ms)
        return report.as_dict()
    finally:
        await redis.aclose()
        await conn.close()


def render_reconcile(report: dict[str, Any]) -> str:
    """The drift report as lines: one per exam, one per drifted site."""
    lines = [f"hold events written to PostgreSQL first: {report['events_drained']}"]
    for exam in report["exams"]:
        state = "repaired" if exam["drifted"] else "no drift"
        lines.append(f"exam {exam['exam_id']}: {state}; holds expected {exam['holds_expected']}, "
                     f"added {exam['holds_added']}, removed {exam['holds_removed']}, changed {exam['holds_changed']}")
        for site in exam["sites"]:
            found = "missing" if site["found_left"] is None else site["found_left"]
            lines.append(f"  site {site['site_id']}: seats left {found} -> {site['expected_left']} "
                         f"(capacity {site['capacity']}, held {site['held']})")
        if exam["oversold_sites"]:
            lines.append(f"  OVERSOLD in PostgreSQL: sites {', '.join(map(str, exam['oversold_sites']))}")
    lines.append("drift repaired" if report["drifted"] else "no drift found")
    return "\n".join(lines)


@main.group()
def sms() -> None:
    """The SMS outbox (the worker's sms-delivery task sends it through the provider at EXAMGATE_SMS_URL)."""


@sms.command("outbox")
@click.option("--phone", help="Only messages to this mobile number.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many, newest first.")
def sms_outbox(phone: str | None, limit: int) -> None:
    """List the newest messages in the SMS outbox, with their delivery status, attempts and last error."""
    if phone is not None and not (len(phone) == 11 and phone.isdigit()):
        raise click.BadParameter("must be an 11-digit mobile number", param_hint="--phone")
    settings = _settings()
    try:
        messages = _run(_read_outbox(settings.database_url, phone, limit))
    except OSError as exc:
        raise click.ClickException(f"cannot reach PostgreSQL at {settings.masked()['database_url']}: {exc}") from None
    click.echo(render_outbox(messages))


async def _read_outbox(dsn: str, phone: str | None, limit: int) -> list[Any]:
    from core import db
    from core import sms as outbox

    conn = await db.connect(dsn)
    try:
        return await outbox.outbox(conn, phone=phone, limit=limit)
    finally:
        await conn.close()


def render_outbox(messages: list[Any]) -> str:
    """Outbox messages as a table: when (Asia/Shanghai), to whom, status, attempts, sent, last error, the text."""
    from core.timeutil import SHANGHAI

    if not messages:
        return "(no messages)"
    rows = [("id", "created (+08:00)", "phone", "template", "status", "attempts", "sent", "error", "body")]
    for m in messages:
        sent = m.sent_at.astimezone(SHANGHAI).strftime("%m-%d %H:%M:%S") if m.sent_at else "-"
        rows.append((str(m.id), m.created_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"), m.phone,
                     m.template, m.status, str(m.attempts), sent, m.error or "-", m.body))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        # strict=False: widths stop before the last column, the body, which is appended unpadded.
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 4)
    return "\n".join(lines)


@main.group("keys")
def keys_group() -> None:
    """Payment provider keys (development and tests keep both sides' keys in one directory)."""


@keys_group.command("generate")
@click.option("--dir", "keys_dir", type=click.Path(file_okay=False), help="Where to write (default EXAMGATE_KEYS_DIR).")
@click.option("--force", is_flag=True, help="Replace keys that already exist.")
def keys_generate(keys_dir: str | None, force: bool) -> None:
    """Write a development key set: RSA-2048 pairs for both providers, WeChat serials and API v3 key, and the
    electronic certificates' Ed25519 signing key."""
    from payments import keys as payment_keys

    target = keys_dir or _settings().keys_dir
    try:
        written = payment_keys.generate(target, force=force)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write keys to {target}: {exc}") from None
    for path in written:
        click.echo(str(path))
    click.echo(f"payment keys: {len(written)} files written to {target} (mode 0600)")
    from lookups import cert_signature

    try:
        signing = cert_signature.generate_key(target, force=force)
    except FileExistsError:
        click.echo("certificate signing key: kept (use --force to replace it)")
        return
    click.echo(f"certificate signing key: {', '.join(map(str, signing))} (Ed25519, mode 0600)")


main.add_command(ctl)

if __name__ == "__main__":  # pragma: no cover
    main()
