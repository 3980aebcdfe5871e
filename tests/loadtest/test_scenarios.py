"""Every scenario, a few seconds each against the whole stack, passes its thresholds; its reports are written.

The checks after each run look past the exit code: the requests the scenario is about were made
and answered as due, and the stores show the effect (registrations paid, notifications settled).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from core import db
from seed import EXAM_B_CODE
from tests.loadtest.conftest import THRESHOLDS, Run, Stack, run_loadtest

pytestmark = pytest.mark.timeout(180)


def assert_passed(run: Run, *requests: str) -> None:
    """Exit 0, the reports there, and each of ``requests`` made and never failed."""
    assert run.code == 0, run.explain()
    assert "PASSED (exit code 0)" in run.stdout
    for report in ("locust_stats.csv", "locust_failures.csv", "report.html", "summary.json", "summary.txt"):
        assert (run.out_dir / report).stat().st_size > 0, report
    rows = run.rows()
    for request in requests:
        assert request in rows, (request, sorted(rows))
        assert int(rows[request]["Request Count"]) > 0, request
        assert int(rows[request]["Failure Count"]) == 0, (request, run.explain())
        assert request in run.stdout  # the printed table has the row too
    assert run.figures["cpu"]["workers"], "no CPU samples from the workers"


async def _count(dsn: str, query: str, *args: object) -> int:
    conn = await db.connect(dsn)
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


def count(stack: Stack, query: str, *args: object) -> int:
    return asyncio.run(_count(stack.dsn, query, *args))


def test_login_storm(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "login-storm", tmp_path, *THRESHOLDS)
    assert_passed(run, "POST /api/v1/sessions", "GET /api/v1/me", "DELETE /api/v1/sessions/current")


def test_registration_opening_pays_through_the_simulator(stack: Stack, tmp_path: Path) -> None:
    exam_id = stack.exam_ids[EXAM_B_CODE]
    paid_before = count(stack, "SELECT count(*) FROM registrations WHERE exam_id = $1 AND status = 'paid'", exam_id)

    run = run_loadtest(stack, "registration-opening", tmp_path, *THRESHOLDS, users=8, duration="8s")

    assert_passed(run, "POST /api/v1/sessions", "POST /api/v1/exams/{exam_id}/queue",
                  "GET /api/v1/exams/{exam_id}/queue/{ticket}", "POST /api/v1/registrations",
                  "PUT /api/v1/registrations/{id}/seat", "POST /api/v1/registrations/{id}/confirm",
                  "POST /api/v1/registrations/{id}/orders", "POST paysim /sim/orders/{order_no}/pay",
                  "GET /api/v1/registrations/{id}")
    paid_sql = "SELECT count(*) FROM registrations WHERE exam_id = $1 AND status = 'paid'"
    paid = count(stack, paid_sql, exam_id) - paid_before
    assert paid > 0
    # Every user that paid at the simulator saw its registration paid (a timeout would be a FLOW failure).
    assert paid >= int(run.rows()["POST paysim /sim/orders/{order_no}/pay"]["Request Count"])
    assert str(exam_id) not in live_config(stack)["queue"]["exams"], "the run left the waiting room on"


def live_config(stack: Stack) -> dict[str, Any]:
    request = urllib.request.Request(stack.gateway.url + "/admin/api/v1/config",
                                     headers={"Authorization": f"Bearer {stack.gateway.admin_token()}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read())["config"])


def test_payment_flood_settles_every_order_once(stack: Stack, tmp_path: Path) -> None:
    before = count(stack, "SELECT count(*) FROM payment_notifications")
    run = run_loadtest(stack, "payment-flood", tmp_path, *THRESHOLDS, duration="5s")
    assert_passed(run, "POST /api/v1/registrations/{id}/orders", "POST /api/v1/payments/notify/alipay",
                  "POST /api/v1/payments/notify/wechat")
    rows = run.rows()
    orders = int(rows["POST /api/v1/registrations/{id}/orders"]["Request Count"])
    notified = sum(int(rows[f"POST /api/v1/payments/notify/{p}"]["Request Count"]) for p in ("alipay", "wechat"))
    assert notified > orders  # every order's event is resent
    # One ledger row per event however often it came, all accepted.
    settled = count(stack, "SELECT count(*) FROM payment_notifications") - before
    assert 0 < settled <= orders
    assert count(stack, "SELECT count(*) FROM payment_notifications WHERE outcome <> 'accepted'") == 0


def test_score_release(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "score-release", tmp_path, *THRESHOLDS)
    assert_passed(run, "POST /api/v1/scores/lookup")


PDF_ROW = "GET /api/v1/tickets/{ticket_no}.pdf"


def test_ticket_printing(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "ticket-printing", tmp_path, *THRESHOLDS)
    assert int(run.rows()["POST /api/v1/tickets/lookup"]["Request Count"]) > 0, run.explain()
    assert_passed(run, "POST /api/v1/tickets/lookup", PDF_ROW)


def test_mixed_peak_in_steps_over_two_worker_processes(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "mixed-peak", tmp_path, *THRESHOLDS, "--processes", "2", "--shape", "steps",
                       "--steps", "2", users=10, duration="6s")
    assert len(run.figures["cpu"]["workers"]) == 2, run.explain()
    assert "2 worker processes" in run.stdout
    rows = run.rows()
    for request in ("POST /api/v1/sessions", "POST /api/v1/scores/lookup", "POST /api/v1/tickets/lookup"):
        assert int(rows[request]["Request Count"]) > 0, (request, run.explain())
    assert_passed(run, "POST /api/v1/sessions", "POST /api/v1/scores/lookup")
