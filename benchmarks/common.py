"""What every benchmark needs: scratch stores it creates and removes itself."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from core import db, migrate

PG_SERVER = os.environ.get("EXAMGATE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("EXAMGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@contextmanager
def scratch_database(prefix: str = "examgate_bench") -> Iterator[str]:
    """A migrated database made for one benchmark, dropped afterwards."""
    dsn = db.with_database(PG_SERVER, f"{prefix}_{secrets.token_hex(3)}")

    async def setup() -> None:
        await db.ensure_database(dsn)
        conn = await db.connect(dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(setup())
    try:
        yield dsn
    finally:
        asyncio.run(db.drop_database(dsn))


@contextmanager
def scratch_stores() -> Iterator[tuple[str, str]]:
    """A scratch database and the benchmarks' Redis database (flushed before and after)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        with scratch_database() as dsn:
            yield dsn, REDIS_URL
    finally:
        client.flushdb()
        client.close()
