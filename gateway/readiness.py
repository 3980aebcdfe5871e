"""The readiness verdict: what the stores, the migrations, the worker and the ticket font say.

Redis, PostgreSQL and the migrations are required: without one of them the process should
get no traffic (``/readyz`` 503). The worker and the ticket font are not: every gateway
shares the worker, so a dead worker would pull every gateway out of rotation at once (a
total outage, where most routes still work); and only the ticket PDF needs the font. Those
make the verdict *degraded*, answered 200 with the failing checks named.

One Redis command serves both the Redis check and the worker check (``ZCOUNT`` of live
heartbeats: a reply proves Redis answers), and one PostgreSQL round trip the other two.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import asyncpg
import redis.exceptions

from core import migrate
from core.redis import AutoPipeline
from gateway import heartbeats, metrics
from lookups.pdf import TicketFontMissing, check_ticket_font

__all__ = ["CHECK_TIMEOUT_S", "REQUIRED", "Verdict", "assess"]

CHECK_TIMEOUT_S = 1.0
REQUIRED = ("redis", "postgresql", "migrations")


class Verdict(NamedTuple):
    """Every check's state, the required ones that failed, and the optional ones that did."""

    checks: dict[str, str]
    missing: list[str]
    degraded: list[str]

    @property
    def status(self) -> str:
        """``ready``, ``degraded`` or ``not_ready``."""
        return "not_ready" if self.missing else "degraded" if self.degraded else "ready"


async def _redis_and_worker(client: AutoPipeline, heartbeat_s: float) -> tuple[str, str]:
    try:
        live = await asyncio.wait_for(
            client.execute(b"ZCOUNT", heartbeats.WORKERS, repr(heartbeats.live_since(heartbeat_s)), b"+inf"),
            CHECK_TIMEOUT_S)
    except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
        return f"unreachable: {type(exc).__name__}", "unknown"
    return "ok", "ok" if live else "missing"


async def _postgres(pool: asyncpg.Pool) -> tuple[str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with pool.acquire() as conn:
                todo = await migrate.pending(conn)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"unreachable: {type(exc).__name__}", "unknown"
    except migrate.MigrationError as exc:
        return "ok", f"mismatch: {exc}"
    if todo:
        return "ok", "pending: " + ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
    return "ok", "ok"


def _font(path: str) -> str:
    try:
        check_ticket_font(path)
    except TicketFontMissing:
        return "missing"
    return "ok"


async def assess(pool: asyncpg.Pool, client: AutoPipeline, *, heartbeat_s: float, font_path: str) -> Verdict:
    """Ask every dependency once (at most ``CHECK_TIMEOUT_S`` each, at the same time) for a verdict."""
    metrics.READINESS_CHECKS.inc()
    (redis_state, worker_state), (pg_state, migrations_state) = await asyncio.gather(
        _redis_and_worker(client, heartbeat_s), _postgres(pool))
    checks = {"redis": redis_state, "postgresql": pg_state, "migrations": migrations_state,
              "worker": worker_state, "pdf_font": _font(font_path)}
    missing = [name for name in REQUIRED if checks[name] != "ok"]
    # An unknown worker (Redis is away) is already told by the redis check.
    degraded = [name for name in ("worker", "pdf_font") if checks[name] not in ("ok", "unknown")]
    return Verdict(checks, missing, degraded)
