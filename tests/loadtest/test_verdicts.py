"""Verdicts: impossible thresholds fail the run and say which and by how much; a saturated generator voids it.

The end-to-end runs use the score-release scenario (the cheapest); the rules themselves are
checked on made-up figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.summary import summarize
from loadtest.verdicts import Thresholds, cpu_saturation, evaluate, every_submission_approved, exit_code
from tests.loadtest.conftest import Stack, run_loadtest
from tests.loadtest.test_summary import FIGURES, entry


@pytest.mark.timeout(120)
def test_impossible_thresholds_fail_the_run_naming_each(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "score-release", tmp_path, "--p95-ms", "0.001", "--target-rps", "10000000",
                       duration="3s")
    assert run.code == 1, run.explain()
    lines = run.stdout.splitlines()
    p95 = next(line for line in lines if "--p95-ms" in line)
    assert p95.startswith("FAIL --p95-ms: p95 ") and "> 0.001 ms (over by " in p95, p95
    rps = next(line for line in lines if "--target-rps" in line)
    assert rps.startswith("FAIL --target-rps: ") and "< 10,000,000 req/s (short by " in rps, rps
    assert any(line.startswith("ok   --max-fail-ratio") for line in lines)
    assert "FAILED: a threshold was missed (exit code 1)" in run.stdout
    printed = run.stdout.split("reports: ", 1)[1].split("\n", 1)[1]
    assert (tmp_path / "summary.txt").read_text().strip() == printed.strip()


@pytest.mark.timeout(120)
def test_a_cpu_saturated_load_generator_makes_the_run_invalid(stack: Stack, tmp_path: Path) -> None:
    # Any worker busy 1% of a core for 3 s in a row counts as saturated here: the rule, cheaply.
    run = run_loadtest(stack, "score-release", tmp_path, "--cpu-limit", "1", duration="4s")
    assert run.code == 3, run.explain()
    assert "invalid: load generator CPU-saturated (worker 1 of 1 at >= 1% of a core" in run.stdout
    assert "INVALID: load generator CPU-saturated (exit code 3)" in run.stdout


def test_an_unreachable_gateway_is_not_run(stack: Stack, tmp_path: Path) -> None:
    run = run_loadtest(stack, "login-storm", tmp_path / "out", host="http://127.0.0.1:9")
    assert run.code == 4, run.explain()
    assert "cannot reach the gateway at http://127.0.0.1:9" in run.stdout
    assert not (tmp_path / "out").exists()


# --- the rules on made-up figures -----------------------------------------------------------------------

@pytest.mark.parametrize(("thresholds", "failed"), [
    (Thresholds(), []),
    (Thresholds(max_fail_ratio=0.001), ["--max-fail-ratio"]),
    (Thresholds(p95_ms=250, p99_ms=399), ["--p99-ms"]),
    (Thresholds(target_rps=190), ["--target-rps"]),
    (Thresholds(target_rps=189, p95_ms=249.5, max_fail_ratio=None), ["--p95-ms"]),
])
def test_each_threshold(thresholds: Thresholds, failed: list[str]) -> None:
    verdicts = evaluate(summarize(FIGURES), thresholds)
    assert [v.option for v in verdicts if not v.passed] == failed
    assert exit_code(verdicts, cpu_saturation({})) == (1 if failed else 0)


def test_a_threshold_miss_says_by_how_much() -> None:
    (p99,) = evaluate(summarize(FIGURES), Thresholds(max_fail_ratio=None, p99_ms=320))
    assert p99.text == "FAIL --p99-ms: p99 400 ms > 320 ms (over by 80 ms, 25% above the threshold)"
    (ratio,) = evaluate(summarize(FIGURES), Thresholds(max_fail_ratio=0.001))
    assert ratio.text == "FAIL --max-fail-ratio: 0.0050 (10 of 2,000 requests) > 0.001 (over by 0.0040)"


def test_a_run_without_requests_fails() -> None:
    verdicts = evaluate(summarize({"elapsed_s": 0, "entries": []}), Thresholds())
    assert [(v.option, v.passed) for v in verdicts] == [("requests", False), ("--max-fail-ratio", True)]


def _review(confirmed: int, refused: int, approved: int, flow_failures: int = 0) -> dict[str, object]:
    return {"elapsed_s": 10.0, "entries": [
        entry("/api/v1/registrations/{id}/confirm", confirmed),
        entry("/api/v1/registrations/{id}/confirm (refused: major_mismatch_unacknowledged)", refused),
        entry("registration approved after review", approved + flow_failures, flow_failures, method="FLOW")]}


@pytest.mark.parametrize(("figures", "passed", "text"), [
    (_review(40, 3, 40), True, "ok   review: every registration submitted ended approved (40 of 40)"),
    (_review(40, 3, 37), False, ("FAIL review: 37 of 40 registrations submitted ended approved (0 went otherwise or "
                                 "waited too long, 3 undecided when the run ended: too few reviewers for the load?)")),
    (_review(40, 0, 39, flow_failures=1), False, ("FAIL review: 39 of 40 registrations submitted ended approved "
                                                  "(1 went otherwise or waited too long, 0 undecided when the run "
                                                  "ended: too few reviewers for the load?)")),
    (_review(0, 0, 0), False, "FAIL review: no registration was submitted for review"),
])
def test_every_submission_must_end_approved(figures: dict[str, object], passed: bool, text: str) -> None:
    verdict = every_submission_approved(summarize(figures))
    assert (verdict.option, verdict.passed, verdict.text) == ("review", passed, text)


@pytest.mark.parametrize(("samples", "saturated"), [
    ([95.0, 99.0, 20.0, 97.0, 99.0], False),  # never three seconds in a row
    ([40.0, 92.0, 100.0, 91.0], True),
    ([], False),
])
def test_cpu_saturation_needs_three_seconds_in_a_row(samples: list[float], saturated: bool) -> None:
    found = cpu_saturation({"workers": {"w1": [10.0], "w2": samples}})
    assert found.saturated is saturated, found.text
    assert exit_code([], found) == (3 if saturated else 0)


def test_locusts_own_warning_also_makes_a_run_invalid() -> None:
    assert cpu_saturation({"workers": {}, "locust_warning": True}).saturated
