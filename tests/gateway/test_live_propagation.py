"""Live config across real processes: ``examgate ctl`` changes are in force everywhere within a second.

Also the watcher on its own: the version poll as a backstop, Redis going away and coming
back, an invalid stored document; rebuilding the stored config from the audit, the scripts
that keep versions growing, and the audit refusing versions that do not grow.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from core import db
from core.db import PoolSettings, create_pool
from core.scripts import load_scripts
from gateway.configstore import CHANNEL, CONFIG_KEY, ConfigStore, LiveConfigWatcher
from gateway.liveconfig import DEFAULT, LiveConfig, merge_patch
from loadtest.processes import (
    ROOT,
    Process,
    examgate_env,
    free_port,
    start_gateway,
    start_redis,
)

APPLY_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2)
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 15
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"only saw processes {pids}"
            pids.add(healthz(process)["pid"])
        process.extra["pids"] = ",".join(map(str, sorted(pids)))
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test database, without flushing it under the running gateway."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def healthz(gateway: Process) -> dict[str, Any]:
    # urllib opens a new connection per request, so the kernel picks a process each time.
    with urllib.request.urlopen(gateway.url + "/healthz", timeout=2) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def pids(gateway: Process) -> set[int]:
    return {int(pid) for pid in gateway.extra["pids"].split(",")}


def versions_within(gateway: Process, version: int, seconds: float) -> dict[int, int]:
    """Poll /healthz until every process reports ``version`` or time runs out; what each pid reported last."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = healthz(gateway)
        seen[body["pid"]] = body["config_version"]
        if all(seen.get(pid) == version for pid in pids(gateway)):
            break
    return seen


