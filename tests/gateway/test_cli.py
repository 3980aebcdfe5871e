"""The examgate command: configuration display and validation, migrate."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from core import db, migrate
from gateway import config
from gateway.cli import main


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
