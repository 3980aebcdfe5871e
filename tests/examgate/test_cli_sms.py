"""``examgate sms outbox`` against a real database, and the settings behind accounts, sessions and captcha."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from core import sms
from examgate.cli import main
from gateway import config
from gateway.app import password_settings, session_settings


def env(tmp_path: Path, pg_dsn: str, **extra: str) -> dict[str, str]:
    return {"EXAMGATE_SECRETS_FILE": str(tmp_path / "secrets.json"), "EXAMGATE_DATABASE_URL": pg_dsn, **extra}


async def test_outbox_lists_messages_newest_first(pg: asyncpg.Connection, pg_dsn: str, tmp_path: Path) -> None:
    first = await sms.enqueue(pg, "13800000001", "password_reset_code", sms.render("password_reset_code",
                                                                                   code="123456", minutes=5))
    second = await sms.enqueue(pg, "13800000002", "password_reset_code", sms.render("password_reset_code",
                                                                                    code="654321", minutes=5))
    runner = CliRunner()
    # The command runs its own event loop: call it from a thread, away from the test's loop.
    result = await asyncio.to_thread(runner.invoke, main, ["sms", "outbox", "--limit", "2"],
                                     env=env(tmp_path, pg_dsn))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["id", "created", "(+08:00)", "phone"]
    assert lines[2].startswith(str(second)) and "654321" in lines[2] and "13800000002" in lines[2]
    assert lines[3].startswith(str(first)) and "123456" in lines[3]

    only = await asyncio.to_thread(runner.invoke, main, ["sms", "outbox", "--phone", "13800000001"],
                                   env=env(tmp_path, pg_dsn))
    assert only.exit_code == 0 and "123456" in only.output and "654321" not in only.output
    none = await asyncio.to_thread(runner.invoke, main, ["sms", "outbox", "--phone", "13899999999"],
                                   env=env(tmp_path, pg_dsn))
    assert none.exit_code == 0 and "(no messages)" in none.output


async def test_outbox_shows_status_attempts_and_error(pg: asyncpg.Connection, pg_dsn: str, tmp_path: Path) -> None:
    queued = await sms.enqueue(pg, "13800000003", "register_code", params={"code": "135790", "minutes": 5})
    failed = await sms.enqueue(pg, "13800000003", "register_code", params={"code": "246802", "minutes": 5})
    await pg.execute("""UPDATE sms_outbox SET status = 'failed', due_at = NULL, failed_at = now(), attempts = 1,
                               error = 'isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控' WHERE id = $1""", failed)
    result = await asyncio.to_thread(CliRunner().invoke, main, ["sms", "outbox", "--phone", "13800000003"],
                                     env=env(tmp_path, pg_dsn))
    assert result.exit_code == 0, result.output
    header, _, newest, oldest = result.output.splitlines()
    assert header.split()[4:9] == ["template", "status", "attempts", "sent", "error"]
    assert newest.split()[0] == str(failed) and newest.split()[3:7] == ["13800000003", "register_code", "failed", "1"]
    assert "isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控" in newest
    assert oldest.split()[0] == str(queued) and oldest.split()[5:8] == ["queued", "0", "-"] and "135790" in oldest


@pytest.mark.parametrize("args", [["--phone", "12ab"], ["--limit", "0"], ["--limit", "1001"]])
def test_outbox_options_are_checked(tmp_path: Path, pg_dsn: str, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["sms", "outbox", *args], env=env(tmp_path, pg_dsn))
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_account_settings_from_the_environment(tmp_path: Path) -> None:
    settings = config.load({
        "EXAMGATE_SECRETS_FILE": str(tmp_path / "s.json"), "EXAMGATE_ARGON2_MEMORY_KIB": "8192",
        "EXAMGATE_ARGON2_TIME_COST": "1", "EXAMGATE_HASHER_THREADS": "3", "EXAMGATE_HASHER_MAX_QUEUE": "0",
        "EXAMGATE_SESSION_IDLE_TIMEOUT_S": "120", "EXAMGATE_SESSION_ABSOLUTE_TIMEOUT_S": "3600",
    })
    hashing = password_settings(settings)
    assert (hashing.memory_kib, hashing.time_cost, hashing.threads, hashing.capacity) == (8192, 1, 3, 3)
    sessions = session_settings(settings)
    assert (sessions.idle_timeout_s, sessions.absolute_timeout_s, sessions.renew_every_s) == (120, 3600, 30)
    assert session_settings(config.Settings(secret_key="k" * 32)).renew_every_s == 60
    keys = {settings.derived_key(purpose) for purpose in ("captcha-pow", "loadtest", "recovery")}
    assert len(keys) == 3 and settings.secret_key.encode() not in keys


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("EXAMGATE_ARGON2_MEMORY_KIB", "512", "between 1024"),
    ("EXAMGATE_HASHER_THREADS", "0", "between 1 and 64"),
    ("EXAMGATE_SESSION_IDLE_TIMEOUT_S", "soon", "must be a number"),
    ("EXAMGATE_CAPTCHA_ANSWER_TTL_S", "5", "between 10 and 3600"),
    ("EXAMGATE_CAPTCHA_POOL_TARGET", "-1", "between 0"),
    ("EXAMGATE_CAPTCHA_REFILL_BATCH", "0", "between 1 and 1000"),
])
def test_bad_account_settings_are_named(tmp_path: Path, name: str, value: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({"EXAMGATE_SECRETS_FILE": str(tmp_path / "s.json"), name: value})
    assert name in str(caught.value) and problem in str(caught.value)


def test_idle_timeout_must_not_exceed_the_absolute_one(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="SESSION_IDLE_TIMEOUT_S"):
        config.load({"EXAMGATE_SECRETS_FILE": str(tmp_path / "s.json"), "EXAMGATE_SESSION_IDLE_TIMEOUT_S": "600",
                     "EXAMGATE_SESSION_ABSOLUTE_TIMEOUT_S": "300"})
