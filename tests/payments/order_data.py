"""Orders ready to be paid, written straight to PostgreSQL and Redis for the payment tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg
import redis.asyncio as aioredis

from core.timeutil import utcnow
from payments.orders import new_order_no
from queueing import keys as qkeys
from tests.gateway.seat_stack import make_candidates, make_registrations

FEE_FEN = 5600  # tests.factories.make_exam's fee per subject


class PendingOrder(NamedTuple):
    order_no: str
    registration_id: int
    candidate_id: int
    provider: str
    amount_fen: int


async def make_orders(conn: asyncpg.Connection, redis: aioredis.Redis, exam_id: int, site_id: int, count: int,
                      *, providers: tuple[str, ...] = ("alipay", "wechat"), expires_at: datetime | None = None,
                      seats: int | None = None) -> list[PendingOrder]:
    """``count`` approved registrations at ``site_id`` (one subject each), each with a pending order.

    The site's seat count in Redis is set to ``seats`` (default ``count``): the seats are not
    held yet, so paying takes them (``make_permanent``), as after a hold has lapsed.
    """
    candidates = await make_candidates(conn, count)
    registrations = await make_registrations(conn, exam_id, candidates)
    await conn.execute("UPDATE registrations SET status = 'approved', site_id = $2 WHERE id = ANY($1::bigint[])",
                       registrations, site_id)
    now = utcnow()
    expiry = expires_at or now + timedelta(minutes=30)
    made = [PendingOrder(new_order_no(now), registration, candidate, providers[index % len(providers)], FEE_FEN)
            for index, (registration, candidate) in enumerate(zip(registrations, candidates, strict=True))]
    await conn.executemany(
        "INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at) VALUES ($1, $2, $3, $4, $5)",
        [(o.order_no, o.registration_id, o.provider, o.amount_fen, expiry) for o in made])
    await redis.set(qkeys.site_left(exam_id, site_id), count if seats is None else seats)
    return made
