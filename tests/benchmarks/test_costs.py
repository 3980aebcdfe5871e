"""The cost meter's readings that need no store: wrk's request count and a process tree's CPU time."""

from __future__ import annotations

import os

import pytest

from benchmarks import costs

pytestmark = pytest.mark.unit


def test_the_requests_of_a_wrk_run_are_read_from_its_report() -> None:
    report = "Running 3s test @ http://127.0.0.1:1/\n  6731 requests in 3.00s, 1.2MB read\nRequests/sec: 2243.1\n"
    assert costs.wrk_requests(report) == 6731
    assert costs.wrk_requests("no summary") == 0


def test_the_cpu_time_of_a_process_grows_with_its_work() -> None:
    before = costs.process_cpu_ns(os.getpid())
    sum(i * i for i in range(200_000))
    assert costs.process_cpu_ns(os.getpid()) > before > 0


def test_a_round_without_a_meter_records_nothing() -> None:
    recorded = dict(costs.RECORDED)
    with costs.metered(None, "nothing") as measured:
        measured.requests = 10
    assert costs.RECORDED == recorded
