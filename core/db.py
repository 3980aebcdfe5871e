"""PostgreSQL access through asyncpg: pools, connections, database creation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

# A plain connection or the proxy that pool.acquire() hands out: both take the same queries.
Conn = asyncpg.Connection | PoolConnectionProxy


@contextlib.asynccontextmanager
async def transaction(pg: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
    """A transaction on a connection acquired from ``pg`` when it is a pool, else on ``pg`` (nested in its own)."""
    if isinstance(pg, asyncpg.Pool):
        async with pg.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with pg.transaction():
            yield pg


@dataclass(frozen=True)
class PoolSettings:
    """How many connections a process keeps to PostgreSQL."""

    dsn: str
    min_size: int = 2
    max_size: int = 10
    command_timeout_s: float = 30.0


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as text; orjson is several times faster than json for both ways.
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )
    await conn.set_type_codec(
        "json", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
    )


async def create_pool(settings: PoolSettings) -> asyncpg.Pool:
    """Open a pool whose connections decode json/jsonb with orjson."""
    pool = await asyncpg.create_pool(
        settings.dsn,
        min_size=settings.min_size,
        max_size=settings.max_size,
        command_timeout=settings.command_timeout_s,
        init=_init_connection,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection, with the same codecs as the pool's."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


def database_name(dsn: str) -> str:
    """The database a DSN names."""
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def with_database(dsn: str, name: str) -> str:
    """The same DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def ensure_database(dsn: str) -> bool:
    """Create the DSN's database when it does not exist; True when it was created."""
    name = database_name(dsn)
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await admin.close()


async def drop_database(dsn: str) -> None:
    """Drop the DSN's database (tests use this for the databases they created)."""
    name = database_name(dsn)
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
