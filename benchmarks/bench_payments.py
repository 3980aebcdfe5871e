"""Payment notifications: group commit vs one transaction per notification, side by side.

**Set-up.** A scratch database and Redis database, a generated key set, one exam with one
site big enough for every order, and for each measured run a fresh batch of pending orders
(approved registrations at the site, SQL) with one signed notification each, half Alipay
(RSA2 form) and half WeChat Pay v3 (signed headers, AES-GCM resource), signed beforehand in
a process pool. Two gateways run at once, both pinned to core 0 and only one loaded at a
time: one with ``EXAMGATE_NOTIFY_GROUP_MAX=256`` (group commit, the shipped default) and one
with ``EXAMGATE_NOTIFY_GROUP_MAX=1`` (each notification commits its own transaction,
concurrently through the same asyncpg pool: the design group commit is measured against).

**Figure.** The benchmark's process (on core 1) posts a batch with ``CONCURRENCY``
connections and times it until the last answer; every answer must be the provider's
"received" (``success`` / 204) and every order must end paid exactly once. Rounds
alternate the two gateways; the figure is the median of the per-round ratios of
notifications per second. Target ≥ 5×.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from benchmarks import costs
from benchmarks.common import scratch_stores
from core.timeutil import utcnow
from loadtest.processes import Process, start_gateway
from payments import alipay, wechat
from payments import keys as payment_keys
from payments.orders import new_order_no

ROUNDS = 3
GROUP_BATCH = 6_000
SINGLE_BATCH = 1_500
CONCURRENCY = 256
GROUP_MAX = 256
TARGET = 5.0
APP_IDS = {"alipay": "2021000000000001", "wechat": "wx00000000000000e1"}
MCH_ID = "1900000001"
FEE_FEN = 5600


async def make_exam(conn: asyncpg.Connection, seats: int) -> tuple[int, int]:
    """An exam open for registration with one subject and one site of ``seats`` seats: (exam, site)."""
    now = utcnow()
    exam_id = await conn.fetchval(
        """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at, ticket_print_opens_at,
                              ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen)
           VALUES ($1, '基准考试', $2::timestamptz - interval '1 hour', $2::timestamptz + interval '10 days',
                   $2::timestamptz + interval '20 days', $2::timestamptz + interval '30 days',
                   $2::timestamptz + interval '30 days', $2::timestamptz + interval '60 days', $3) RETURNING id""",
        f"B-{secrets.token_hex(4)}", now, FEE_FEN)
    await conn.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级')", exam_id)
    await conn.execute(
        "INSERT INTO exam_specialties (exam_id, level_code, code, name) VALUES ($1, 'mid', 'fin', '金融')", exam_id)
    rooms = -(-seats // 30)
    site_id = await conn.fetchval(
        """INSERT INTO exam_sites (exam_id, province, city, name, address, capacity, rooms)
           VALUES ($1, '11', '北京市', '基准考点', '基准路 1 号', $2, $3) RETURNING id""", exam_id, seats, rooms)
    return exam_id, site_id


async def make_orders(conn: asyncpg.Connection, exam_id: int, site_id: int, count: int) -> list[tuple[str, str]]:
    """``count`` approved registrations at the site with a pending order each: [(order_no, provider)]."""
    tag = secrets.token_hex(4)
    registrations = [row["id"] for row in await conn.fetch(
        """WITH c AS (
               INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               SELECT 'p' || $1 || '-' || g, 'x', '考生' || g, 'passport', 'P' || $1 || g,
                      '13' || lpad(($2 + g)::text, 9, '0'), 'p' || $1 || g || '@example.com', 'q', 'x'
                 FROM generate_series(1, $3::int) AS g
               RETURNING id)
           INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                      subjects, work_years, status, site_id)
           SELECT id, $4, '11', '北京市', 'mid', 'fin', '{101}', 5, 'approved', $5 FROM c
           RETURNING id""",
        tag, secrets.randbelow(900_000_000), count, exam_id, site_id)]  # fmt: skip
    now = utcnow()
    orders = [(new_order_no(now), "alipay" if i % 2 == 0 else "wechat") for i in range(count)]
    await conn.executemany(
        "INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at) "
        "VALUES ($1, $2, $3, $4, now() + interval '1 hour')",
        [(no, reg, provider, FEE_FEN) for (no, provider), reg in zip(orders, registrations, strict=True)])
    return orders


def sign_batch(keys_dir: str, orders: list[tuple[str, str]]) -> list[tuple[str, dict[str, str], bytes]]:
    """(provider, headers, body) of one paid notification per order (run in a worker process)."""
    keys = payment_keys.load(keys_dir)
    signed = []
    for order_no, provider in orders:
        if provider == "alipay":
            form = alipay.build_notification(order_no=order_no, trade_no=f"2026{secrets.randbelow(10**20):020d}",
                                             amount_fen=FEE_FEN, app_id=APP_IDS["alipay"],
                                             seller_id="2088000000000001", keys=keys)
            signed.append(("alipay", {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(form).encode()))
        else:
            headers, body = wechat.build_notification(order_no=order_no,
                                                      transaction_id=f"42{secrets.randbelow(10**26):026d}",
                                                      amount_fen=FEE_FEN, app_id=APP_IDS["wechat"], mch_id=MCH_ID,
                                                      keys=keys)
            signed.append(("wechat", headers, body))
    return signed


def sign_all(keys_dir: str, orders: list[tuple[str, str]]) -> list[tuple[str, dict[str, str], bytes]]:
    """``sign_batch`` spread over the machine's cores."""
    workers = max(1, os.cpu_count() or 1)
    chunks = [orders[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return [item for part in pool.map(sign_batch, [keys_dir] * workers, chunks) for item in part]


async def post_all(url: str, requests: list[tuple[str, dict[str, str], bytes]]) -> tuple[float, int]:
    """Post every notification with ``CONCURRENCY`` connections.

    Returns (seconds to the last answer, answers not "received").
    """
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    queue = list(reversed(requests))
    refused = 0
    async with aiohttp.ClientSession(connector=connector) as http:
        async def sender() -> None:
            nonlocal refused
            while queue:
                provider, headers, body = queue.pop()
                async with http.post(f"{url}/api/v1/payments/notify/{provider}", data=body, headers=headers) as resp:
                    text = await resp.text()
                    ok = (resp.status, text) == (200, "success") if provider == "alipay" else resp.status == 204
                    refused += not ok

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, refused


async def _prepare(pg_dsn: str, count_per_mode: dict[str, int]) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        total = sum(count_per_mode.values()) * ROUNDS
        exam_id, site_id = await make_exam(conn, total)
        batches = {mode: [await make_orders(conn, exam_id, site_id, n) for _ in range(ROUNDS)]
                   for mode, n in count_per_mode.items()}
    finally:
        await conn.close()
    return {"exam_id": exam_id, "site_id": site_id, "batches": batches, "seats": total}


async def _check(pg_dsn: str, exam_id: int, expected: int) -> dict[str, int]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM orders o JOIN registrations r ON r.id = o.registration_id
                        WHERE r.exam_id = $1 AND o.status = 'paid') AS paid,
                      (SELECT count(*) FROM admission_tickets WHERE exam_id = $1) AS tickets""", exam_id)
    finally:
        await conn.close()
    assert row is not None  # two counts: always one row
    return {"expected": expected, **dict(row)}


def run() -> list[dict[str, Any]]:
    """Measure and return the figure with its target."""
    import redis

    started = time.perf_counter()
    sizes = {"group": GROUP_BATCH, "single": SINGLE_BATCH}
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-pay-") as tmp:
        keys_dir = str(Path(tmp) / "keys")
        payment_keys.generate(keys_dir)
        data = asyncio.run(_prepare(pg_dsn, sizes))
        redis.Redis.from_url(redis_url).set(f"eg:{{exam:{data['exam_id']}}}:site:{data['site_id']}:left",
                                            data["seats"])
        signed = {mode: [sign_all(keys_dir, batch) for batch in batches] for mode, batches in data["batches"].items()}
        print(f"  prepared {data['seats']:,} orders and signed their notifications in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        env = {"EXAMGATE_KEYS_DIR": keys_dir, "EXAMGATE_PAYSIM_URL": "http://127.0.0.1:9",
               "EXAMGATE_PG_POOL_MAX": "10"}
        gateways: dict[str, Process] = {}
        try:
            # env goes to start_gateway's **extra; mypy cannot tell that it names none of its other parameters.
            gateways["group"] = start_gateway(pg_dsn, redis_url, workers=1, cpus="0",
                                              EXAMGATE_NOTIFY_GROUP_MAX=str(GROUP_MAX), **env)  # type: ignore[arg-type]
            gateways["single"] = start_gateway(pg_dsn, redis_url, workers=1, cpus="0",
                                               EXAMGATE_NOTIFY_GROUP_MAX="1", **env)  # type: ignore[arg-type]
            meters = {"group": costs.Meter("payments", gateways["group"].proc.pid, redis_url, pg_dsn)}
            rates: dict[str, list[float]] = {"group": [], "single": []}
            refused = {"group": 0, "single": 0}
            for round_no in range(ROUNDS):
                order = ["group", "single"] if round_no % 2 == 0 else ["single", "group"]
                for mode in order:
                    batch = signed[mode][round_no]
                    with costs.metered(meters.get(mode), "payment_notification") as metered:
                        seconds, bad = asyncio.run(post_all(gateways[mode].url, batch))
                        metered.requests = len(batch)
                    rates[mode].append(len(batch) / seconds)
                    refused[mode] += bad
                    print(f"  round {round_no + 1}/{ROUNDS} {mode}: {len(batch):,} notifications in {seconds:.2f} s "
                          f"= {len(batch) / seconds:,.0f}/s", flush=True)
        finally:
            for gateway in gateways.values():
                gateway.stop()
        check = asyncio.run(_check(pg_dsn, data["exam_id"], data["seats"]))
    per_round = [round(g / s, 2) for g, s in zip(rates["group"], rates["single"], strict=True)]
    value = statistics.median(per_round)
    exact = check["paid"] == check["expected"] == check["tickets"] and not any(refused.values())
    return [{
        "benchmark": "payments", "metric": "notify_group_commit_vs_one_transaction_each", "value": value,
        "unit": "×", "target": f">= {TARGET}", "passed": value >= TARGET and exact,
        "details": {"per_round": per_round, "per_s": {m: [round(r) for r in v] for m, v in rates.items()},
                    "refused": refused, "check": check, "concurrency": CONCURRENCY, "group_max": GROUP_MAX,
                    "gateway_cpus": "0", "pg_pool_max": 10, "rounds": ROUNDS,
                    "batches": sizes, "elapsed_s": round(time.perf_counter() - started, 1)},
    }]


if __name__ == "__main__":
    for figure in run():
        print(figure)
