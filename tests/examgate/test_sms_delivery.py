"""SMS delivery with real processes: two ``examgate worker`` and ``examgate smssim``, PostgreSQL and Redis.

The simulator fails a tenth of the calls, loses some answers after delivering, throttles each
number and the account, and — like the real provider — delivers a message sent twice twice: its
record is the proof that each message went out exactly once. One worker is killed with SIGKILL in
the middle of its batch; nothing is lost and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from core import db, sms
from loadtest.processes import Process, start_smssim, start_worker
from messaging import keys
from tests.payments.conftest import module_database

SECRET = "e2e-sms-secret-0123456789"
MESSAGES = 5000
BLACKLISTED = [f"1300000{i:04d}" for i in range(25)]
# Worker settings scaled for a test: short waits, a lease of 3 s, and a send rate above the simulator's
# account limit so that the provider's throttling (and every worker's pause) is exercised.
WORKER_ENV = {
    "EXAMGATE_SMS_ACCESS_KEY_SECRET": SECRET, "EXAMGATE_SMS_SEND_RATE": "900", "EXAMGATE_SMS_CONCURRENCY": "16",
    "EXAMGATE_SMS_BATCH_SIZE": "100", "EXAMGATE_SMS_MAX_ATTEMPTS": "25", "EXAMGATE_SMS_RETRY_S": "0.05",
    "EXAMGATE_SMS_RETRY_MAX_S": "0.5", "EXAMGATE_SMS_LEASE_S": "3", "EXAMGATE_SMS_TIMEOUT_S": "1",
    "EXAMGATE_SMS_THROTTLE_PAUSE_S": "0.1",
}


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with module_database("smsdelivery") as database:
        yield database


@pytest.fixture(scope="module")
def smssim() -> Iterator[Process]:
    process = start_smssim("--seed", "11", EXAMGATE_SMS_ACCESS_KEY_SECRET=SECRET)
    try:
        yield process
    finally:
        process.stop()


def sim(process: Process, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(process.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def workers(dsn: str, redis_url: str, smssim: Process, count: int) -> list[Process]:
    return [start_worker(dsn, redis_url, EXAMGATE_SMS_URL=smssim.url, **WORKER_ENV) for _ in range(count)]


async def enqueue(pool: asyncpg.Pool, phones: list[str]) -> None:
    """Queue a code to each phone, as ``sms.enqueue`` writes it (in one round trip)."""
    rows = [(phone, "password_reset_code", sms.render("password_reset_code", code=f"{i % 1_000_000:06d}", minutes=5),
             orjson.dumps({"code": f"{i % 1_000_000:06d}", "minutes": "5"}).decode()) for i, phone in enumerate(phones)]
    await pool.executemany(
        "INSERT INTO sms_outbox (phone, template, body, params) VALUES ($1, $2, $3, $4::text::jsonb)", rows)


async def until_drained(pool: asyncpg.Pool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await pool.fetchval("SELECT count(*) FROM sms_outbox WHERE status IN ('queued', 'sending')"):
        assert time.monotonic() < deadline, await pool.fetch(
            "SELECT status, count(*), max(attempts), max(error) FROM sms_outbox GROUP BY status")
        await asyncio.sleep(0.25)


async def totals(redis: aioredis.Redis, sent: int) -> dict[str, int]:
    """The workers' published totals, once they count ``sent`` (a batch is published just after it is recorded)."""
    for _ in range(100):
        found = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.TOTALS)).items()}
        if found.get("sent", 0) >= sent:
            break
        await asyncio.sleep(0.05)
    return {name: found.get(name, 0) for name in ("sent", "failed", "retried", "throttled", "looked_up", "found")}


def delivered_out_ids(smssim: Process) -> Counter[str]:
    return Counter(message["out_id"] for message in sim(smssim, "GET", "/sim/messages?limit=100000")["messages"])


@pytest.fixture
async def pool(dsn: str, redis: aioredis.Redis) -> Any:
    connections = await db.create_pool(db.PoolSettings(dsn, 1, 4))
    await connections.execute("TRUNCATE sms_outbox")
    try:
        yield connections
    finally:
        await connections.close()


