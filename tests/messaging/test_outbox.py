"""Claiming and recording outbox rows: disjoint claims, leases that lapse into doubt, outcomes under the lease only."""

from __future__ import annotations

import asyncio

import asyncpg

from core import sms
from messaging import outbox
from messaging.outbox import Outcome


async def enqueue(pool: asyncpg.Pool, count: int, phone: str = "13811112222") -> list[int]:
    return [await sms.enqueue(pool, phone, "password_reset_code", params={"code": f"{i:06d}", "minutes": 5})
            for i in range(count)]


async def test_concurrent_claims_take_each_row_once(sms_pool: asyncpg.Pool) -> None:
    ids = await enqueue(sms_pool, 30)
    claims = await asyncio.gather(*(outbox.claim(sms_pool, limit=8, lease_s=30, lease_id=f"w{i}") for i in range(4)))
    taken = [m.id for claim in claims for m in claim]
    assert sorted(taken) == ids and len(set(taken)) == 30  # 4 × 8 places for 30 rows: every row, once
    assert all(not m.in_doubt and m.params["minutes"] == "5" for claim in claims for m in claim)
    rows = await sms_pool.fetch("SELECT status, lease_id, due_at > now() + interval '20 s' AS leased FROM sms_outbox")
    assert {(r["status"], r["leased"]) for r in rows} == {("sending", True)} and len({r["lease_id"] for r in rows}) == 4
    assert await outbox.claim(sms_pool, limit=8, lease_s=30, lease_id="late") == []


async def test_a_lapsed_lease_comes_back_in_doubt(sms_pool: asyncpg.Pool) -> None:
    [message_id] = await enqueue(sms_pool, 1)
    [first] = await outbox.claim(sms_pool, limit=5, lease_s=0.2, lease_id="dead-worker")
    assert not first.in_doubt and first.last_attempt_at is not None
    assert await outbox.claim(sms_pool, limit=5, lease_s=30, lease_id="other") == []  # leased
    await asyncio.sleep(0.3)
    [again] = await outbox.claim(sms_pool, limit=5, lease_s=30, lease_id="other")
    assert (again.id, again.in_doubt, again.last_attempt_at) == (message_id, True, first.last_attempt_at)
    # The dead worker's outcome is not written: the row is the other worker's now.
    assert await outbox.record(sms_pool, "dead-worker", [Outcome(message_id, "sent", attempts=1, biz_id="x")]) == 0
    assert await sms_pool.fetchval("SELECT status FROM sms_outbox WHERE id = $1", message_id) == "sending"


async def test_outcomes_are_recorded_in_one_statement(sms_pool: asyncpg.Pool) -> None:
    sent, failed, retried, doubtful = await enqueue(sms_pool, 4)
    claimed = await outbox.claim(sms_pool, limit=4, lease_s=30, lease_id="w")
    scrubbed, text = sms.scrubbed("password_reset_code", claimed[0].params)
    written = await outbox.record(sms_pool, "w", [
        Outcome(sent, "sent", attempts=1, biz_id="123^0", params=scrubbed, body=text, attempted=True),
        Outcome(failed, "failed", attempts=1, error="isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控", params=scrubbed,
                body=text),
        Outcome(retried, "queued", 0.3, attempts=1, error="isp.SYSTEM_ERROR: 系统错误", attempted=True),
        Outcome(doubtful, "sending", 0.3, attempts=1, error="timeout: no answer", attempted=True),
    ])
    assert written == 4
    rows = {r["id"]: r for r in await sms_pool.fetch("SELECT *, params::text AS p FROM sms_outbox")}
    assert (rows[sent]["status"], rows[sent]["biz_id"], rows[sent]["attempts"]) == ("sent", "123^0", 1)
    assert rows[sent]["sent_at"] is not None and rows[sent]["due_at"] is None and rows[sent]["lease_id"] is None
    assert "000000" not in rows[sent]["body"] and sms.MASK in rows[sent]["body"] and sms.MASK in rows[sent]["p"]
    assert (rows[failed]["status"], rows[failed]["error"]) == ("failed", "isv.BLACK_KEY_CONTROL_LIMIT: 黑名单管控")
    assert rows[failed]["failed_at"] is not None and rows[failed]["due_at"] is None
    assert (rows[retried]["status"], rows[retried]["attempts"], rows[retried]["lease_id"]) == ("queued", 1, None)
    assert "000002" in rows[retried]["body"]  # not finished: the code stays until it is sent
    assert rows[doubtful]["status"] == "sending"
    assert await outbox.claim(sms_pool, limit=4, lease_s=30, lease_id="w2") == []  # neither due yet
    await asyncio.sleep(0.35)
    again = {m.id: m for m in await outbox.claim(sms_pool, limit=4, lease_s=30, lease_id="w2")}
    assert set(again) == {retried, doubtful} and again[doubtful].in_doubt and not again[retried].in_doubt
    assert [m.id for m in await sms.outbox(sms_pool, limit=10) if m.status == "sent"] == [sent]
