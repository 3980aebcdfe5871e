"""The command's own parts: durations, judging a finished run; and Locust kept out of the gateway's imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.processes import ROOT
from loadtest.run import NotRun, judge, parse_duration
from loadtest.verdicts import Thresholds


@pytest.mark.parametrize(("raw", "seconds"), [("45", 45), ("45s", 45), ("2m", 120), (" 1h ", 3600)])
def test_durations(raw: str, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "0", "5x", "-3", "1.5m"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(raw)


def test_the_gateway_and_the_command_never_import_locust() -> None:
    code = ("import sys, gateway.app, examgate.cli, gateway.serve, loadtest.run, loadtest.scenarios; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent', 'geventhttpclient')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _write(out_dir: Path, figures: dict[str, Any]) -> Path:
    (out_dir / "summary.json").write_text(json.dumps(figures))
    return out_dir


def test_judging_a_throttled_run_says_why_and_writes_the_summary(tmp_path: Path) -> None:
    figures = {"elapsed_s": 5.0, "entries": [
        {"method": "POST", "name": "/api/v1/sessions", "requests": 20, "failures": 0, "p50_ms": 30, "p95_ms": 60,
         "p99_ms": 90},
        {"method": "POST", "name": "/api/v1/sessions (refused: 429)", "requests": 80, "failures": 0, "p50_ms": 1,
         "p95_ms": 2, "p99_ms": 3}],
        "served": {"requests": 20, "failures": 0, "p50_ms": 30, "p95_ms": 60, "p99_ms": 90},
        "cpu": {"workers": {"w": [20.0, 30.0]}}}
    printed: list[str] = []
    code = judge(_write(tmp_path, figures), Thresholds(p95_ms=100), echo=printed.append)
    assert code == 0
    (text,) = printed
    assert "hint: most requests were throttled (429)" in text
    assert "expected refusals (not failures): 429 ×80" in text
    assert "ok   --p95-ms: p95 60 ms <= 100 ms" in text
    assert "load generator CPU: peak 30% of a core per worker (limit 90%)" in text
    assert text.endswith("PASSED (exit code 0)")
    assert (tmp_path / "summary.txt").read_text() == text + "\n"


def test_exceptions_in_the_users_fail_the_run(tmp_path: Path) -> None:
    figures = {"elapsed_s": 5.0, "entries": [
        {"method": "GET", "name": "/api/v1/me", "requests": 10, "failures": 0, "p50_ms": 3, "p95_ms": 5, "p99_ms": 6}],
        "served": {"requests": 10, "failures": 0, "p50_ms": 3, "p95_ms": 5, "p99_ms": 6},
        "exceptions": [{"count": 2, "msg": "KeyError('token')", "traceback": "…"}]}
    printed: list[str] = []
    assert judge(_write(tmp_path, figures), Thresholds(), echo=printed.append) == 1
    assert "FAIL the load users raised 2 exception(s): KeyError('token')" in printed[0]


def test_a_run_without_a_summary_was_not_run(tmp_path: Path) -> None:
    (tmp_path / "locust-master.log").write_text("Traceback …\nImportError: no module named x\n")
    with pytest.raises(NotRun, match=r"(?s)master exited with 1.*ImportError: no module named x"):
        judge(tmp_path, Thresholds(), master_code=1)