async def test_two_workers_deliver_every_message_exactly_once(pool: asyncpg.Pool, redis: aioredis.Redis,
                                                              redis_url: str, dsn: str, smssim: Process) -> None:
    sim(smssim, "POST", "/sim/reset")
    sim(smssim, "PUT", "/sim/config", {"latency_min_ms": 1, "latency_max_ms": 8, "failure_ratio": 0.1,
                                       "lost_ratio": 0.01, "rate_per_s": 350, "phone_per_minute": 1,
                                       "minute_s": 0.5, "blacklist": BLACKLISTED})
    # 4,600 numbers with one message, 200 with two (the second is throttled per number at first).
    phones = [f"139{i:08d}" for i in range(MESSAGES - 400)] + [f"137{i:08d}" for i in range(200)] * 2
    await enqueue(pool, phones + BLACKLISTED)
    started = time.monotonic()
    running = await asyncio.to_thread(workers, dsn, redis_url, smssim, 2)
    try:
        await until_drained(pool, timeout_s=60)
    finally:
        for worker in running:
            worker.stop()
    elapsed = time.monotonic() - started

    rows = await pool.fetch("SELECT phone, status, attempts, throttled, out_id, biz_id, error, body FROM sms_outbox")
    good = [row for row in rows if row["phone"] not in BLACKLISTED]
    refused = [row for row in rows if row["phone"] in BLACKLISTED]
    assert len(good) == MESSAGES and {row["status"] for row in good} == {"sent"}
    assert all(sms.MASK in row["body"] for row in rows)  # no code left once finished
    # The simulator's record: each message delivered once, nothing else delivered, no duplicate.
    out_ids = delivered_out_ids(smssim)
    assert out_ids == Counter({row["out_id"]: 1 for row in good})
    stats = sim(smssim, "GET", "/sim/stats")
    assert stats["duplicates"] == 0 and stats["delivered"] == MESSAGES
    # Failures were retried, the throttling honoured, lost answers looked up rather than sent again.
    assert stats["failed"] > 0 and sum(row["attempts"] for row in good) > MESSAGES
    assert stats["throttled_phone"] > 0 and stats["throttled_account"] > 0 and any(row["throttled"] for row in good)
    published = await totals(redis, MESSAGES)
    assert published["retried"] > 0 and published["throttled"] > 0 and published["sent"] == MESSAGES
    if stats["lost"]:
        assert published["found"] == stats["lost"] and stats["queries"] > 0
    sent_by_lookup = [row for row in good if row["biz_id"] is None]
    assert len(sent_by_lookup) == published["found"]
    # A permanent refusal is failed at once, never sent again: the simulator refused each number once (an
    # injected failure before it may have cost one more attempt).
    assert len(refused) == len(BLACKLISTED) and stats["rejected"] == len(BLACKLISTED)
    assert {(row["status"], row["error"]) for row in refused} == {("failed", "isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控")}
    # Both workers sent.
    assert all("sms batch:" in worker.log() for worker in running), [worker.log()[-2000:] for worker in running]
    print(f"\n{MESSAGES} messages by 2 workers in {elapsed:.1f} s: simulator {stats}, workers {published}")


async def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(pool: asyncpg.Pool, redis: aioredis.Redis,
                                                                      redis_url: str, dsn: str,
                                                                      smssim: Process) -> None:
    sim(smssim, "POST", "/sim/reset")
    sim(smssim, "PUT", "/sim/config", {"latency_min_ms": 20, "latency_max_ms": 40, "failure_ratio": 0.0,
                                       "lost_ratio": 0.0, "rate_per_s": 0, "phone_per_minute": 0, "blacklist": []})
    count = 1500
    await enqueue(pool, [f"136{i:08d}" for i in range(count)])
    [doomed] = await asyncio.to_thread(workers, dsn, redis_url, smssim, 1)
    try:
        deadline = time.monotonic() + 30
        while True:  # frozen mid-batch: some of its messages delivered but not recorded, others not yet sent
            assert time.monotonic() < deadline, doomed.log()[-3000:]
            await asyncio.sleep(0.05)
            if sim(smssim, "GET", "/sim/stats")["delivered"] < 150:
                continue
            doomed.proc.send_signal(signal.SIGSTOP)
            stranded = await pool.fetchval("SELECT count(*) FROM sms_outbox WHERE status = 'sending'")
            delivered_unrecorded = await pool.fetchval(
                "SELECT count(*) FROM sms_outbox WHERE status = 'sending' AND out_id = ANY($1::text[])",
                list(delivered_out_ids(smssim)))
            if stranded > delivered_unrecorded > 0:
                break
            doomed.proc.send_signal(signal.SIGCONT)
        doomed.proc.kill()
        doomed.proc.wait()
    finally:
        doomed.stop()

    [survivor] = await asyncio.to_thread(workers, dsn, redis_url, smssim, 1)
    try:
        await until_drained(pool, timeout_s=40)
    finally:
        survivor.stop()
    rows = await pool.fetch("SELECT status, out_id FROM sms_outbox")
    assert len(rows) == count and {row["status"] for row in rows} == {"sent"}
    assert delivered_out_ids(smssim) == Counter({row["out_id"]: 1 for row in rows})
    assert sim(smssim, "GET", "/sim/stats")["duplicates"] == 0
    published = await totals(redis, count)
    assert published["looked_up"] >= stranded and published["found"] >= delivered_unrecorded