def ctl(gateway: Process, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    secrets = json.loads(Path(gateway.extra["run_dir"], "secrets.json").read_text())
    token = next(iter(secrets["admin_tokens"].values()))
    env = examgate_env("postgresql://unused@127.0.0.1/unused", "redis://127.0.0.1:1/0", Path(gateway.extra["run_dir"]))
    return subprocess.run(
        [sys.executable, "-m", "examgate", "ctl", "--url", url or gateway.url, "--token", token, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def stored_version(store: redis.Redis) -> int:
    return int(store.hget(CONFIG_KEY, "version") or 0)


def test_ctl_change_is_in_force_in_both_processes_within_a_second(gateway: Process, store: redis.Redis) -> None:
    before = stored_version(store)
    result = ctl(gateway, "config", "set", "queue.exams.2.admit_per_s", "25")
    returned = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"config version {before + 1}"
    seen = versions_within(gateway, before + 1, APPLY_WITHIN_S)
    assert seen == dict.fromkeys(pids(gateway), before + 1), f"not applied everywhere within 1 s: {seen}"
    assert time.monotonic() - returned < APPLY_WITHIN_S + 0.5


def test_ctl_config_get_and_set_values(gateway: Process, store: redis.Redis) -> None:
    assert ctl(gateway, "config", "set", "captcha.routes.sessions.create", "pow").returncode == 0
    assert ctl(gateway, "config", "set", 'maintenance["scores.*"]', "成绩查询系统维护中").returncode == 0
    result = ctl(gateway, "config", "get")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["version"] == stored_version(store)
    assert shown["config"]["queue"]["exams"]["2"] == {"admit_per_s": 25}
    assert shown["config"]["captcha"]["routes"]["sessions.create"] == "pow"
    assert shown["config"]["maintenance"] == {"scores.*": "成绩查询系统维护中"}
    assert ctl(gateway, "config", "set", "maintenance.scores.*", "null").returncode == 0
    assert json.loads(ctl(gateway, "config", "get").stdout)["config"]["maintenance"] == {}


def test_ctl_reports_api_errors(gateway: Process, store: redis.Redis) -> None:
    before = stored_version(store)
    invalid = ctl(gateway, "config", "set", "seats.hold_ttl_s", "5")
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("error: invalid_config: ")
    assert "seats.hold_ttl_s: must be between 60 and 86400" in invalid.stderr
    stale = ctl(gateway, "config", "set", "seats.hold_ttl_s", "900", "--if-match", str(before + 100))
    assert stale.returncode == 1
    assert stale.stderr.startswith("error: version_mismatch: ") and f"current version: {before}" in stale.stderr
    assert stored_version(store) == before
    refused = ctl(gateway, "config", "get", url=f"http://127.0.0.1:{free_port()}")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: cannot reach the gateway at http://127.0.0.1:")
    assert "Traceback" not in refused.stderr


def test_ctl_throttle_set(gateway: Process, store: redis.Redis) -> None:
    before = stored_version(store)
    result = ctl(gateway, "throttle", "set", "login-ip", "--rate", "5", "--period-s", "10", "--mode", "shadow")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"rule login-ip updated: config version {before + 1}"
    stored = json.loads(ctl(gateway, "config", "get").stdout)["config"]
    rules = {rule["id"]: rule for rule in stored["ratelimit"]["rules"]}
    assert rules["login-ip"] == {**DEFAULT["ratelimit"]["rules"][0], "rate": 5, "period_s": 10.0, "mode": "shadow"}
    assert rules["lookup-ip"] == DEFAULT["ratelimit"]["rules"][2]
    assert versions_within(gateway, before + 1, APPLY_WITHIN_S) == dict.fromkeys(pids(gateway), before + 1)

    unknown = ctl(gateway, "throttle", "set", "no-such-rule", "--rate", "5")
    assert unknown.returncode == 1
    assert "no rate-limit rule 'no-such-rule'" in unknown.stderr and "login-ip" in unknown.stderr
    nothing = ctl(gateway, "throttle", "set", "login-ip")
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr
    assert stored_version(store) == before + 1

    listed = ctl(gateway, "throttle", "list")
    assert listed.returncode == 0, listed.stderr
    login = next(line for line in listed.stdout.splitlines() if line.startswith("login-ip "))
    assert login.split()[:8] == ["login-ip", "sessions.create", "ip", "5", "10", "10", "shadow", "local"]


def test_ctl_audit(gateway: Process, store: redis.Redis) -> None:
    result = ctl(gateway, "audit", "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["version", "actor", "changed_at", "path", "old", "new"]
    latest = lines[2].split()
    assert latest[0] == str(stored_version(store)) and latest[1] == "operator" and latest[2].endswith("+08:00")
    assert "ratelimit.rules[0].rate" in result.stdout and "ratelimit.rules[0].mode" in result.stdout


def test_ctl_stats_once(gateway: Process) -> None:
    for _ in range(30):
        healthz(gateway)
    time.sleep(1.5)  # each process flushes its counts every second
    result = ctl(gateway, "stats", "--once")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:]}
    assert float(rows["health.live"][0]) > 0
    assert "(all)" in rows and "config version" in result.stdout.splitlines()[0]


def test_invalid_stored_document_keeps_the_last_good_config(gateway: Process, store: redis.Redis) -> None:
    good = stored_version(store)
    good_doc = store.hget(CONFIG_KEY, "doc")
    assert good_doc is not None
    invalid = orjson.dumps(merge_patch(DEFAULT, {"seats": {"hold_ttl_s": -1}}))
    for version, doc in [(good + 1, b"garbage{"), (good + 2, invalid)]:
        store.hset(CONFIG_KEY, mapping={"version": version, "doc": doc})
        store.publish(CHANNEL, str(version))
        seen = versions_within(gateway, version, 1.5)
        assert seen == dict.fromkeys(pids(gateway), good), f"a process left the last good config: {seen}"
    assert gateway.log().count("rejected, keeping version") >= 4  # both processes, both documents

    store.hset(CONFIG_KEY, mapping={"version": good + 3, "doc": good_doc})
    store.publish(CHANNEL, str(good + 3))
    assert versions_within(gateway, good + 3, APPLY_WITHIN_S) == dict.fromkeys(pids(gateway), good + 3)


async def test_watcher_polls_rides_out_redis_outages_and_calls_listeners() -> None:
    server = start_redis()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=0.5)
    watcher = LiveConfigWatcher(client, poll_interval_s=0.2)
    applied: list[int] = []
    seen_async: list[LiveConfig] = []

    async def async_listener(config: LiveConfig) -> None:
        seen_async.append(config)

    watcher.add_listener(lambda config: applied.append(config.version))
    watcher.add_listener(async_listener)
    task = asyncio.create_task(watcher.run())
    try:
        doc = merge_patch(DEFAULT, {"seats": {"hold_ttl_s": 600}})
        await client.hset(CONFIG_KEY, mapping={"version": 3, "doc": orjson.dumps(doc)})  # not published
        await wait_for_version(watcher, 3)
        assert watcher.current.hold_ttl_s == 600 and applied == [3] and seen_async[0].version == 3

        server.stop()
        await asyncio.sleep(1.0)
        assert not task.done() and watcher.current.version == 3  # kept while Redis is away

        server.start()  # empty again: nothing stored means keep what we have
        await asyncio.sleep(0.5)
        assert watcher.current.version == 3
        await client.hset(CONFIG_KEY, mapping={"version": 4, "doc": orjson.dumps(DEFAULT)})
        await client.publish(CHANNEL, "4")
        await wait_for_version(watcher, 4)
        assert applied == [3, 4] and watcher.current.hold_ttl_s == 1800
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        server.stop()


async def wait_for_version(watcher: LiveConfigWatcher, version: int, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while watcher.current.version != version:
        assert time.monotonic() < deadline, f"still at version {watcher.current.version}, wanted {version}"
        await asyncio.sleep(0.02)


async def test_stored_config_is_rebuilt_from_the_audit(pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis()
    client = aioredis.Redis.from_url(server.url)
    pool = await create_pool(PoolSettings(pg_dsn, 1, 4))
    try:
        configs = ConfigStore(client, pool)
        audited = await configs.rebuild()  # what this run audited so far (0 when nothing)
        await configs.patch({"seats": {"hold_ttl_s": 650}}, "tester")
        live = await configs.patch({"seats": {"hold_ttl_s": 700}}, "tester")
        assert live.version == audited + 2
        caplog.clear()
        assert await configs.rebuild() == live.version  # Redis holds it: left alone
        await client.flushdb()
        # Every process rebuilding at once: one restores, all agree on the audited version.
        assert await asyncio.gather(*(configs.rebuild() for _ in range(8))) == [live.version] * 8
        assert caplog.text.count("restored from the audit") == 1
        assert await configs.get() == (live.version, live.document)
        assert (await configs.audit(1))[0]["actor"] == "tester"

        # An older snapshot (version 1) is brought up to the audit; a change after a loss continues above it.
        await client.hset(CONFIG_KEY, mapping={"version": 1, "doc": orjson.dumps(DEFAULT)})
        assert await configs.rebuild() == live.version and await configs.get() == (live.version, live.document)
        await client.flushdb()
        assert (await configs.patch({"seats": {"hold_ttl_s": 800}}, "tester")).version == live.version + 1
        await client.hset(CONFIG_KEY, mapping={"version": 1, "doc": orjson.dumps(DEFAULT)})
        after = await configs.patch({"maintenance": {"scores.*": "维护中"}}, "tester")
        assert after.version == live.version + 2
        assert after.document == merge_patch(live.document, {"seats": {"hold_ttl_s": 800},
                                                             "maintenance": {"scores.*": "维护中"}})
    finally:
        await pool.close()
        await client.aclose()
        server.stop()


async def test_a_watcher_that_starts_while_redis_is_down_takes_the_audited_config(pg_dsn: str) -> None:
    server = start_redis()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=0.5)
    pool = await create_pool(PoolSettings(pg_dsn, 1, 4))
    task = None
    try:
        configs = ConfigStore(client, pool)
        live = await configs.patch({"seats": {"hold_ttl_s": 900}}, "tester")
        server.stop()
        watcher = LiveConfigWatcher(client, poll_interval_s=0.1, rebuild=configs.rebuild,
                                    newest_audited=configs.newest_audited)
        assert not watcher.known
        task = asyncio.create_task(watcher.run())
        await wait_for_version(watcher, live.version)
        assert watcher.known and watcher.current.hold_ttl_s == 900
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await client.aclose()
        server.stop()


@pytest.fixture
async def private_redis() -> AsyncIterator[aioredis.Redis]:
    """A client on a redis-server of its own (the module's gateway follows the test database)."""
    server = start_redis()
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


async def test_check_and_set_refuses_versions_the_audit_holds(private_redis: aioredis.Redis) -> None:
    cas, client = load_scripts("gateway")["config_cas"], private_redis
    doc = orjson.dumps(DEFAULT)
    assert await cas.run(client, [CONFIG_KEY], [0, doc, 5]) == [-1, 0]  # Redis lost what the audit holds
    assert not await client.exists(CONFIG_KEY)
    assert await cas.run(client, [CONFIG_KEY], [0, doc, 0]) == [1, 1]
    assert await cas.run(client, [CONFIG_KEY], [0, doc, 0]) == [0, 1]  # another change won
    assert await cas.run(client, [CONFIG_KEY], [1, doc, 1]) == [1, 2]


async def test_restore_never_lowers_the_stored_version(private_redis: aioredis.Redis) -> None:
    restore, client = load_scripts("gateway")["config_restore"], private_redis
    assert await restore.run(client, [CONFIG_KEY], [5, b'{"v": 5}']) == 1
    assert await restore.run(client, [CONFIG_KEY], [5, b'{"v": "again"}']) == 0
    assert await restore.run(client, [CONFIG_KEY], [4, b'{"v": 4}']) == 0
    assert await client.hmget(CONFIG_KEY, ["version", "doc"]) == [b"5", b'{"v": 5}']
    await client.hset(CONFIG_KEY, "version", "garbage")
    assert await restore.run(client, [CONFIG_KEY], [6, b'{"v": 6}']) == 1


async def test_audit_versions_only_grow(pg_dsn: str) -> None:
    first, second = await db.connect(pg_dsn), await db.connect(pg_dsn)
    insert = "INSERT INTO config_audit (version, actor, diff, config) VALUES ($1, 'tester', $2, $3)"
    try:
        newest = await first.fetchrow("SELECT version, config FROM config_audit ORDER BY id DESC LIMIT 1")
        version, doc = (newest["version"], newest["config"]) if newest else (0, DEFAULT)
        changed = merge_patch(doc, {"seats": {"hold_ttl_s": 1200}})
        for stale in (version, version - 1):  # a repeat or an older version of a change
            with pytest.raises(asyncpg.UniqueViolationError):
                await first.execute(insert, stale, [{"path": "seats.hold_ttl_s"}], changed)
        await first.execute(insert, version + 1, [{"path": "seats.hold_ttl_s"}], changed)
        await first.execute(insert, version + 1, [{"path": "loadtest_tokens"}], changed)  # a note beside it
        # Two writers of the same next version: the second waits for the first and is refused.
        async with first.transaction():
            await first.execute(insert, version + 2, [{"path": "seats.hold_ttl_s"}], doc)
            waiting = asyncio.ensure_future(second.execute(insert, version + 2, [{"path": "x"}], changed))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        with pytest.raises(asyncpg.UniqueViolationError):
            await waiting
    finally:
        await first.close()
        await second.close()
