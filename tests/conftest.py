"""Shared fixtures: a fresh PostgreSQL database per run and a dedicated Redis database.

The suite never touches data it did not create: it makes its own database
(``examgate_test_<pid>_<random>``, dropped at the end) and uses one Redis database
number (``EXAMGATE_TEST_REDIS_URL``, default db 13), flushed before each test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db, migrate
from loadtest.cluster_servers import RedisClusterServers, start_redis_cluster
from loadtest.processes import RedisServer, start_redis

TEST_PG_SERVER = os.environ.get("EXAMGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("EXAMGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

# Fixtures that reach PostgreSQL or Redis; a test marked ``unit`` may use none of them, even indirectly.
STORE_FIXTURES = frozenset({"pg_dsn", "pg", "redis", "redis_url", "own_redis", "redis_cluster"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a ``unit`` test that needs a store before its fixtures run, so the fast lane stays free of them."""
    if item.get_closest_marker("unit") is None:
        return
    used = STORE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if used:
        pytest.fail(f"marked unit but uses {', '.join(sorted(used))}: drop the mark or the fixture", pytrace=False)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a database created (and migrated) for this test run, dropped afterwards."""
    name = f"examgate_test_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = db.with_database(TEST_PG_SERVER, name)

    asyncio.run(migrate.create_and_migrate(dsn))
    yield dsn
    asyncio.run(db.drop_database(dsn))


async def _forget_live_config(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE config_audit")
    finally:
        await conn.close()


@pytest.fixture(scope="module", autouse=True)
def no_live_config_stored(request: pytest.FixtureRequest) -> None:
    """Each test module using PostgreSQL starts with no live config audited.

    A gateway finding Redis empty restores the newest audited config, so a flushed Redis alone
    would carry an earlier module's config into this one.
    """
    if any("pg_dsn" in getattr(item, "fixturenames", ()) for item in request.session.items
           if getattr(item, "module", None) is request.module):
        asyncio.run(_forget_live_config(request.getfixturevalue("pg_dsn")))


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database."""
    conn = await db.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def redis_url() -> str:
    """URL of the Redis database reserved for tests."""
    return TEST_REDIS_URL


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client on the test database, flushed before the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()



@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the module's own, for tests that stop, restart or empty it."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of the module's own (three masters, a replica of each), for tests that kill and restart nodes."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs the Debian package)")
    cluster = start_redis_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
