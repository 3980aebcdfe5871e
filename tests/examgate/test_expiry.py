"""Unpaid registrations expire once their exam's registration has closed; paid ones and open exams are left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db
from core.timeutil import utcnow
from examgate.worker import expire_registrations
from queueing import holds
from queueing import keys as qkeys
from tests.factories import make_exam
from tests.gateway.seat_stack import make_candidates, make_registrations


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=4))
    try:
        yield p
    finally:
        await p.close()


async def test_unpaid_registrations_of_closed_exams_expire(pg: asyncpg.Connection, pool: asyncpg.Pool,
                                                           redis: aioredis.Redis) -> None:
    closed, still_open = await make_exam(pg, sites=[("11", 5)]), await make_exam(pg, sites=[("11", 5)])
    site = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", closed)
    await pg.execute("""UPDATE exams SET registration_opens_at = now() - interval '30 days',
                                         registration_closes_at = now() - interval '2 days' WHERE id = $1""", closed)
    people = await make_candidates(pg, 4)
    draft, approved, paid = await make_registrations(pg, closed, people[:3])
    (open_one,) = await make_registrations(pg, still_open, people[3:])
    await pg.execute("UPDATE registrations SET status = 'draft' WHERE id = $1", draft)
    await pg.execute("UPDATE registrations SET status = 'paid', site_id = $2 WHERE id = $1", paid, site)
    await pg.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at)
                        VALUES ($1, $2, 'alipay', 100, now() - interval '2 days')""", f"EGX{approved}", approved)
    await redis.set(qkeys.site_left(closed, site), 5)
    assert await holds.grant_seat_right(redis, closed, approved, 1)
    await holds.hold_seat(redis, closed, approved, site, ttl_s=600, approved_only=True)

    assert await expire_registrations(pool, redis) >= 2  # the shared test database may hold more
    statuses = dict(await pg.fetch("SELECT id, status FROM registrations WHERE id = ANY($1::bigint[])",
                                   [draft, approved, paid, open_one]))
    assert statuses == {draft: "expired", approved: "expired", paid: "paid", open_one: "approved"}
    assert await pg.fetchval("SELECT status FROM orders WHERE order_no = $1", f"EGX{approved}") == "closed"
    assert await pg.fetchval("""SELECT count(*) FROM registration_events WHERE action = 'expire'
                                AND actor = 'system:expiry' AND registration_id = ANY($1::bigint[])""",
                             [draft, approved]) == 2
    assert await redis.hget(qkeys.holds(closed), str(approved)) is None  # the seat went back
    assert int(await redis.get(qkeys.site_left(closed, site))) == 5
    assert int(await redis.hget(qkeys.seat_rights(closed), str(approved))) < 0
    assert await expire_registrations(pool, redis) == 0  # nothing left; a grace not yet over leaves it too
    assert await expire_registrations(pool, redis, grace=timedelta(days=3)) == 0
    assert utcnow() > await pg.fetchval("SELECT registration_closes_at FROM exams WHERE id = $1", closed)
