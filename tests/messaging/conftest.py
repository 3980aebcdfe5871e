"""Fixtures of the SMS delivery tests: a database of the module's own (claims take every due row in it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from core import db
from tests.payments.conftest import module_database


@pytest.fixture(scope="module")
def sms_dsn() -> Iterator[str]:
    """A migrated database for this module alone."""
    with module_database("sms") as dsn:
        yield dsn


@pytest.fixture
async def sms_pool(sms_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the module's database, its outbox emptied first."""
    pool = await db.create_pool(db.PoolSettings(sms_dsn, 1, 4))
    await pool.execute("TRUNCATE sms_outbox")
    try:
        yield pool
    finally:
        await pool.close()
