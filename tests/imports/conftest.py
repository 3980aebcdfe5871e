"""An exam with a few admission tickets, and a pool, for the import tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from benchmarks.import_data import ScoredExam, make_exam_with_tickets


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    assert created is not None
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def exam(pg: asyncpg.Connection) -> ScoredExam:
    """An exam of its own with 5 paid registrations taking subjects 101 and 102, each with a ticket."""
    return await make_exam_with_tickets(pg, 5)
