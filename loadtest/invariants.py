"""What must hold in PostgreSQL and Redis however the system was treated: checked after each chaos event.

``check_invariants`` gives four verdicts:

- ``capacity``: no site above its capacity — in Redis free + held = capacity and free ≥ 0; in
  PostgreSQL the registrations seated at a site ≤ its capacity;
- ``holds``: the write-behind drained, and PostgreSQL's seats equal Redis's holds;
- ``payments``: no paid order lost or paid twice — every paid order has exactly one accepted ledger
  row, no accepted payment of an order not paid, no registration with two accepted payments (a second
  one is recorded ``refund_pending``), every paid registration has its admission ticket, a permanent
  hold in Redis and (when it was paid here, not seeded) exactly one paid order; and every trade the
  payment simulator says was paid is paid here;
- ``stuck``: no registration stuck — no pending order past its expiry by more than ``grace_s``, no hold
  past its expiry in Redis, no hold of a registration that is not approved or paid (or not there at
  all), no hold event in the dead letters.

``settle`` checks them until they hold or its time is up: right after a failure the write-behind and the
reconciliations are still catching up, which is no violation.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from loadtest.verdicts import Verdict

__all__ = ["GRACE_S", "SETTLE_S", "check_invariants", "settle"]

GRACE_S = 15.0  # a pending order or a hold this far past its expiry should have been closed or released
SETTLE_S = 60.0  # how long the invariants may take to hold once the users have stopped


def check_invariants(dsn: str, redis_url: str, paysim_url: str | None = None,
                     grace_s: float = GRACE_S) -> list[Verdict]:
    """Capacity, holds, payments and stuck registrations, checked in PostgreSQL and Redis (see the module's doc)."""
    return asyncio.run(_invariants(dsn, redis_url, paysim_url, grace_s))


async def _invariants(dsn: str, redis_url: str, paysim_url: str | None, grace_s: float) -> list[Verdict]:
    import redis.asyncio as aioredis

    from core import db

    conn = await db.connect(dsn)
    client = aioredis.Redis.from_url(redis_url)
    try:
        sites = await conn.fetch(
            """SELECT s.id, s.exam_id, s.capacity,
                      count(r.id) FILTER (WHERE r.site_id IS NOT NULL) AS seated
                 FROM exam_sites s LEFT JOIN registrations r ON r.site_id = s.id
                GROUP BY s.id ORDER BY s.id""")
        exams = sorted({row["exam_id"] for row in sites})
        holds = {exam: await _holds(client, exam) for exam in exams}
        return [await _capacity(client, sites, holds), await _holds_agree(conn, client, exams, holds),
                await _payments(conn, client, holds, paysim_url), await _stuck(conn, client, exams, holds, grace_s)]
    finally:
        await client.aclose()
        await conn.close()


async def _holds(client: Any, exam_id: int) -> dict[int, int]:
    from queueing import keys as qkeys

    return {int(k): int(v) for k, v in (await client.hgetall(qkeys.holds(exam_id))).items()}


async def _capacity(client: Any, sites: Sequence[Any], holds: dict[int, dict[int, int]]) -> Verdict:
    from queueing import keys as qkeys

    problems, checked, held_total = [], 0, 0
    for row in sites:
        exam_id, site_id, capacity = row["exam_id"], row["id"], row["capacity"]
        if row["seated"] > capacity:
            problems.append(f"site {site_id}: {row['seated']} seated in PostgreSQL > capacity {capacity}")
        left = await client.get(qkeys.site_left(exam_id, site_id))
        if left is None:
            continue  # the exam's seats are not in Redis (not open for holds)
        checked += 1
        held = sum(1 for s in holds[exam_id].values() if s == site_id)
        held_total += held
        if int(left) < 0 or int(left) + held != capacity:
            problems.append(f"site {site_id}: free {int(left)} + held {held} != capacity {capacity}")
    if problems:
        return Verdict("capacity", False, f"FAIL capacity: {'; '.join(problems[:5])}")
    return Verdict("capacity", True, f"ok   capacity: {checked} sites in Redis, free + held = capacity "
                                     f"({held_total:,} held); none above capacity in PostgreSQL")


async def _holds_agree(conn: Any, client: Any, exams: list[int], holds: dict[int, dict[int, int]]) -> Verdict:
    from queueing import keys as qkeys
    from queueing.writebehind import GROUP

    lagging = []
    for exam_id in exams:
        stream = qkeys.holds_stream(exam_id)
        if not await client.exists(stream):
            continue
        for group in await client.xinfo_groups(stream):
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            if name == GROUP and (group.get("lag") or group.get("pending")):
                lagging.append(f"exam {exam_id}: lag {group.get('lag')}, pending {group.get('pending')}")
    if lagging:
        return Verdict("holds", False, f"FAIL holds: the write-behind has not drained: {'; '.join(lagging)}")
    differ = []
    for exam_id in exams:
        rows = await conn.fetch("SELECT id, site_id FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL",
                                exam_id)
        seated = {row["id"]: row["site_id"] for row in rows}
        if seated != holds[exam_id]:
            only_pg = sorted(set(seated.items()) - set(holds[exam_id].items()))[:5]
            only_redis = sorted(set(holds[exam_id].items()) - set(seated.items()))[:5]
            differ.append(f"exam {exam_id}: PostgreSQL only {only_pg}, Redis only {only_redis}")
    if differ:
        return Verdict("holds", False, f"FAIL holds: PostgreSQL's seats differ from Redis's holds: {'; '.join(differ)}")
    total = sum(len(h) for h in holds.values())
    return Verdict("holds", True, f"ok   holds: the write-behind drained; PostgreSQL's seats equal Redis's "
                                  f"{total:,} holds")


async def _payments(conn: Any, client: Any, holds: dict[int, dict[int, int]], paysim_url: str | None) -> Verdict:
    from queueing import keys as qkeys

    problems = []
    unbooked = await conn.fetch(
        """SELECT o.order_no, (SELECT count(*) FROM payment_notifications n
                                WHERE n.order_no = o.order_no AND n.outcome = 'accepted') AS accepted
             FROM orders o WHERE o.status = 'paid'""")
    paid_orders = len(unbooked)
    wrong = [f"{r['order_no']} ({r['accepted']} accepted)" for r in unbooked if r["accepted"] != 1]
    if wrong:
        problems.append(f"paid orders without exactly one accepted ledger row: {', '.join(wrong[:5])}")
    lost = await conn.fetch(
        """SELECT n.order_no, o.status FROM payment_notifications n JOIN orders o ON o.order_no = n.order_no
            WHERE n.outcome = 'accepted' AND o.status NOT IN ('paid', 'refund_pending')""")
    if lost:
        problems.append(f"accepted payments of orders not paid: {', '.join(f'{r[0]} ({r[1]})' for r in lost[:5])}")
    twice = await conn.fetch(
        """SELECT o.registration_id, count(*) AS n FROM payment_notifications n JOIN orders o ON o.order_no = n.order_no
            WHERE n.outcome = 'accepted' GROUP BY o.registration_id HAVING count(*) > 1""")
    if twice:
        problems.append(f"registrations paid twice: {', '.join(f'{r[0]} ({r[1]}×)' for r in twice[:5])}")
    paid = await conn.fetch(
        """SELECT r.id, r.exam_id, r.site_id,
                  (SELECT count(*) FROM orders o WHERE o.registration_id = r.id AND o.status = 'paid') AS orders,
                  EXISTS (SELECT 1 FROM orders o WHERE o.registration_id = r.id) AS ordered,
                  (SELECT count(*) FROM admission_tickets t WHERE t.registration_id = r.id) AS tickets
             FROM registrations r WHERE r.status = 'paid'""")
    for row in paid:
        expiring = await client.zscore(qkeys.hold_expiry(row["exam_id"]), str(row["id"]))
        held = holds.get(row["exam_id"], {}).get(row["id"])
        # A registration the seed made paid has no order; one paid here has exactly one paid order.
        if (row["ordered"] and row["orders"] != 1) or row["tickets"] != 1 or held != row["site_id"] \
                or expiring is not None:
            problems.append(f"paid registration {row['id']}: {row['orders']} paid orders, {row['tickets']} tickets, "
                            f"held at {held} (seat {row['site_id']}){', expiring' if expiring is not None else ''}")
            if len(problems) > 8:
                break
    asked = 0
    if paysim_url:
        orders = await conn.fetch("SELECT order_no, status FROM orders")
        unsettled = []
        for order in orders:
            trade = await asyncio.to_thread(_trade, paysim_url, order["order_no"])
            asked += 1
            if trade is not None and trade.get("state") == "paid" and order["status"] not in ("paid", "refund_pending"):
                unsettled.append(f"{order['order_no']} ({order['status']})")
        if unsettled:
            problems.append(f"paid at the provider, not here: {', '.join(unsettled[:5])}")
    if problems:
        return Verdict("payments", False, f"FAIL payments: {'; '.join(problems)}")
    asked_text = f"; the {asked:,} orders' trades at the simulator agree" if paysim_url else ""
    return Verdict("payments", True, f"ok   payments: {paid_orders:,} paid orders, each with one accepted ledger row; "
                                     f"{len(paid):,} paid registrations, each with a ticket and a permanent seat (and "
                                     f"one paid order when it was paid here); none paid twice{asked_text}")


def _trade(paysim_url: str, order_no: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{paysim_url}/sim/orders/{order_no}", timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None  # never opened there (the notification flood's own orders are opened there too)
        raise


async def _stuck(conn: Any, client: Any, exams: list[int], holds: dict[int, dict[int, int]], grace_s: float) -> Verdict:
    from queueing import keys as qkeys

    problems = []
    overdue_orders = await conn.fetch(
        "SELECT order_no, expires_at FROM orders WHERE status = 'pending' AND expires_at < now() - make_interval("
        "secs => $1)", grace_s)
    if overdue_orders:
        problems.append(f"{len(overdue_orders)} pending orders past their expiry: "
                        f"{', '.join(r['order_no'] for r in overdue_orders[:5])}")
    seconds, micros = await client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    for exam_id in exams:
        overdue = await client.zcount(qkeys.hold_expiry(exam_id), "-inf", now_ms - int(grace_s * 1000))
        if overdue:
            problems.append(f"exam {exam_id}: {overdue} holds past their expiry in Redis")
        held = list(holds[exam_id])
        if held:
            rows = await conn.fetch("SELECT id, status FROM registrations WHERE id = ANY($1::bigint[])", held)
            status = {row["id"]: row["status"] for row in rows}
            orphans = [f"{r} ({status.get(r, 'missing')})" for r in held if status.get(r) not in ("approved", "paid")]
            if orphans:
                problems.append(f"exam {exam_id}: holds without an approved or paid registration: "
                                f"{', '.join(orphans[:5])}")
    dead = await client.xlen(qkeys.HOLDS_DEAD_LETTERS) if await client.exists(qkeys.HOLDS_DEAD_LETTERS) else 0
    if dead:
        problems.append(f"{dead} hold events in the dead letters ({qkeys.HOLDS_DEAD_LETTERS})")
    if problems:
        return Verdict("stuck", False, f"FAIL stuck: {'; '.join(problems)}")
    pending = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'pending'")
    closed = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'closed'")
    return Verdict("stuck", True, f"ok   stuck: no pending order or hold past its expiry (+{grace_s:g} s), no hold "
                                  f"without its registration, no dead letter ({pending:,} orders pending, "
                                  f"{closed:,} closed)")


def settle(dsn: str, redis_url: str, paysim_url: str | None, settle_s: float = SETTLE_S,
           grace_s: float = GRACE_S) -> tuple[list[Verdict], float]:
    """The invariants, checked until they all hold or ``settle_s`` has passed; the last check and its time."""
    started = time.monotonic()
    while True:
        verdicts = check_invariants(dsn, redis_url, None, grace_s)
        if all(v.passed for v in verdicts) or time.monotonic() - started > settle_s:
            break
        time.sleep(1.0)
    if paysim_url and all(v.passed for v in verdicts):  # the simulator's trades only once the rest holds
        verdicts = check_invariants(dsn, redis_url, paysim_url, grace_s)
    return verdicts, time.monotonic() - started
