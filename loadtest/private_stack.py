"""A whole examgate of one run's own: redis-server, PostgreSQL, the seed, the payment simulator, gateway and worker.

``examgate chaos`` pauses and restarts the stores under load, so it needs stores nobody else uses: a
private redis-server always, and a private PostgreSQL server (``loadtest.pg_server.start_postgres``)
unless it is given a server to make its database on (the soak's test does, and never restarts it).
The gateway has 2 processes and trusts loopback as a proxy (each load user is throttled by its own
``X-Forwarded-For``); the worker's loops are quick (``QUICK_WORKER``), so a short run sees expiries,
reconciliations and take-overs; the payment simulator's retry schedules are compressed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.pg_server import PostgresServer, start_postgres
from loadtest.processes import (
    Process,
    RedisServer,
    free_port,
    start_gateway,
    start_paysim,
    start_redis,
    start_worker,
)

__all__ = ["PrivateStack", "QUICK_WORKER", "provider_ids"]

# Worker settings that keep its loops quick, so a short run sees expiries, reconciliations and take-overs.
QUICK_WORKER = {
    "EXAMGATE_WRITEBEHIND_CLAIM_MIN_IDLE_MS": "2000",
    "EXAMGATE_SWEEPER_INTERVAL_S": "0.5",
    "EXAMGATE_INVENTORY_CHECK_S": "1",
    "EXAMGATE_WORKER_EXAMS_REFRESH_S": "1",
    "EXAMGATE_QUEUE_ADVANCE_INTERVAL_MS": "100",
    "EXAMGATE_PAYMENTS_INTERVAL_S": "2",
    "EXAMGATE_ORDER_QUERY_AFTER_S": "10",
}


def provider_ids() -> dict[str, str]:
    """The payment provider ids a stack's gateway has (the settings' defaults), as ``RunOptions`` takes them."""
    from gateway.config import Settings

    return {name: str(Settings.model_fields[name].default)
            for name in ("alipay_app_id", "wechat_app_id", "wechat_mch_id")}


@dataclass
class PrivateStack:
    """Redis, PostgreSQL (private, or a database on a given server), the seed, the simulator, gateway and worker."""

    redis: RedisServer
    postgres: PostgresServer | None  # None: a database on someone else's server (it is never restarted)
    dsn: str
    keys_dir: Path
    paysim: Process
    gateway: Process
    worker: Process
    worker_env: dict[str, Any]
    exam_ids: dict[str, int]
    candidates: int
    base_dir: Path
    dropped: bool = False

    @classmethod
    def start(cls, base_dir: Path, candidates: int, *, pg_server: str | None = None, gateway_processes: int = 2,
              gateway_env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None,
              echo: Callable[[str], None] = print) -> PrivateStack:
        """Start everything and wait until the open exam's seats are in Redis.

        ``pg_server``: a PostgreSQL server DSN to make the database on (else a private server is started).
        """
        from core import db, migrate
        from payments import keys as payment_keys
        from seed import seed

        base_dir.mkdir(parents=True, exist_ok=True)
        started: list[Callable[[], object]] = []
        try:
            redis = start_redis()
            started.append(redis.stop)
            postgres = None
            if pg_server is None:
                postgres = start_postgres()
                started.append(postgres.destroy)
                pg_server = postgres.dsn
            dsn = db.with_database(pg_server, f"examgate_stack_{os.getpid()}_{int(time.time())}")
            asyncio.run(migrate.create_and_migrate(dsn))
            if postgres is None:
                started.append(lambda: asyncio.run(db.drop_database(dsn)))
            t0 = time.monotonic()
            report = asyncio.run(seed(dsn, candidates))
            where = f"private on :{postgres.port}" if postgres else "a database on the given server"
            echo(f"stack: redis-server on :{redis.port}, PostgreSQL {where}, {candidates:,} candidates seeded in "
                 f"{time.monotonic() - t0:.1f} s")
            keys_dir = base_dir / "keys"
            payment_keys.ensure(keys_dir)
            paysim = start_paysim(keys_dir, time_scale=0.001, run_dir=base_dir)
            started.append(paysim.stop)
            port = free_port()
            providers = {"EXAMGATE_KEYS_DIR": str(keys_dir), "EXAMGATE_PAYSIM_URL": paysim.url}
            gateway = start_gateway(dsn, redis.url, workers=gateway_processes, port=port, **providers,
                                    EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                                    EXAMGATE_TRUSTED_PROXIES="127.0.0.1", **(gateway_env or {}))
            started.append(gateway.stop)
            env: dict[str, Any] = {**providers, **QUICK_WORKER, **(worker_env or {})}
            worker = start_worker(dsn, redis.url, run_dir=base_dir, **env)
            started.append(worker.stop)
        except BaseException:
            for stop in reversed(started):
                try:
                    stop()
                except Exception:  # the first error is the one to see
                    pass
            raise
        stack = cls(redis, postgres, dsn, keys_dir, paysim, gateway, worker, env, dict(report.exam_ids), candidates,
                    base_dir)
        try:
            stack.wait_inventory()
        except BaseException:
            stack.stop()
            raise
        return stack

    def wait_inventory(self, timeout_s: float = 60) -> None:
        """Until every site of the open exam has its seat count in Redis (seat holds answer 503 before)."""
        import redis

        from queueing import keys as qkeys
        from seed import EXAM_B_CODE

        exam_id = self.exam_ids[EXAM_B_CODE]
        sites = asyncio.run(_fetch(self.dsn, "SELECT id FROM exam_sites WHERE exam_id = $1", exam_id))
        deadline = time.monotonic() + timeout_s
        with redis.Redis.from_url(self.redis.url) as client:
            while client.exists(*(qkeys.site_left(exam_id, row["id"]) for row in sites)) < len(sites):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker did not load the seat counts of exam {exam_id}")
                time.sleep(0.1)

    @property
    def admin_token(self) -> str:
        """The gateway's first operator token."""
        return self.gateway.admin_token()

    def processes(self) -> list[tuple[str, int]]:
        """The gateway (and its children) and the worker, as (label, pid), for the soak's sampler."""
        from loadtest.resources import processes_of

        return processes_of({"gateway": self.gateway.proc.pid, "worker": self.worker.proc.pid})

    def gateway_children(self) -> list[int]:
        """The pids of the gateway's serving processes (multiprocessing's resource tracker left out)."""
        import psutil

        pids = []
        try:
            for child in psutil.Process(self.gateway.proc.pid).children():
                if "resource_tracker" not in " ".join(child.cmdline()):
                    pids.append(child.pid)
        except psutil.Error:
            pass
        return sorted(pids)

    def set_live(self, patch: dict[str, Any]) -> None:
        """Merge ``patch`` into the live config and wait until every gateway process has it."""
        from loadtest.admin import Operator

        operator = Operator(self.gateway.url, self.admin_token)
        version = int(operator.call("PATCH", "/admin/api/v1/config", patch,
                                    content_type="application/merge-patch+json")["version"])
        if not operator.wait_applied(version):
            raise TimeoutError(f"live config version {version} was not applied by every gateway process")

    def restart_worker(self) -> None:
        """Start the worker again (after it was killed), with the same settings and run directory."""
        self.worker.stop()
        self.worker = start_worker(self.dsn, self.redis.url, run_dir=self.base_dir, **self.worker_env)

    def stop(self) -> None:
        """Stop every process, the servers too, and drop the database when it was on a shared server."""
        from core import db

        for process in (self.worker, self.gateway, self.paysim):
            process.stop()
        self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()
        elif not self.dropped:
            asyncio.run(db.drop_database(self.dsn))
            self.dropped = True


async def _fetch(dsn: str, query: str, *args: object) -> list[Any]:
    from core import db

    conn = await db.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()
