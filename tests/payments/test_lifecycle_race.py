"""The lifecycle under real concurrency: candidates racing withdraw / confirm / pay, operators racing on reviews.

A 2-process gateway, the worker and the payment simulator run as processes. 200 candidates each
hold a seat and open an order, then withdraw, confirm again and pay at the simulator all at
once; 4 operators decide the same 500 reviews at once. Afterwards every registration is in
exactly one legal state, each review has exactly one decision, and seats, orders and payments
agree with the states — checked in PostgreSQL and in Redis.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.processes import Process, start_worker
from queueing import keys as qkeys
from tests.factories import make_exam
from tests.gateway.seat_stack import FAST_WORKER, bearer, make_candidates, make_sessions, wait_drained
from tests.payments.conftest import connected, module_database, paysim_process
from tests.payments.test_payments_e2e import eventually, run_gateway

CANDIDATES = 200
REVIEWS = 500
OPERATORS = 4
CAPACITY = 150  # per site, two sites: room for every candidate
SHED_RETRIES = 40


@pytest.fixture(scope="module")
def race_dsn() -> Iterator[str]:
    with module_database("race") as dsn:
        yield dsn


@pytest.fixture
async def conn(race_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(race_dsn) as connection:
        yield connection


@pytest.fixture
def paysim(keys_dir: Path) -> Iterator[Process]:
    with paysim_process(keys_dir) as process:
        yield process


@pytest.fixture
def gateway(race_dsn: str, redis: aioredis.Redis, redis_url: str, keys_dir: Path, paysim: Process) -> Iterator[Process]:
    process = run_gateway(race_dsn, redis_url, keys_dir, paysim)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def worker(race_dsn: str, redis: aioredis.Redis, redis_url: str, keys_dir: Path, paysim: Process) -> Iterator[Process]:
    process = start_worker(race_dsn, redis_url, EXAMGATE_KEYS_DIR=str(keys_dir), EXAMGATE_PAYSIM_URL=paysim.url,
                           **FAST_WORKER)
    try:
        yield process
    finally:
        process.stop()


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None,
               **headers: str) -> tuple[int, Any]:
    """One request, sent again after a 503 as a client does: the edge sheds load (its class full, the loop
    late on a busy machine) before the handler runs, so a shed request changed nothing."""
    kwargs: dict[str, Any] = {"headers": bearer(token, **headers)}
    if body is not None:
        kwargs["json"] = body
    for _ in range(SHED_RETRIES):
        async with http.request(method, url, **kwargs) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else None
            if resp.status != 503:
                return resp.status, payload
        await asyncio.sleep(0.05)
    return 503, payload


async def ready(http: aiohttp.ClientSession, gateway: Process, exam_id: int) -> None:
    """Until both gateway processes know the exam (its catalogue entry is refreshed)."""
    deadline = time.monotonic() + 15
    seen = 0
    while seen < 8:
        async with http.get(f"{gateway.url}/api/v1/exams/{exam_id}/sites") as resp:
            seen = seen + 1 if resp.status == 200 else 0
        assert time.monotonic() < deadline, "the gateway did not load the exam"
        await asyncio.sleep(0.05)


async def enrolled(http: aiohttp.ClientSession, gateway: Process, conn: asyncpg.Connection, redis_url: str,
                   exam_id: int, count: int, province: str) -> list[tuple[int, str]]:
    """(registration, token) of ``count`` new candidates enrolled over HTTP."""
    candidates = await make_candidates(conn, count)
    tokens = await make_sessions(redis_url, candidates)
    gate = asyncio.Semaphore(32)

    async def one(token: str) -> tuple[int, str]:
        async with gate:
            status, made = await call(http, "POST", f"{gateway.url}/api/v1/registrations", token, {
                "exam_id": exam_id, "province": province, "city": "测试市", "level": "mid", "specialty": "fin",
                "subjects": ["101"], "work_years": 5})
            assert status == 201, made
            return int(made["registration_id"]), token

    return list(await asyncio.gather(*(one(t) for t in tokens)))


async def test_candidates_race_withdraw_confirm_and_pay(gateway: Process, worker: Process, paysim: Process,
                                                        conn: asyncpg.Connection, redis: aioredis.Redis,
                                                        redis_url: str) -> None:
    exam_id = await make_exam(conn, sites=[("11", CAPACITY), ("11", CAPACITY)])
    sites = [r["id"] for r in await conn.fetch("SELECT id FROM exam_sites WHERE exam_id = $1 ORDER BY id", exam_id)]
    rng = random.Random(18)
    async with aiohttp.ClientSession() as http:
        await ready(http, gateway, exam_id)
        people = await enrolled(http, gateway, conn, redis_url, exam_id, CANDIDATES, "11")
        gate = asyncio.Semaphore(40)

        async def prepare(registration: int, token: str) -> str:
            base = f"{gateway.url}/api/v1/registrations/{registration}"
            async with gate:
                assert (await call(http, "POST", f"{base}/confirm", token))[0] == 200
                await eventually(lambda: _seat(http, base, token, rng.choice(sites)), "a seat", timeout_s=20)
                status, order = await call(http, "POST", f"{base}/orders", token, {"provider": rng.choice(
                    ["alipay", "wechat"])})
                assert status == 201, order
                return str(order["order_no"])

        orders = await asyncio.gather(*(prepare(r, t) for r, t in people))

        async def later(delay_s: float, move: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
            await asyncio.sleep(delay_s)
            return await move()

        one_at_a_time = asyncio.Lock()  # one connection: one query at once

        async def recorded(order_no: str) -> bool:
            async with one_at_a_time:
                return bool(await conn.fetchval("SELECT count(*) FROM payment_notifications WHERE order_no = $1",
                                                order_no))

        async def race(index: int, registration: int, token: str, order_no: str) -> list[int]:
            # A payment's notification takes a while to come back: each move starts within 0-150 ms of the
            # others, so some payments are settled before the withdrawal and some after it. How the timings
            # fall depends on the machine, so a quarter of the candidates pay first (withdraw and confirm once
            # the payment is settled) and a quarter withdraw first (pay once the withdrawal is answered): both
            # ends of the race happen on any machine, and the middle half races freely.
            base = f"{gateway.url}/api/v1/registrations/{registration}"
            withdraw = lambda: call(http, "POST", f"{base}/withdraw", token)  # noqa: E731
            confirm = lambda: call(http, "POST", f"{base}/confirm", token)  # noqa: E731
            async with gate:
                if index % 4 == 0:
                    paid = (await _pay(http, paysim, order_no))[0]
                    await eventually(lambda: recorded(order_no), "the payment settled", timeout_s=30)
                    return [paid, (await withdraw())[0], (await confirm())[0]]
                if index % 4 == 1:
                    withdrawn, confirmed = (await withdraw())[0], (await confirm())[0]
                    return [withdrawn, confirmed, (await _pay(http, paysim, order_no))[0]]
                moves = [withdraw, confirm, lambda: _pay(http, paysim, order_no)]
                return [status for status, _ in await asyncio.gather(*(later(rng.uniform(0, 0.15), move)
                                                                       for move in moves))]

        answers = await asyncio.gather(*(race(i, r, t, o) for i, ((r, t), o) in enumerate(zip(people, orders,
                                                                                             strict=True))))
    # Nothing answered 5xx; refusals are the lifecycle's 409s.
    assert all(status < 500 for statuses in answers for status in statuses), answers

    registrations = [r for r, _ in people]

    async def settled() -> bool:  # every order was paid at the simulator: each has its notification recorded
        unheard = await conn.fetchval("""SELECT count(*) FROM unnest($1::text[]) AS o(order_no)
                                          WHERE NOT EXISTS (SELECT 1 FROM payment_notifications n
                                                            WHERE n.order_no = o.order_no)""", orders)
        return unheard == 0

    await eventually(settled, "every payment settled", timeout_s=60)
    await wait_drained(redis, exam_id, timeout_s=30)
    await assert_consistent(conn, redis, exam_id, sites, registrations)
    rows = await conn.fetch("SELECT status FROM registrations WHERE id = ANY($1::bigint[])", registrations)
    outcome = Counter(r["status"] for r in rows)
    assert set(outcome) <= {"paid", "draft", "approved"}, outcome
    assert outcome["paid"] >= CANDIDATES // 4 and outcome["paid"] <= CANDIDATES * 3 // 4, outcome  # both ways


async def _seat(http: aiohttp.ClientSession, base: str, token: str, site: int) -> bool:
    status, _ = await call(http, "PUT", f"{base}/seat", token, {"site_id": site})
    return status == 200


async def _pay(http: aiohttp.ClientSession, paysim: Process, order_no: str) -> tuple[int, Any]:
    async with http.post(f"{paysim.url}/sim/orders/{order_no}/pay", json={"force": True}) as resp:
        return resp.status, await resp.json()


async def assert_consistent(conn: asyncpg.Connection, redis: aioredis.Redis, exam_id: int, sites: list[int],
                            registrations: list[int]) -> None:
    """Every registration's state agrees with its seat, right, orders and audit trail, in PostgreSQL and Redis."""
    held = {int(k): int(v) for k, v in (await redis.hgetall(qkeys.holds(exam_id))).items()}
    expiring = {int(m) for m in await redis.zrange(qkeys.hold_expiry(exam_id), 0, -1)}
    rights = {int(k): int(v) for k, v in (await redis.hgetall(qkeys.seat_rights(exam_id))).items()}
    rows = await conn.fetch("""SELECT r.id, r.status, r.version, r.site_id,
                                      array_agg(o.status ORDER BY o.created_at) FILTER (WHERE o.status IS NOT NULL)
                                          AS orders,
                                      (SELECT count(*) FROM registration_events e
                                        WHERE e.registration_id = r.id) AS events
                                 FROM registrations r LEFT JOIN orders o ON o.registration_id = r.id
                                WHERE r.id = ANY($1::bigint[]) GROUP BY r.id""", registrations)
    for row in rows:
        reg, status, orders = row["id"], row["status"], list(row["orders"] or [])
        assert row["events"] == row["version"] - 1, row  # every transition audited, one version each
        assert orders.count("paid") == (status == "paid"), row  # paid exactly when an order is paid
        assert orders.count("pending") <= 1, row
        if status == "paid":
            assert held.get(reg) == row["site_id"] and reg not in expiring, row  # a permanent seat
        else:
            assert "pending" not in orders or status == "approved", row
            if status != "approved":
                assert reg not in held and rights.get(reg, 0) <= 0, (row, rights.get(reg))
        assert row["site_id"] == held.get(reg), row  # PostgreSQL follows Redis through the write-behind
    for site in sites:
        capacity = await conn.fetchval("SELECT capacity FROM exam_sites WHERE id = $1", site)
        left = int(await redis.get(qkeys.site_left(exam_id, site)))
        assert left + sum(1 for s in held.values() if s == site) == capacity


