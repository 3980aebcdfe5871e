"""The examgate command: configuration display and validation, migrate."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from core import db, migrate
from examgate.cli import main
from gateway import config


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"EXAMGATE_SECRETS_FILE": str(tmp_path / "secrets.json"), **extra}


def test_config_masks_secrets(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config"], env=env(
        tmp_path, EXAMGATE_ADMIN_TOKENS="ops:abcdefghijklmnopqrstuvwxyz",
        EXAMGATE_DATABASE_URL="postgresql://app:hunter2@127.0.0.1:5432/examgate",
    ))
    assert result.exit_code == 0, result.output
    assert "abcdefghijklmnopqrstuvwxyz" not in result.output
    assert "hunter2" not in result.output
    assert "{'ops': '********'}" in result.output
    assert "postgresql://app:********@127.0.0.1:5432/examgate" in result.output


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("EXAMGATE_PORT", "eighty", "must be an integer"),
        ("EXAMGATE_WORKERS", "0", "between 1 and 64"),
        ("EXAMGATE_REDIS_URL", "http://x", "must be a redis"),
        ("EXAMGATE_ACCESS_LOG", "maybe", "true or false"),
        ("EXAMGATE_SECRET_KEY", "short", "at least 32"),
        ("EXAMGATE_ADMIN_TOKENS", "nocolon", "name:token"),
    ],
)
def test_bad_value_stops_start_up_naming_it(tmp_path: Path, name: str, value: str, problem: str) -> None:
    result = CliRunner().invoke(main, ["config"], env=env(tmp_path, **{name: value}))
    assert result.exit_code == 1
    assert name in result.output and problem in result.output


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EXAMGATE_PORT": "70000"}, "EXAMGATE_PORT: must be between 1 and 65535, got 70000"),
        ({"EXAMGATE_HEADER_TIMEOUT_S": "soon"}, "EXAMGATE_HEADER_TIMEOUT_S: must be a number, got 'soon'"),
        ({"EXAMGATE_LOG_LEVEL": "loud"}, "EXAMGATE_LOG_LEVEL: must be one of debug, info, warning, error, got 'loud'"),
        ({"EXAMGATE_HOST": " "}, "EXAMGATE_HOST: must not be empty"),
        ({"EXAMGATE_TRUSTED_PROXIES": "10.0.0.0/8,gateway"},
         "EXAMGATE_TRUSTED_PROXIES: 'gateway' is not an IP address or network"),
        ({"EXAMGATE_METRICS_TOKEN": "short"},
         "EXAMGATE_METRICS_TOKEN: must be a token of 16+ characters without spaces"),
        ({"EXAMGATE_PORT": "x", "EXAMGATE_WORKERS": "99"},  # every bad one at once, in field order
         "EXAMGATE_PORT: must be an integer, got 'x'; EXAMGATE_WORKERS: must be between 1 and 64, got 99"),
    ],
)
def test_bad_values_are_explained_not_traced(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({**environ, **env(tmp_path)})
    assert str(caught.value) == message
    result = CliRunner().invoke(main, ["config"], env=env(tmp_path, **environ))
    assert result.exit_code == 1
    assert result.output == f"Error: invalid configuration: {message}\n"  # one line, no pydantic traceback


def test_values_from_the_environment_are_read_and_typed(tmp_path: Path) -> None:
    settings = config.load(env(tmp_path, EXAMGATE_PORT=" 9000 ", EXAMGATE_ACCESS_LOG="yes", EXAMGATE_LOG_LEVEL="DEBUG",
                               EXAMGATE_TRUSTED_PROXIES="10.1.2.3, 192.168.0.0/16", EXAMGATE_BODY_TIMEOUT_S="2.5",
                               EXAMGATE_ADMIN_TOKENS="ops:abcdefghijklmnopqr,dev:rstuvwxyzabcdefghij"))
    assert (settings.port, settings.access_log, settings.log_level) == (9000, True, "debug")
    assert settings.body_timeout_s == 2.5
    assert settings.trusted_proxies == ("10.1.2.3/32", "192.168.0.0/16")
    assert dict(settings.admin_tokens) == {"ops": "abcdefghijklmnopqr", "dev": "rstuvwxyzabcdefghij"}
    assert config.load(env(tmp_path, EXAMGATE_ACCESS_LOG="")).access_log is False
    assert config.load(env(tmp_path), port=9100).port == 9100  # overrides (command-line options) win


def test_settings_from_values_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMGATE_PORT", "9999")
    assert config.Settings().port == 8080 and config.Settings(port=81).port == 81
    assert config.load({"EXAMGATE_SECRET_KEY": "k" * 32, "EXAMGATE_ADMIN_TOKENS": "ops:" + "t" * 16,
                        "EXAMGATE_METRICS_TOKEN": "m" * 16}).port == 8080  # the mapping given, not os.environ
    with pytest.raises(ValueError, match="PG_POOL_MIN"):
        config.Settings(pg_pool_min=20, pg_pool_max=5)
    assert "k" * 32 not in repr(config.Settings(secret_key="k" * 32))


def test_config_variables_lists_every_setting_as_markdown() -> None:
    result = CliRunner().invoke(main, ["config", "--variables"], env={"EXAMGATE_PORT": "not read"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["| variable | default | meaning |", "|---|---|---|"]
    assert len(lines) == 2 + len(config.Settings.model_fields)
    assert "| `EXAMGATE_PORT` | `8080` | port the gateway binds |" in lines
    assert "| `EXAMGATE_TRUSTED_PROXIES` | `(none)` | proxies whose X-Forwarded-For is believed " in result.output
    assert "| `EXAMGATE_ACCESS_LOG` | `False` | write an access log line per request |" in lines
    assert any(line.startswith("| `EXAMGATE_SECRET_KEY` | `(generated)` |") for line in lines)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert [line for line in lines if line.startswith("| `EXAMGATE_")] == [
        line for line in readme.splitlines() if line.startswith("| `EXAMGATE_")]  # the README's table is this output


def test_pool_bounds_are_checked_together(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="PG_POOL_MIN"):
        config.load({"EXAMGATE_PG_POOL_MIN": "20", "EXAMGATE_PG_POOL_MAX": "5", **env(tmp_path)})


def test_generated_secrets_are_kept_private_and_stable(tmp_path: Path) -> None:
    first = config.load(env(tmp_path))
    second = config.load(env(tmp_path))
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert first.admin_tokens == second.admin_tokens
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600


def test_migrate_creates_the_database_and_is_idempotent(tmp_path: Path, pg_dsn: str) -> None:
    import asyncio

    dsn = db.with_database(pg_dsn, db.database_name(pg_dsn) + "_cli")
    try:
        runner = CliRunner()
        first = runner.invoke(main, ["migrate"], env=env(tmp_path, EXAMGATE_DATABASE_URL=dsn))
        assert first.exit_code == 0, first.output
        assert "created database" in first.output and "applied" in first.output
        assert "0 applied" not in first.output
        second = runner.invoke(main, ["migrate"], env=env(tmp_path, EXAMGATE_DATABASE_URL=dsn))
        assert second.exit_code == 0, second.output
        assert "0 applied" in second.output

        async def versions() -> list[int]:
            conn = await asyncpg.connect(dsn)
            try:
                return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            finally:
                await conn.close()

        assert asyncio.run(versions()) == [m.version for m in migrate.available()]
    finally:
        asyncio.run(db.drop_database(dsn))


def test_migrate_explains_an_unreachable_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate"], env=env(
        tmp_path, EXAMGATE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/examgate"))
    assert result.exit_code == 1
    assert "cannot reach PostgreSQL" in result.output
