"""A whole stack for the load tests: seeded data, payment keys, the simulators, a 2-process gateway and the worker.

The gateway trusts 127.0.0.1 as a proxy, so each load user is throttled by its own
``X-Forwarded-For`` address, as candidates at a real peak are; it notifies itself through its
public URL, and the payment simulator's retry schedules are compressed. The worker sends SMS to the
SMS simulator at ``SMS_SEND_RATE`` (low, so the SMS storm's outbox has a backlog to drain).
``examgate loadtest`` runs as a subprocess (Locust monkey-patches with gevent, never in the test process).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from core import db, migrate
from loadtest.processes import (
    ROOT,
    Process,
    free_port,
    start_gateway,
    start_paysim,
    start_smssim,
    start_worker,
)
from payments import keys as payment_keys
from seed import EXAM_B_CODE, seed
from tests.conftest import TEST_PG_SERVER, TEST_REDIS_URL
from tests.gateway.seat_stack import FAST_WORKER, wait_inventory

CANDIDATES = 600
RUN_TIMEOUT_S = 120
# Generous on purpose: the machine running the tests is small and shared; the thresholds that must
# fail are impossible ones.
THRESHOLDS = ("--max-fail-ratio", "0", "--p95-ms", "5000", "--p99-ms", "10000", "--target-rps", "2")
SMS_SEND_RATE = 5  # messages a second the worker sends (EXAMGATE_SMS_SEND_RATE)
SMS_WORKER = {"EXAMGATE_SMS_ACCESS_KEY_SECRET": "loadtest-sms-secret-0123456789",
              "EXAMGATE_SMS_SEND_RATE": str(SMS_SEND_RATE), "EXAMGATE_SMS_BATCH_SIZE": "5"}


@dataclass
class Stack:
    """The processes and data of a load-test run."""

    gateway: Process
    worker: Process
    paysim: Process
    keys_dir: Path
    dsn: str
    exam_ids: dict[str, int]
    smssim: Process


@dataclass
class Run:
    """A finished ``examgate loadtest``: exit code, what it printed, and its reports."""

    code: int
    stdout: str
    stderr: str
    out_dir: Path

    @property
    def figures(self) -> dict[str, Any]:
        """The master's summary.json."""
        return dict(json.loads((self.out_dir / "summary.json").read_text()))

    def rows(self) -> dict[str, dict[str, str]]:
        """Locust's stats CSV by "METHOD name"."""
        with open(self.out_dir / "locust_stats.csv", newline="") as fh:
            return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(fh)}

    def explain(self) -> str:
        """Everything worth reading when an assertion fails."""
        logs = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                       for log in sorted(self.out_dir.glob("locust-*.log")))
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-3000:]}{logs}"


def _stop_all(*processes: Process) -> None:
    for process in processes:
        process.stop()


@pytest.fixture(scope="package")
def loadtest_dsn() -> Iterator[str]:
    """A database of the load tests' own: the demo seed needs one no other test seeds differently."""
    dsn = db.with_database(TEST_PG_SERVER, f"examgate_test_load_{os.getpid()}_{secrets.token_hex(3)}")
    asyncio.run(migrate.create_and_migrate(dsn))
    yield dsn
    asyncio.run(db.drop_database(dsn))


@pytest.fixture(scope="package")
def stack(loadtest_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Seeded data and every process, started once for the load tests and stopped after them.

    Package-scoped: a worker left running would sweep and reconcile the keys of later tests
    (exam ids from different databases meet in the one test Redis database).
    """
    pg_dsn = loadtest_dsn
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    report = asyncio.run(seed(pg_dsn, CANDIDATES))
    keys_dir = tmp_path_factory.mktemp("loadtest-keys") / "keys"
    payment_keys.ensure(keys_dir)
    paysim = start_paysim(keys_dir, time_scale=0.001)
    try:
        smssim = start_smssim(EXAMGATE_SMS_ACCESS_KEY_SECRET=SMS_WORKER["EXAMGATE_SMS_ACCESS_KEY_SECRET"])
    except Exception:
        paysim.stop()
        raise
    port = free_port()
    providers = {"EXAMGATE_KEYS_DIR": str(keys_dir), "EXAMGATE_PAYSIM_URL": paysim.url}
    try:
        gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, port=port, **providers,
                                EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", EXAMGATE_TRUSTED_PROXIES="127.0.0.1")
    except Exception:
        _stop_all(smssim, paysim)
        raise
    try:
        worker = start_worker(pg_dsn, TEST_REDIS_URL, **providers, **FAST_WORKER, **SMS_WORKER,
                              EXAMGATE_SMS_URL=smssim.url)
    except Exception:
        _stop_all(gateway, smssim, paysim)
        raise
    stack = Stack(gateway, worker, paysim, keys_dir, pg_dsn, dict(report.exam_ids), smssim)
    try:
        asyncio.run(_inventory_loaded(stack))
        yield stack
    finally:
        _stop_all(worker, gateway, smssim, paysim)
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()  # the seeded exams' keys must not meet later tests' exams of the same ids


async def _inventory_loaded(stack: Stack) -> None:
    """Until the worker has put the open exam's seat counts in Redis (seat holds answer 503 before)."""
    exam_id = stack.exam_ids[EXAM_B_CODE]
    conn = await db.connect(stack.dsn)
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        site_ids = [row["id"] for row in await conn.fetch("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)]
        await wait_inventory(client, exam_id, site_ids, timeout_s=30)
    finally:
        await client.aclose()
        await conn.close()


def run_loadtest(stack: Stack, scenario: str, out_dir: Path, *args: str, users: int = 6, duration: str = "4s",
                 host: str | None = None, settings: dict[str, str] | None = None) -> Run:
    """``examgate loadtest SCENARIO`` against the stack, the admin token read from the gateway's secrets file.

    ``settings`` are more EXAMGATE_* variables for the command (those its scenario's watch reads).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXAMGATE_")}
    env["EXAMGATE_SECRETS_FILE"] = str(Path(stack.gateway.extra["run_dir"]) / "secrets.json")
    env["EXAMGATE_KEYS_DIR"] = str(stack.keys_dir)
    env.update(settings or {})
    command = [sys.executable, "-m", "examgate", "loadtest", scenario, "--host", host or stack.gateway.url,
               "--out", str(out_dir), "--users", str(users), "--duration", duration,
               "--candidates", str(CANDIDATES), "--think-ms", "50", *args]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    print(f"{scenario}: {time.monotonic() - started:.1f} s\n{done.stdout}")
    return Run(done.returncode, done.stdout, done.stderr, out_dir)
