"""Chaos during load: the figures' arithmetic, then each event during a run of mixed-peak on a stack of its own.

The stack (``loadtest.chaos.PrivateStack``) has a private redis-server and a private PostgreSQL server,
so pausing or restarting them touches nobody else's. Each event's run takes about 40 s (a 25 s run, the
event 8 s in, the invariants once the system has settled); the module takes a few minutes. What the
candidates saw and the invariants are printed for each event.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core import db
from loadtest import report
from loadtest.chaos import (
    EVENTS,
    ChaosPlan,
    EventRecord,
    Timeline,
    candidates_saw,
    failure_kind,
    run_event,
    saw_verdicts,
)
from loadtest.invariants import check_invariants
from loadtest.pg_server import PostgresUnavailable
from loadtest.private_stack import PrivateStack, provider_ids
from loadtest.run import RunOptions
from loadtest.scenarios import SCENARIOS
from loadtest.verdicts import Thresholds
from queueing import keys as qkeys
from seed import EXAM_B_CODE
from tests.gateway.seat_stack import pg_holds, redis_holds, wait_drained

CANDIDATES = 400
WINDOW = 100  # candidates per event's run
RUN_S = 25
EVENT_AT_S = 8.0

HISTORY_HEADER = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%",
                  "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%", "Total Request Count", "Total Failure Count"]


# --- the arithmetic -----------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("error", "kind"), [
    ("HTTP 503 service_unavailable where 200 was due", "503"),
    ("no answer: ConnectionResetError(104, 'Connection reset by peer')", "no answer"),
    ("HTTP 409 already_paid where 200 was due", "409"),
    ("not paid within 30 s", "other"),
])
def test_failures_are_sorted_by_status(error: str, kind: str) -> None:
    assert failure_kind(error) == kind


def write_run(run_dir: Path, rows: list[tuple[float, float, int, int, str]], failures: list[dict[str, object]]) -> None:
    """A run's history (t, req/s, requests, failures, p95) and summary.json, as Locust writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "locust_stats_history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HISTORY_HEADER)
        for t, rps, requests, failed, p95 in rows:
            writer.writerow([int(t), 10, "", "Aggregated", rps, 0, 5, 6, 7, 8, 9, p95, 20, p95, 40, 40, 40,
                             requests, failed])
    (run_dir / "summary.json").write_text(json.dumps({"entries": [], "served": {}, "failures": failures}))


@pytest.mark.unit
def test_what_candidates_saw_around_an_event(tmp_path: Path) -> None:
    rows = [(100 + i, 50.0 if not 10 <= i <= 12 else 5.0, 50 * i, 0 if i < 10 else 7 if i < 13 else 9,
             "12" if i < 10 else "900" if i < 14 else "15") for i in range(30)]
    write_run(tmp_path, rows, [{"method": "POST", "name": "/api/v1/sessions", "error": "no answer: reset",
                                "occurrences": 7},
                               {"method": "PUT", "name": "/api/v1/registrations/{id}/seat",
                                "error": "HTTP 503 redis_unavailable where 200 was due", "occurrences": 2}])
    event = EventRecord("pause-redis", 109.5, 111.5, "redis-server stopped for 2.0 s")

    saw = candidates_saw(tmp_path, event)

    assert saw["failures"] == 9 and saw["failures_before_event"] == 0
    assert saw["failures_by_kind"] == {"no answer": 7, "503": 2}
    assert saw["p95_ms_before"] == 12 and saw["p95_ms_after_worst"] == 900
    assert saw["rps_before"] == 50 and saw["rps_after_lowest"] == 5
    # Rows are stamped with their whole second: a row's figures were known by the end of it.
    assert saw["last_failure_s_after_event"] == 4.5 and saw["run_ended_s_after_event"] == 20.5
    found = {v.option: v for v in saw_verdicts(saw, quiet_s=5)}
    assert found["answers"].passed and found["recovered"].passed, found
    assert not {v.option: v for v in saw_verdicts(saw, quiet_s=30)}["recovered"].passed


@pytest.mark.unit
def test_a_wrong_answer_during_an_event_is_not_the_outage(tmp_path: Path) -> None:
    write_run(tmp_path, [(100, 10, 10, 0, "5"), (101, 10, 20, 1, "5"), (130, 10, 300, 1, "5")],
              [{"method": "PUT", "name": "/api/v1/registrations/{id}/seat",
                "error": "HTTP 409 site_taken where 200 was due", "occurrences": 1}])
    saw = candidates_saw(tmp_path, EventRecord("kill-gateway", 100.5, 101.0, ""))
    verdict = {v.option: v for v in saw_verdicts(saw, quiet_s=5)}["answers"]
    assert not verdict.passed and "HTTP 409 site_taken" in verdict.text, verdict.text


@pytest.mark.unit
def test_a_missing_history_is_an_empty_timeline(tmp_path: Path) -> None:
    assert Timeline.read(tmp_path / "none.csv").started() is None


# --- the events, during load ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    try:
        stack = PrivateStack.start(tmp_path_factory.mktemp("chaos-stack"), CANDIDATES)
    except PostgresUnavailable as exc:
        pytest.skip(f"no private PostgreSQL here: {exc}")
    try:
        stack.set_live({"seats": {"hold_ttl_s": 60}})
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chaos-report")


