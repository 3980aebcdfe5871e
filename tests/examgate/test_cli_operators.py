"""``examgate ctl operators`` against a running two-process gateway: add, list, set, disable, token, revoke,
audit; an issued token signs in with its role, and a revoked one stops working in every process within the
cache time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from examgate.ctl import CtlError, parse_duration
from loadtest.processes import ROOT, Process, examgate_env, start_gateway

CACHE_S = 0.5


async def _no_operators(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE operators, operator_tokens, operator_audit RESTART IDENTITY")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    asyncio.run(_no_operators(pg_dsn))  # other modules' operators stay in the run's database
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_OPERATOR_TOKEN_CACHE_S=str(CACHE_S))
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


def ctl(gateway: Process, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = examgate_env("postgresql://unused@127.0.0.1/unused", "redis://127.0.0.1:1/0", Path(gateway.extra["run_dir"]))
    return subprocess.run(
        [sys.executable, "-m", "examgate", "ctl", "--url", gateway.url, "--token", token or gateway.admin_token(),
         *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def call(gateway: Process, path: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(gateway.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def statuses(gateway: Process, path: str, token: str, times: int = 8) -> set[int]:
    """What ``times`` requests (new connections: the kernel picks a process for each) were answered."""
    return {call(gateway, path, token)[0] for _ in range(times)}


def until_every_process(gateway: Process, path: str, token: str, status: int, within_s: float) -> float:
    started = time.monotonic()
    while (seen := statuses(gateway, path, token)) != {status}:
        assert time.monotonic() - started < within_s, f"answers {seen} after {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.unit
@pytest.mark.parametrize(("raw", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600),
                                              ("600", 600), (" 2D ", 172800)])
def test_durations(raw: str, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.unit
@pytest.mark.parametrize("raw", ["", "d", "1w", "1.5d", "-1d", "1 d", "１d"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(CtlError, match="not a duration"):
        parse_duration(raw)


def test_operators_from_adding_to_revoking(gateway: Process) -> None:
    added = ctl(gateway, "operators", "add", "li.reviewer", "--role", "reviewer", "--province", "11",
                "--province", "31", "--display-name", "李审核")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "operator li.reviewer: role reviewer, scope 11,31 added"

    issued = ctl(gateway, "operators", "token", "li.reviewer", "--expires-in", "30d", "--label", "笔记本")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("egop_") and "\n" not in token  # alone on stdout, for $(…)
    assert "shown once" in issued.stderr and "expires" in issued.stderr

    status, me = call(gateway, "/admin/api/v1/me", token)
    assert status == 200 and (me["name"], me["role"], me["provinces"]) == ("li.reviewer", "reviewer", ["11", "31"])
    lifetime = datetime.fromisoformat(me["token"]["expires_at"]) - datetime.fromisoformat(me["token"]["created_at"])
    assert abs(lifetime.total_seconds() - 30 * 86400) < 5
    assert statuses(gateway, "/admin/api/v1/config", token) == {403}
    refused = ctl(gateway, "operators", "list", token=token)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: forbidden: 当前账号的角色（审核员）无权使用此功能")

    listed = ctl(gateway, "operators", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("li.reviewer"))
    assert line.split()[:5] == ["li.reviewer", "reviewer", "11,31", "enabled", "database"]
    assert "笔记本" in listed.stdout and "active" in listed.stdout
    as_json = json.loads(ctl(gateway, "operators", "list", "--json").stdout)
    assert {entry["name"]: entry["source"] for entry in as_json} == {"li.reviewer": "database",
                                                                     "operator": "environment"}

    promoted = ctl(gateway, "operators", "set", "li.reviewer", "--role", "operator", "--national")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == "operator li.reviewer: role operator, scope national"
    assert until_every_process(gateway, "/admin/api/v1/config", token, 200, CACHE_S + 2) <= CACHE_S + 1

    disabled = ctl(gateway, "operators", "disable", "li.reviewer")
    assert disabled.stdout.strip() == "operator li.reviewer: role operator, scope national (disabled)"
    until_every_process(gateway, "/admin/api/v1/me", token, 401, CACHE_S + 2)
    assert ctl(gateway, "operators", "enable", "li.reviewer").returncode == 0
    until_every_process(gateway, "/admin/api/v1/me", token, 200, CACHE_S + 2)

    token_id = as_json[0]["tokens"][0]["id"]
    revoked = ctl(gateway, "operators", "revoke", "li.reviewer", str(token_id))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"token {token_id} of li.reviewer revoked at ")
    # Revoked: every process refuses it within the cache time.
    assert until_every_process(gateway, "/admin/api/v1/me", token, 401, CACHE_S + 2) <= CACHE_S + 1

    audit = ctl(gateway, "operators", "audit", "--name", "li.reviewer")
    assert audit.returncode == 0, audit.stderr
    actions = [line.split()[2] for line in audit.stdout.splitlines()[2:]]
    assert actions == ["token_revoke", "update", "update", "update", "token_issue", "create"]
    assert all(line.split()[1] == "operator" for line in audit.stdout.splitlines()[2:])  # the settings' admin


def test_ctl_explains_refusals(gateway: Process) -> None:
    bad_province = ctl(gateway, "operators", "add", "someone", "--role", "reviewer", "--province", "99")
    assert bad_province.returncode == 1
    assert bad_province.stderr.splitlines() == ["error: validation_failed: 填写的信息有误，请检查后重试",
                                                "  provinces.0: invalid_choice"]
    bad_role = ctl(gateway, "operators", "add", "someone", "--role", "root")
    assert bad_role.returncode == 2 and "'root' is not one of" in bad_role.stderr
    assert ctl(gateway, "operators", "add", "dup", "--role", "operator").returncode == 0
    duplicate = ctl(gateway, "operators", "add", "dup", "--role", "admin")
    assert duplicate.returncode == 1 and duplicate.stderr.startswith("error: operator_exists: ")
    nothing = ctl(gateway, "operators", "set", "dup")
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr
    both = ctl(gateway, "operators", "set", "dup", "--province", "11", "--national")
    assert both.returncode == 1 and "not both" in both.stderr
    missing = ctl(gateway, "operators", "token", "ghost")
    assert missing.returncode == 1 and missing.stderr.startswith("error: operator_not_found: ")
    assert missing.stdout == ""
    bad_expiry = ctl(gateway, "operators", "token", "dup", "--expires-in", "1w")
    assert bad_expiry.returncode == 1 and "not a duration" in bad_expiry.stderr
    too_short = ctl(gateway, "operators", "token", "dup", "--expires-in", "10s")
    assert too_short.returncode == 1 and "expires_in_s: too_small" in too_short.stderr
    unknown_token = ctl(gateway, "operators", "revoke", "dup", "12345")
    assert unknown_token.returncode == 1 and unknown_token.stderr.startswith("error: token_not_found: ")
