"""One delivery batch at a time against the simulator (in process), PostgreSQL and Redis: each outcome, recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import sms
from core.redis import AutoPipeline
from messaging import stats
from messaging.aliyun import AliyunSms, ProviderSettings
from messaging.delivery import DeliveryPolicy, backoff_s, deliver_batch, lookup_days, run_delivery
from messaging.pace import Pacer
from simulators.smssim import SimConfig, SmsSimulator, build_app
from tests.payments.conftest import start_app

KEY_ID, SECRET, SIGN = "LTAItest", "test-secret-0123456789", "考试报名"
POLICY = DeliveryPolicy(send_rate_per_s=2000, concurrency=8, batch_size=50, max_attempts=3, retry_s=0.05,
                        retry_max_s=0.2, lease_s=3, timeout_s=0.5, throttle_pause_s=0.05, poll_interval_s=0.02)


class Stack:
    """The simulator, a sender to it, and the stores."""

    def __init__(self, sim: SmsSimulator, sender: AliyunSms, pool: asyncpg.Pool, pacer: Pacer) -> None:
        self.sim, self.sender, self.pool, self.pacer = sim, sender, pool, pacer

    async def batch(self, policy: DeliveryPolicy = POLICY) -> Any:
        return await deliver_batch(self.pool, self.sender, self.pacer, policy, worker_id="test")

    async def rows(self) -> dict[int, asyncpg.Record]:
        return {r["id"]: r for r in await self.pool.fetch("SELECT *, params::text AS p FROM sms_outbox")}

    async def due_now(self) -> None:
        await self.pool.execute("UPDATE sms_outbox SET due_at = now() WHERE due_at IS NOT NULL")


@pytest.fixture
async def stack(sms_pool: asyncpg.Pool, redis: aioredis.Redis) -> AsyncIterator[Stack]:
    sim = SmsSimulator(access_key_id=KEY_ID, access_key_secret=SECRET, sign_name=SIGN, seed=3,
                       config=SimConfig(phone_per_minute=0))
    runner, url = await start_app(build_app(sim))
    sender = AliyunSms(ProviderSettings(url, KEY_ID, SECRET, SIGN, POLICY.timeout_s))
    try:
        yield Stack(sim, sender, sms_pool, Pacer(redis, POLICY.send_rate_per_s))
    finally:
        await sender.aclose()
        await runner.cleanup()


async def enqueue(pool: asyncpg.Pool, phone: str, code: str = "123456", template: str = "password_reset_code") -> int:
    return await sms.enqueue(pool, phone, template, params={"code": code, "minutes": 5})


async def test_sent_messages_carry_the_bizid_and_lose_their_codes(stack: Stack) -> None:
    first = await enqueue(stack.pool, "13811110001", "111111")
    second = await enqueue(stack.pool, "13811110002", "222222", template="register_code")
    report = await stack.batch()
    assert (report.claimed, report.outcomes["sent"]) == (2, 2)
    rows = await stack.rows()
    delivered = {m.out_id: m for m in stack.sim.delivered}
    for message_id, code in ((first, "111111"), (second, "222222")):
        row = rows[message_id]
        assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None)
        assert row["biz_id"] == delivered[row["out_id"]].biz_id and code in delivered[row["out_id"]].content
        assert code not in row["body"] and code not in row["p"] and sms.MASK in row["body"]
    assert delivered[rows[second]["out_id"]].template_code == sms.TEMPLATES["register_code"].code
    assert (await stack.batch()).claimed == 0


async def test_a_permanent_error_is_failed_at_once(stack: Stack) -> None:
    stack.sim.config.blacklist = ["13000000000"]
    message_id = await enqueue(stack.pool, "13000000000")
    assert (await stack.batch()).outcomes["failed"] == 1
    row = (await stack.rows())[message_id]
    assert (row["status"], row["attempts"], row["error"]) == ("failed", 1, "isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控")
    assert "123456" not in row["body"]
    await stack.due_now()
    assert (await stack.batch()).claimed == 0 and stack.sim.stats()["requests"] == 1  # never tried again


async def test_provider_errors_are_retried_with_backoff_until_the_attempts_run_out(stack: Stack) -> None:
    stack.sim.config.failure_ratio = 1.0
    message_id = await enqueue(stack.pool, "13811110003")
    for attempt in (1, 2):
        report = await stack.batch()
        assert report.outcomes["retried"] == 1
        row = (await stack.rows())[message_id]
        assert (row["status"], row["attempts"]) == ("queued", attempt)
        assert row["error"].startswith(("isp.SYSTEM_ERROR", "ServiceUnavailable"))
        assert (await stack.batch()).claimed == 0  # not yet due
        await stack.due_now()
    assert (await stack.batch()).outcomes["failed"] == 1
    row = (await stack.rows())[message_id]
    assert (row["status"], row["attempts"]) == ("failed", 3) and row["error"].startswith("3 attempts: ")
    assert stack.sim.delivered == []


async def test_a_lost_answer_is_looked_up_and_never_sent_twice(stack: Stack) -> None:
    stack.sim.config.lost_ratio = 1.0
    message_id = await enqueue(stack.pool, "13811110004")
    report = await stack.batch()
    assert report.outcomes["retried"] == 1
    row = (await stack.rows())[message_id]
    assert (row["status"], row["attempts"]) == ("sending", 1) and row["error"].startswith("HTTP504")  # in doubt
    stack.sim.config.lost_ratio = 0.0
    await stack.due_now()
    report = await stack.batch()
    assert (report.outcomes["looked_up"], report.outcomes["found"], report.outcomes["sent"]) == (1, 1, 1)
    row = (await stack.rows())[message_id]
    assert (row["status"], row["biz_id"], row["attempts"]) == ("sent", None, 1)
    assert [m.out_id for m in stack.sim.delivered] == [row["out_id"]] and stack.sim.stats()["duplicates"] == 0


async def test_an_in_doubt_message_the_provider_never_saw_is_sent(stack: Stack) -> None:
    message_id = await enqueue(stack.pool, "13811110005")
    await stack.pool.execute("UPDATE sms_outbox SET status = 'sending', last_attempt_at = now() WHERE id = $1",
                             message_id)  # as a worker killed after its claim leaves it
    report = await stack.batch()
    assert (report.outcomes["looked_up"], report.outcomes["found"], report.outcomes["sent"]) == (1, 0, 1)
    assert (await stack.rows())[message_id]["biz_id"] == stack.sim.delivered[0].biz_id


async def test_throttled_messages_wait_without_spending_attempts(stack: Stack) -> None:
    stack.sim.config.phone_per_minute = 1
    stack.sim.config.minute_s = 0.2
    first = await enqueue(stack.pool, "13811110006", "111111")
    second = await enqueue(stack.pool, "13811110006", "222222")
    report = await stack.batch()
    assert (report.outcomes["sent"], report.outcomes["throttled"]) == (1, 1)
    throttled = next(row for row in (await stack.rows()).values() if row["status"] == "queued")
    assert (throttled["attempts"], throttled["throttled"]) == (0, 1)
    assert throttled["error"] == "isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控Permits:1"
    await asyncio.sleep(0.25)
    await stack.due_now()
    assert (await stack.batch()).outcomes["sent"] == 1
    rows = await stack.rows()
    assert rows[first]["status"] == rows[second]["status"] == "sent"


async def test_messages_not_started_before_the_lease_deadline_go_back(stack: Stack) -> None:
    stack.sim.config.latency_min_ms = stack.sim.config.latency_max_ms = 150
    ids = [await enqueue(stack.pool, f"1381111{i:04d}") for i in range(6)]
    tight = POLICY._replace(concurrency=1, lease_s=1.5, timeout_s=0.5)  # sends may start within 0.5 s: ~4 of them
    report = await stack.batch(tight)
    assert report.outcomes["sent"] + report.released == 6 and 1 <= report.released <= 4
    rows = await stack.rows()
    assert sorted(r["status"] for r in rows.values()) == ["queued"] * report.released + ["sent"] * (6 - report.released)
    assert len(stack.sim.delivered) == 6 - report.released and set(rows) == set(ids)


async def test_a_row_from_an_older_release_is_sent_with_the_parameters_of_its_body(stack: Stack) -> None:
    message_id = await enqueue(stack.pool, "13811110007", "777777")
    await stack.pool.execute("UPDATE sms_outbox SET params = '{}' WHERE id = $1", message_id)
    assert (await stack.batch()).outcomes["sent"] == 1
    assert stack.sim.delivered[0].params == {"code": "777777", "minutes": "5"}


async def test_the_task_publishes_its_figures(stack: Stack, redis: aioredis.Redis, redis_url: str) -> None:
    for i in range(20):
        await enqueue(stack.pool, f"1391111{i:04d}")
    stop = asyncio.Event()
    task = asyncio.create_task(run_delivery(stack.pool, redis, stack.sender, POLICY, worker_id="w1", stop_event=stop))
    client = AutoPipeline(redis_url)
    try:
        for _ in range(100):
            figures = await stats.read(stack.pool, client)
            if figures.totals["sent"] == 20:
                break
            await asyncio.sleep(0.05)
        assert (figures.queued, figures.sending, figures.totals["sent"], figures.totals["failed"]) == (0, 0, 20, 0)
        assert figures.rate_per_s == pytest.approx(2.0)  # 20 in the 10 s window
        await enqueue(stack.pool, "13911119999")
        await stack.pool.execute("UPDATE sms_outbox SET due_at = now() + interval '1 hour' WHERE status = 'queued'")
        waiting = await stats.read(stack.pool, client)
        assert (waiting.queued, waiting.sending) == (1, 0) and waiting.oldest_s >= 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.close()


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = POLICY._replace(retry_s=1.0, retry_max_s=10.0)
    for retry, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)):
        waits = [backoff_s(policy, retry) for _ in range(50)]
        assert all(full / 2 <= wait <= full for wait in waits) and len(set(waits)) > 1


def test_look_up_days_cover_the_lease_around_the_attempt() -> None:
    from datetime import UTC, date, datetime

    late = datetime(2026, 3, 1, 15, 59, 30, tzinfo=UTC)  # 23:59:30 in Shanghai
    assert lookup_days(late, 60, today=date(2026, 3, 2)) == [date(2026, 3, 1), date(2026, 3, 2)]
    assert lookup_days(late, 60, today=date(2026, 3, 1)) == [date(2026, 3, 1)]
    noon = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    assert lookup_days(noon, 60, today=date(2026, 3, 5)) == [date(2026, 3, 1)]


async def test_metrics_show_the_outbox_and_the_workers_figures(stack: Stack, redis: aioredis.Redis, redis_url: str,
                                                               sms_dsn: str, aiohttp_client: Any,
                                                               tmp_path: Any) -> None:
    from gateway import keys as app_keys
    from gateway.app import create_app
    from tests.gateway import candidate_http as h

    stack.sim.config.blacklist = ["13000000000"]
    await enqueue(stack.pool, "13811110008")
    await enqueue(stack.pool, "13000000000")
    report = await stack.batch()
    await stats.publish(redis, "w1", report.outcomes, 1.5)
    await enqueue(stack.pool, "13811110009")  # waiting
    client = await aiohttp_client(create_app(h.settings(sms_dsn, redis_url, tmp_path)))
    token = client.app[app_keys.SETTINGS].metrics_token
    text = await (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text()
    assert 'examgate_sms_queue_messages{state="queued"} 1.0' in text
    assert 'examgate_sms_queue_messages{state="sending"} 0.0' in text
    assert 'examgate_sms_deliveries{outcome="sent"} 1.0' in text
    assert 'examgate_sms_deliveries{outcome="failed"} 1.0' in text
    assert 'examgate_sms_deliveries{outcome="retried"} 0.0' in text
    assert "examgate_sms_send_rate_per_second 1.5" in text and "examgate_sms_oldest_waiting_seconds" in text