async def test_operators_race_on_the_same_reviews(gateway: Process, worker: Process, conn: asyncpg.Connection,
                                                  redis: aioredis.Redis, redis_url: str) -> None:
    exam_id = await make_exam(conn, sites=[("37", 10)])
    admin = gateway.admin_token()
    async with aiohttp.ClientSession() as http:
        await ready(http, gateway, exam_id)
        status, _ = await call(http, "PUT", f"{gateway.url}/admin/api/v1/exams/{exam_id}/review-rules/37", admin,
                               {"review_mode": "online"})
        assert status == 200
        tokens = []
        for i in range(OPERATORS):
            name = f"race{exam_id}x{i}"
            assert (await call(http, "POST", f"{gateway.url}/admin/api/v1/operators", admin,
                               {"name": name, "role": "reviewer", "provinces": ["37"]}))[0] == 201
            status, issued = await call(http, "POST", f"{gateway.url}/admin/api/v1/operators/{name}/tokens", admin, {})
            assert status == 201, issued
            tokens.append(issued["token"])
        people = await enrolled(http, gateway, conn, redis_url, exam_id, REVIEWS, "37")
        gate = asyncio.Semaphore(32)

        async def submit(registration: int, token: str) -> None:
            async with gate:
                status, body = await call(http, "POST", f"{gateway.url}/api/v1/registrations/{registration}/confirm",
                                          token)
                assert (status, body["status"]) == (200, "under_review"), body

        await asyncio.gather(*(submit(r, t) for r, t in people))
        registrations = [r for r, _ in people]

        async def operator(token: str, seed: int) -> Counter[int]:
            order = registrations[:]
            random.Random(seed).shuffle(order)
            answers: Counter[int] = Counter()
            for start in range(0, len(order), 25):
                chunk = order[start:start + 25]
                if seed % 2:  # half the operators approve in bulk, half one by one
                    status, body = await call(http, "POST", f"{gateway.url}/admin/api/v1/reviews/approve", token,
                                              {"registration_ids": chunk})
                    assert status == 200, body
                    answers.update(200 if r["result"] == "approved" else 409 for r in body["results"].values())
                else:
                    async def one(registration: int) -> int:
                        decision = random.Random(registration).choice(["approve", "reject"])
                        status, _ = await call(http, "POST",
                                               f"{gateway.url}/admin/api/v1/registrations/{registration}/review",
                                               token, {"decision": decision, "reasons": ["材料不全"]})
                        return status

                    answers.update(await asyncio.gather(*(one(r) for r in chunk)))
            return answers

        results = await asyncio.gather(*(operator(t, i) for i, t in enumerate(tokens)))
    total: Counter[int] = sum(results, Counter())
    assert set(total) <= {200, 409}, total
    assert total[200] == REVIEWS and total[409] == REVIEWS * (OPERATORS - 1), total
    decisions = await conn.fetch("""SELECT registration_id, count(*) AS n FROM registration_events
                                     WHERE registration_id = ANY($1::bigint[]) AND action = 'decide'
                                     GROUP BY registration_id""", registrations)
    assert len(decisions) == REVIEWS and {r["n"] for r in decisions} == {1}
    states = Counter(r["status"] for r in await conn.fetch(
        "SELECT status FROM registrations WHERE id = ANY($1::bigint[])", registrations))
    assert set(states) <= {"approved", "rejected"} and sum(states.values()) == REVIEWS, states
    rights = {int(k): int(v) for k, v in (await redis.hgetall(qkeys.seat_rights(exam_id))).items()}
    approved = {r["id"] for r in await conn.fetch(
        "SELECT id FROM registrations WHERE id = ANY($1::bigint[]) AND status = 'approved'", registrations)}
    assert {r for r, v in rights.items() if v > 0} == approved  # Redis grants exactly the approved ones
