"""Notification floods against a 2-process gateway: every order paid exactly once, nothing lost.

10,000 notifications for 7,000 orders — both providers, every third order's event resent,
all shuffled — are posted at once. Then PostgreSQL must show each order paid once, one
accepted ledger row per event, one ticket per paid registration and no seat given twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.processes import Process, start_gateway
from payments import alipay, wechat
from payments.keys import PaymentKeys
from tests.factories import make_exam
from tests.payments.order_data import PendingOrder, make_orders

ORDERS = 7_000
NOTIFICATIONS = 10_000
CONCURRENCY = 256
APP_IDS = {"alipay": "2021000000000001", "wechat": "wx00000000000000e1"}
MCH_ID = "1900000001"


@pytest.fixture
def gateway(pg_dsn: str, redis_url: str, keys_dir: Path) -> Iterator[Process]:
    process = start_gateway(pg_dsn, redis_url, workers=2, EXAMGATE_KEYS_DIR=str(keys_dir),
                            EXAMGATE_PAYSIM_URL="http://127.0.0.1:9")
    try:
        yield process
    finally:
        process.stop()


def _request(keys: PaymentKeys, order: PendingOrder, **overrides: Any) -> tuple[str, dict[str, str], bytes]:
    """(provider, headers, body) of a paid notification for ``order``."""
    args: dict[str, Any] = {"order_no": order.order_no, "amount_fen": order.amount_fen, "keys": keys,
                            "app_id": APP_IDS[order.provider]}
    if order.provider == "alipay":
        args.update(trade_no=f"2026{secrets.randbelow(10**20):020d}", seller_id="2088000000000001")
        form = alipay.build_notification(**{**args, **overrides})
        return "alipay", {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(form).encode()
    args.update(transaction_id=f"42{secrets.randbelow(10**26):026d}", mch_id=MCH_ID)
    headers, body = wechat.build_notification(**{**args, **overrides})
    return "wechat", headers, body


async def _post_all(url: str, requests: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[str, int, str]]:
    gate = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def post(provider: str, headers: dict[str, str], body: bytes) -> tuple[str, int, str]:
            async with gate, http.post(f"{url}/api/v1/payments/notify/{provider}", data=body,
                                       headers=headers) as resp:
                return provider, resp.status, await resp.text()

        return await asyncio.gather(*(post(*r) for r in requests))


def _acknowledged(provider: str, status: int, text: str) -> bool:
    return (status, text) == (200, "success") if provider == "alipay" else status == 204


@pytest.mark.timeout(300)
async def test_ten_thousand_notifications_for_seven_thousand_orders(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:
    exam_id = await make_exam(pg, sites=[("11", ORDERS)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    orders = await make_orders(pg, redis, exam_id, site_id, ORDERS)
    firsts = [_request(keys, order) for order in orders]
    resent = random.sample(firsts, NOTIFICATIONS - ORDERS)  # the same event sent again, byte for byte
    requests = firsts + resent
    random.shuffle(requests)

    answers = await _post_all(gateway.url, requests)

    refused = [a for a in answers if not _acknowledged(*a)]
    assert not refused, (len(refused), refused[:3], gateway.log()[-3000:])
    order_nos = [o.order_no for o in orders]
    paid = await pg.fetchval("SELECT count(*) FROM orders WHERE order_no = ANY($1::text[]) AND status = 'paid'",
                             order_nos)
    assert paid == ORDERS
    ledger = await pg.fetch("SELECT outcome, count(*) AS n FROM payment_notifications "
                            "WHERE order_no = ANY($1::text[]) GROUP BY outcome", order_nos)
    assert {r["outcome"]: r["n"] for r in ledger} == {"accepted": ORDERS}
    tickets = await pg.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT registration_id) AS registrations, "
        "count(DISTINCT (room, seat_no)) AS seats FROM admission_tickets WHERE exam_id = $1", exam_id)
    assert dict(tickets) == {"n": ORDERS, "registrations": ORDERS, "seats": ORDERS}
    assert await pg.fetchval("SELECT count(*) FROM registrations WHERE exam_id = $1 AND status = 'paid'",
                             exam_id) == ORDERS
    assert await redis.hlen(f"eg:{{exam:{exam_id}}}:holds") == ORDERS
    assert int(await redis.get(f"eg:{{exam:{exam_id}}}:site:{site_id}:left")) == 0


async def test_rejected_notifications_are_answered_as_failures_and_recorded(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:
    exam_id = await make_exam(pg, sites=[("11", 30)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    wrong_amount, wrong_app, forged = await make_orders(pg, redis, exam_id, site_id, 3,
                                                           providers=("wechat", "alipay", "alipay"))
    provider, headers, body = _request(keys, forged)
    tampered = (provider, headers, body.replace(b"total_amount=", b"total_amount=1"))
    answers = await _post_all(gateway.url, [
        _request(keys, wrong_amount, amount_fen=1),
        _request(keys, wrong_app, app_id="2021999999999999"),
        tampered,
    ])
    assert [(p, s) for p, s, _ in answers] == [("wechat", 400), ("alipay", 400), ("alipay", 400)]
    assert answers[1][2] == "fail"
    reasons = await pg.fetch("SELECT reason FROM payment_notifications WHERE outcome = 'rejected' "
                             "AND order_no = ANY($1::text[])", [wrong_amount.order_no, wrong_app.order_no])
    assert sorted(r["reason"] for r in reasons) == ["amount_mismatch", "app_id_mismatch"]
    assert await pg.fetchval("SELECT count(*) FROM payment_notifications WHERE reason = 'bad_signature' "
                             "AND payload ->> 'sha256' = $1", hashlib.sha256(tampered[2]).hexdigest()) == 1
    assert await pg.fetchval("SELECT count(*) FROM orders WHERE order_no = ANY($1::text[]) AND status = 'pending'",
                             [wrong_amount.order_no, wrong_app.order_no, forged.order_no]) == 3
