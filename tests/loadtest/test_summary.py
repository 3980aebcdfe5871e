"""The summary table: one row per request, refusals folded in, the totals of served requests."""

from __future__ import annotations

import pytest

from loadtest.summary import render, summarize

pytestmark = pytest.mark.unit


def entry(
    name: str, requests: int, failures: int = 0, p95: float | None = 20.0, method: str = "POST"
) -> dict[str, object]:
    return {"method": method, "name": name, "requests": requests, "failures": failures,
            "p50_ms": None if p95 is None else p95 / 2, "p95_ms": p95, "p99_ms": None if p95 is None else p95 * 2}


FIGURES: dict[str, object] = {
    "elapsed_s": 10.0,
    "entries": [entry("/api/v1/sessions", 900, failures=10, p95=300.0),
                entry("/api/v1/sessions (refused: 429)", 100, p95=2.0),
                entry("/api/v1/me", 1000, method="GET", p95=8.0)],
    "served": {"requests": 1900, "failures": 10, "p50_ms": 5.0, "p95_ms": 250.0, "p99_ms": 400.0},
    "failures": [{"method": "POST", "name": "/api/v1/sessions", "error": "HTTP 409 x where 201 was due",
                  "occurrences": 10}],
}


def test_rows_fold_refusals_into_their_request() -> None:
    summary = summarize(FIGURES)
    sessions = next(row for row in summary.rows if row.name == "POST /api/v1/sessions")
    assert (sessions.requests, sessions.failures, sessions.refused, sessions.p95_ms) == (1000, 10, 100, 300.0)
    assert dict(sessions.reasons) == {"429": 100}
    assert (summary.total.requests, summary.total.failures, summary.total.refused) == (2000, 10, 100)
    assert summary.good_rps == pytest.approx(189.0)
    assert summary.fail_ratio == pytest.approx(0.005)
    table = render(summary)
    assert "POST /api/v1/sessions     1,000  100.0     150     300     600        10      100" in table
    assert "expected refusals (not failures): 429 ×100" in table
    assert "10 × POST /api/v1/sessions: HTTP 409 x where 201 was due" in table
