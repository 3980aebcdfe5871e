"""Payment notifications on a Redis Cluster (three masters, a replica each): the flood, and a master killed mid-flood.

The 2-process gateway runs with ``EXAMGATE_REDIS_CLUSTER=true`` against the module's own cluster and keeps a
paid seat only once a replica has it (``EXAMGATE_HOLD_REPLICAS=1``). The flood is
``tests/payments/test_notify_acceptance.py``'s, at its size (10,000 notifications for 7,000 orders, both
providers, events resent byte for byte, all shuffled): every order paid once, one accepted ledger row per
event, one ticket per paid registration, every seat permanent. Then the master of the exam's slot is
killed while the same flood is being delivered; a provider sends every notification again until it is
told success, as Alipay and WeChat Pay do, and in the end every order is paid exactly once, its seat
permanent in Redis and PostgreSQL, and no site holds more than its capacity.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.cluster_servers import RedisClusterServers
from loadtest.processes import Process, start_gateway
from payments.keys import PaymentKeys
from queueing import keys as qkeys
from tests.cluster.conftest import CLUSTER_ENV
from tests.factories import make_exam
from tests.gateway.seat_stack import redis_holds, seats_left
from tests.payments.conftest import keys, keys_dir  # noqa: F401  (fixtures)
from tests.payments.order_data import PendingOrder, make_orders
from tests.payments.test_notify_acceptance import CONCURRENCY, _acknowledged, _post_all, _request

# The single-Redis acceptance test's proportions (10 notifications to 7 orders) at a size the whole suite's
# time allows; the failover flood stays long enough (some 15 s on 2 cores) to outlast the failover.
ORDERS = 3_000
NOTIFICATIONS = 4_300
FAILOVER_ORDERS = 5_000
FAILOVER_NOTIFICATIONS = 7_150
RESEND_FOR_S = 60  # from the first answer: a provider re-sends for hours, the test gives up after this
Request = tuple[str, dict[str, str], bytes]


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, redis_cluster: RedisClusterServers, keys_dir: Path) -> Iterator[Process]:  # noqa: F811
    process = start_gateway(pg_dsn, redis_cluster.url, workers=2, EXAMGATE_KEYS_DIR=str(keys_dir),
                            EXAMGATE_PAYSIM_URL="http://127.0.0.1:9", **CLUSTER_ENV)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()[-3000:]



async def orders_at_one_site(pg: asyncpg.Connection, store: aioredis.Redis, count: int
                             ) -> tuple[int, int, list[PendingOrder]]:
    """(exam, site, orders): ``count`` pending orders at a site of ``count`` seats, none held yet."""
    exam_id = await make_exam(pg, sites=[("11", count)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    return exam_id, site_id, await make_orders(pg, store, exam_id, site_id, count)


def flood(keys: PaymentKeys, orders: list[PendingOrder], notifications: int) -> list[Request]:  # noqa: F811
    """A paid notification per order and ``notifications - len(orders)`` of them again, byte for byte, shuffled."""
    firsts = [_request(keys, order) for order in orders]
    requests = firsts + random.sample(firsts, notifications - len(orders))
    random.shuffle(requests)
    return requests


async def assert_paid_once(pg: asyncpg.Connection, store: aioredis.Redis, exam_id: int, site_id: int,
                           orders: list[PendingOrder]) -> None:
    """Every order paid once (one accepted ledger row, one ticket, one seat), its seat permanent, the site not over."""
    order_nos = [o.order_no for o in orders]
    statuses = await pg.fetch("SELECT status, count(*) AS n FROM orders WHERE order_no = ANY($1::text[]) "
                              "GROUP BY status", order_nos)
    assert {r["status"]: r["n"] for r in statuses} == {"paid": len(orders)}
    ledger = await pg.fetch("SELECT outcome, reason, count(*) AS n FROM payment_notifications "
                            "WHERE order_no = ANY($1::text[]) GROUP BY outcome, reason", order_nos)
    assert {(r["outcome"], r["reason"]): r["n"] for r in ledger} == {("accepted", None): len(orders)}
    assert await pg.fetchval("SELECT count(*) FROM refunds WHERE order_no = ANY($1::text[])", order_nos) == 0
    tickets = await pg.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT registration_id) AS registrations, "
        "count(DISTINCT (room, seat_no)) AS seats FROM admission_tickets WHERE exam_id = $1", exam_id)
    assert dict(tickets) == {"n": len(orders), "registrations": len(orders), "seats": len(orders)}

    # PostgreSQL: every registration paid at the site with no hold expiry; the site within its capacity.
    registrations = {o.registration_id for o in orders}
    rows = await pg.fetch("SELECT id, status, site_id, hold_expires_at FROM registrations WHERE exam_id = $1",
                          exam_id)
    assert {r["id"]: (r["status"], r["site_id"], r["hold_expires_at"]) for r in rows} == dict.fromkeys(
        registrations, ("paid", site_id, None))
    capacity = await pg.fetchval("SELECT capacity FROM exam_sites WHERE id = $1", site_id)
    assert len(rows) <= capacity

    # Redis: every registration held at the site for good (absent from the expiry set); held + free = capacity.
    assert await redis_holds(store, exam_id) == dict.fromkeys(registrations, site_id)
    assert await store.zcard(qkeys.hold_expiry(exam_id)) == 0
    assert await seats_left(store, exam_id, site_id) == capacity - len(registrations) == 0


def not_settled(log: str) -> str:
    """Why the gateway answered notifications with a failure, numbers left out, most frequent first."""
    reasons = Counter(re.sub(r"\d+", "N", why) for why in re.findall(r"not settled: (.*)", log))
    return "; ".join(f"{n}× {why}" for why, n in reasons.most_common()) or "none"


@pytest.mark.timeout(180)
async def test_a_notification_flood_on_a_cluster_pays_every_order_once(
        gateway: Process, pg: asyncpg.Connection, store: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    exam_id, site_id, orders = await orders_at_one_site(pg, store, ORDERS)
    requests = flood(keys, orders, NOTIFICATIONS)

    started = time.monotonic()
    answers = await _post_all(gateway.url, requests)
    took_s = time.monotonic() - started

    refused = [a for a in answers if not _acknowledged(*a)]
    assert not refused, (len(refused), refused[:3], gateway.log()[-3000:])
    await assert_paid_once(pg, store, exam_id, site_id, orders)
    print(f"{len(requests)} notifications for {len(orders)} orders on a cluster in {took_s:.1f} s")


@pytest.mark.timeout(240)
async def test_a_master_killed_mid_flood_loses_no_payment_and_pays_none_twice(
        gateway: Process, pg: asyncpg.Connection, redis_cluster: RedisClusterServers, store: aioredis.Redis,
        keys: PaymentKeys) -> None:  # noqa: F811
    exam_id, site_id, orders = await orders_at_one_site(pg, store, FAILOVER_ORDERS)
    requests = flood(keys, orders, FAILOVER_NOTIFICATIONS)
    master = redis_cluster.master_for_key(qkeys.site_left(exam_id, site_id))
    seen: Counter[tuple[str, int]] = Counter()
    acknowledged: set[bytes] = set()
    killed = asyncio.Event()
    recovering: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    moments: dict[str, float] = {}
    log_from = len(gateway.log())
    started = time.monotonic()

    async def recover() -> None:
        # The replica takes over; until the old master is back as its replica, no paid seat is confirmed.
        await asyncio.to_thread(redis_cluster.wait_for_failover, master)
        moments["failed over"] = time.monotonic() - started
        await asyncio.to_thread(redis_cluster.restart, master)
        moments["restarted"] = time.monotonic() - started

    async def provider(http: aiohttp.ClientSession, request: Request) -> None:
        # A provider sends the notification again until it is answered success; only its schedule is faster.
        kind, headers, body = request
        deadline: float | None = None
        pause_s = 0.05
        while deadline is None or time.monotonic() < deadline:
            async with gate:
                try:
                    async with http.post(f"{gateway.url}/api/v1/payments/notify/{kind}", data=body,
                                         headers=headers) as resp:
                        status, text = resp.status, await resp.text()
                except aiohttp.ClientError:  # the answer lost with its connection: the provider retries
                    status, text = 0, ""
            seen[(kind, status)] += 1
            deadline = deadline or time.monotonic() + RESEND_FOR_S
            if _acknowledged(kind, status, text):
                acknowledged.add(body)
                if len(acknowledged) >= len(orders) // 3 and not killed.is_set():
                    killed.set()
                    redis_cluster.kill(master)
                    moments["killed"] = time.monotonic() - started
                    recovering.append(asyncio.create_task(recover()))
                return
            assert status != 400, (kind, text)  # a refusal is never re-sent: nothing here is forged
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 1.0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        await asyncio.gather(*(provider(http, r) for r in requests))
    took_s = time.monotonic() - started
    assert killed.is_set(), "the flood ended before the master was killed"
    await asyncio.gather(*recovering)
    summary = ", ".join(f"{kind} {status}: {n}" for (kind, status), n in sorted(seen.items()))
    when = ", ".join(f"{what} at {at_s:.1f} s" for what, at_s in moments.items())
    print(f"notifier's answers while a master failed over ({len(requests)} notifications, "
          f"{len(orders)} orders, {took_s:.1f} s; {when}): {summary}")
    print(f"not settled, per the gateway: {not_settled(gateway.log()[log_from:])}")

    assert len(acknowledged) == len({body for _, _, body in requests}) == len(orders), summary
    await assert_paid_once(pg, store, exam_id, site_id, orders)