def plan_for(stack: PrivateStack, report_dir: Path) -> ChaosPlan:
    ids = provider_ids()
    options = RunOptions(
        scenario=SCENARIOS["mixed-peak"], host="", admin_token="", users=10, spawn_rate=10, duration_s=RUN_S,
        processes=1, out_dir=report_dir, thresholds=Thresholds(None, None, None, None), think_ms=100,
        keys_dir=str(stack.keys_dir), alipay_app_id=ids["alipay_app_id"], wechat_app_id=ids["wechat_app_id"],
        wechat_mch_id=ids["wechat_mch_id"],
    )  # fmt: skip
    return ChaosPlan(options, report_dir, event_at_s=EVENT_AT_S, settle_s=45)


async def holds_agree(stack: PrivateStack) -> tuple[dict[int, int], dict[int, int]]:
    """Seats per PostgreSQL and holds per Redis of the open exam, once the write-behind has drained."""
    exam_id = stack.exam_ids[EXAM_B_CODE]
    client = aioredis.Redis.from_url(stack.redis.url)
    conn = await db.connect(stack.dsn)
    try:
        await wait_drained(client, exam_id)
        return await pg_holds(conn, exam_id), await redis_holds(client, exam_id)
    finally:
        await conn.close()
        await client.aclose()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("event", list(EVENTS))
def test_an_event_during_load_keeps_every_invariant(chaos_stack: PrivateStack, report_dir: Path, event: str) -> None:
    number = list(EVENTS).index(event)
    printed: list[str] = []

    result = run_event(chaos_stack, plan_for(chaos_stack, report_dir), event, (number * WINDOW, WINDOW),
                       echo=printed.append)

    print("\n".join(printed))
    verdicts = {v["name"]: v for v in result.entry["verdicts"]}
    assert list(verdicts) == ["answers", "recovered", "capacity", "holds", "payments", "stuck"], printed
    saw = result.saw
    assert saw["event"]["name"] == event and saw["requests"] > 0
    assert saw["p95_ms_before"] is not None and saw["p95_ms_after_worst"] is not None
    for name in ("chaos.json", "locust_stats_history.csv", "summary.json", "metrics.jsonl"):
        assert (result.run_dir / name).stat().st_size > 0, name
    record = json.loads((report_dir / "rehearsal.json").read_text())
    assert ("mixed-peak", f"chaos:{event}") in {(r["scenario"], r["phase"]) for r in record["runs"]}
    assert f"chaos:{event}" in report.write(report_dir).read_text()
    # The tests' own helpers agree with the checker: PostgreSQL's seats are Redis's holds.
    in_pg, in_redis = asyncio.run(holds_agree(chaos_stack))
    assert in_pg == in_redis
    failed = [v["detail"] for v in verdicts.values() if not v["passed"]]
    assert not failed, "\n".join(printed)
    assert result.entry["passed"] and result.entry["invalid"] is None


def test_the_invariants_catch_an_oversell_a_double_payment_and_an_orphan_hold(chaos_stack: PrivateStack) -> None:
    stack = chaos_stack
    asyncio.run(_break_and_check(stack))


async def _break_and_check(stack: PrivateStack) -> None:
    exam_id = stack.exam_ids[EXAM_B_CODE]
    client = aioredis.Redis.from_url(stack.redis.url)
    conn = await db.connect(stack.dsn)
    try:
        site_id = await conn.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", exam_id)
        verdicts = await asyncio.to_thread(check_invariants, stack.dsn, stack.redis.url)
        assert all(v.passed for v in verdicts), verdicts

        # A seat sold twice: one more free than there is.
        await client.incr(qkeys.site_left(exam_id, site_id))
        try:
            found = {v.option: v for v in await asyncio.to_thread(check_invariants, stack.dsn, stack.redis.url)}
            assert not found["capacity"].passed and f"site {site_id}: free" in found["capacity"].text
        finally:
            await client.decr(qkeys.site_left(exam_id, site_id))

        # A registration paid twice: an order of a paid registration with two accepted payments.
        registration = await conn.fetchval(
            """SELECT min(r.id) FROM registrations r WHERE r.status = 'paid'
                 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.registration_id = r.id)""")  # a seeded one
        await conn.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, status, expires_at,
                                                  paid_at)
                              VALUES ('test-paid-twice', $1, 'alipay', 100, 'paid', now(), now())""", registration)
        await conn.execute("""INSERT INTO payment_notifications (provider, event_id, order_no, outcome, payload)
                              VALUES ('alipay', 'test-1', 'test-paid-twice', 'accepted', '{}'::jsonb),
                                     ('alipay', 'test-2', 'test-paid-twice', 'accepted', '{}'::jsonb)""")
        try:
            found = {v.option: v for v in await asyncio.to_thread(check_invariants, stack.dsn, stack.redis.url)}
            payments = found["payments"]
            assert not payments.passed and "test-paid-twice (2 accepted)" in payments.text, payments
            assert f"registrations paid twice: {registration} (2×)" in payments.text, payments
        finally:
            await conn.execute("DELETE FROM payment_notifications WHERE order_no = 'test-paid-twice'")
            await conn.execute("DELETE FROM orders WHERE order_no = 'test-paid-twice'")

        # A hold whose registration does not exist.
        await client.hset(qkeys.holds(exam_id), "999999999", str(site_id))
        try:
            found = {v.option: v for v in await asyncio.to_thread(check_invariants, stack.dsn, stack.redis.url)}
            assert not found["stuck"].passed and "999999999 (missing)" in found["stuck"].text, found["stuck"]
        finally:
            await client.hdel(qkeys.holds(exam_id), "999999999")
    finally:
        await conn.close()
        await client.aclose()
