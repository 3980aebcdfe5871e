"""The SMS storm against the whole stack: the code throttles hold and the outbox drains at the worker's send rate.

The global rule is tightened for the run (and put back), so a few users exceed it, as a national
storm exceeds the shipped one; the worker sends at ``SMS_SEND_RATE``, below what the rule admits,
so the outbox has a backlog to drain when the users stop. Past the command's own verdicts, the
stores and the provider agree: one message per phone, each delivered once, and the simulator
never received more in a second than the rate allows.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core import db
from loadtest.sms_verdicts import CODES_ROW
from loadtest.sms_verdicts import allowed_sends as allowed
from tests.gateway.seat_stack import set_live
from tests.loadtest.conftest import SMS_SEND_RATE, THRESHOLDS, Stack, run_loadtest
from tests.loadtest.test_scenarios import assert_passed, now, refused

pytestmark = pytest.mark.timeout(180)

USERS = 8
TIGHTER_GLOBAL = {"rate": 12, "burst": 10}  # codes a second: above the send rate, below what the users ask


def live_rules(stack: Stack) -> list[dict[str, Any]]:
    request = urllib.request.Request(stack.gateway.url + "/admin/api/v1/config",
                                     headers={"Authorization": f"Bearer {stack.gateway.admin_token()}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return list(json.loads(resp.read())["config"]["ratelimit"]["rules"])


def delivered(stack: Stack) -> list[dict[str, Any]]:
    with urllib.request.urlopen(stack.smssim.url + "/sim/messages?limit=100000", timeout=10) as resp:
        return list(json.loads(resp.read())["messages"])


async def _outbox(dsn: str, since: datetime) -> list[Any]:
    conn = await db.connect(dsn)
    try:
        return list(await conn.fetch("SELECT phone, status, out_id FROM sms_outbox WHERE created_at >= $1", since))
    finally:
        await conn.close()


def test_sms_storm_throttles_hold_and_the_outbox_drains_at_the_send_rate(stack: Stack, tmp_path: Path) -> None:
    rules = live_rules(stack)
    tighter = [dict(rule, **TIGHTER_GLOBAL) if rule["id"] == "sms-codes-global" else rule for rule in rules]
    asyncio.run(set_live(stack.gateway, {"ratelimit": {"rules": tighter}}))
    started = now(stack)
    try:
        run = run_loadtest(stack, "sms-storm", tmp_path, *THRESHOLDS, users=USERS, duration="6s",
                           settings={"EXAMGATE_DATABASE_URL": stack.dsn,
                                     "EXAMGATE_SMS_SEND_RATE": str(SMS_SEND_RATE)})
    finally:
        asyncio.run(set_live(stack.gateway, {"ratelimit": {"rules": rules}}))

    assert_passed(run, CODES_ROW)
    lines = run.stdout.splitlines()
    throttles = next(line for line in lines if "sms throttles" in line)
    drain = next(line for line in lines if line.startswith(("ok   sms drain", "FAIL sms drain")))
    assert throttles.startswith("ok   sms throttles: "), run.explain()
    # The worker was behind when the users stopped: the drain measured the rate, and within it.
    assert drain.startswith("ok   sms drain: the outbox emptied ") and " queued then went out within " in drain, drain
    # Both expected refusals happened: a phone asked again within the minute, and the tightened global rule.
    assert refused(run, CODES_ROW, "sms_per_phone") > 0, run.explain()
    assert refused(run, CODES_ROW, "sms-codes-global") > 0, run.explain()
    seen = json.loads((tmp_path / "outbox.json").read_text())
    assert seen["drain"]["queued"] > 0 and seen["drain"]["emptied_s"] <= seen["drain"]["bound_s"], seen["drain"]

    # The stores: one message per phone, all sent, at least one per code accepted (a request in flight when
    # the users stopped may have been answered after Locust stopped counting).
    rows = asyncio.run(_outbox(stack.dsn, started))
    phones = {row["phone"] for row in rows}
    accepted = int(run.rows()[CODES_ROW]["Request Count"])
    assert len(rows) == len(phones) and accepted <= len(rows) <= accepted + USERS, (len(rows), len(phones), accepted)
    assert all(phone.startswith("19") for phone in phones)
    assert {row["status"] for row in rows} == {"sent"}
    # The provider: each of them delivered once, and never more in a second than the rate allows.
    messages = [m for m in delivered(stack) if m["phone"] in phones]
    assert sorted(m["out_id"] for m in messages) == sorted(row["out_id"] for row in rows)
    times = sorted(datetime.fromisoformat(m["sent_at"]).timestamp() for m in messages)
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= allowed(SMS_SEND_RATE, 1.0), (busiest, SMS_SEND_RATE)
