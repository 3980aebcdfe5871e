"""The rehearsal report: index.html with every section and summary.png, from a real short run and from a captured
rehearsal (``fixtures/rehearsal``: a score-release run of the load tests' stack, Locust's logs and HTML left
out); the README's evidence block.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from loadtest import readme_evidence, report
from loadtest.rehearsal_runs import read_metrics
from loadtest.sampler import Sampler, locust_children
from loadtest.summary import summarize
from tests.conftest import TEST_REDIS_URL
from tests.loadtest.conftest import Stack, run_loadtest

FIXTURE = Path(__file__).parent / "fixtures" / "rehearsal"
CHARTS = ("Requests/s", "Failures/s", "Expected refusals/s", "Latency p50", "Latency p95", "Latency p99",
          "Requests in flight", "Event-loop lag", "Shed/s", "Rate limiter/s", "Password hashing pool",
          "Redis and PostgreSQL CPU", "Load generator CPU")
SATURATED = "load generator CPU-saturated (worker 1 of 1 at >= 90% of a core for 4 s in a row, peak 99%)"


def _copy_fixture(tmp_path: Path) -> Path:
    report_dir = tmp_path / "20261203T170000Z"
    shutil.copytree(FIXTURE, report_dir)
    return report_dir


def _section(page: str, anchor: str) -> str:
    found = re.search(rf'<section class="run" id="{re.escape(anchor)}">(.*?)</section>', page, re.S)
    assert found, anchor
    return found[1]


def _titles(svg_html: str) -> list[str]:
    return [title.strip() for title in re.findall(r'<text x="\d+" y="16" class="ct">([^<(]+)', svg_html)]


def assert_complete(index: Path, runs: list[dict[str, Any]]) -> str:
    """The page: self-contained, every section, the verdict table, every run's charts; the PNG decodes."""
    page = index.read_text()
    assert not re.search(r'(src|href)="(https?:)?//|<script|<link|@import|url\(', page), "an outside asset"
    for section in ("machine", "calibration", "verdicts", "overview", "runs"):
        assert f'id="{section}"' in page, section
    table = re.search(r'<table class="verdicts" id="verdict-table">(.*?)</table>', page, re.S)
    assert table and table[1].count("<tr>") == len(runs) + 1
    png = (index.parent / "summary.png").read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG" and image.width == 1200 and image.height > 100
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert embedded and base64.b64decode(embedded[1]) == png
    return page


def _rehearsal(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"when": "2026-12-03T17:00:00Z",
            "machine": {"cpus": 2, "cpu_model": "test CPU", "memory_gib": 4.0, "python": "3.11", "commit": "abc1234"},
            "calibration": {"generator_noop_rps": 1400.0, "generator_bare_rps": 2100.0, "factor": 0.7,
                            "reference_noop_rps": 2000.0, "noop_path": "/healthz", "capacity_rps": 1400.0},
            "runs": runs, "passed": all(run["passed"] for run in runs)}


@pytest.mark.timeout(180)
def test_the_report_of_a_real_run(stack: Stack, tmp_path: Path) -> None:
    report_dir = tmp_path / "20261203T170000Z"
    run_dir = report_dir / "score-release-target"
    with Sampler(stack.gateway.url, stack.gateway.metrics_token(), TEST_REDIS_URL, stack.dsn,
                 run_dir / "metrics.jsonl", generator_pids=locust_children):
        run = run_loadtest(stack, "score-release", run_dir, "--max-fail-ratio", "0", users=6, duration="6s",
                           settings={"LOCUST_CSV_FULL_HISTORY": "true"})
    assert run.code == 0, run.explain()
    summary = summarize(run.figures)
    target = {"users": 6, "think_ms": 50, "target_rps": 2.0, "max_fail_ratio": 0.0,
              "p95_ms": {"all": 5000.0}, "p99_ms": {"all": 10000.0}, "refusals_allowed": {}}
    runs = [
        {"scenario": "score-release", "phase": "target", "dir": run_dir.name, "target": target,
         "verdicts": [{"name": "rate", "passed": True, "detail": f"{summary.good_rps:.1f} req/s >= 2.0 req/s"}],
         "passed": True, "invalid": None},
        # What a saturated generator's run looks like, and a chaos run whose directory never got written.
        {"scenario": "score-release", "phase": "double", "dir": "score-release-double", "target": target,
         "verdicts": [], "passed": False, "invalid": SATURATED},
        {"scenario": "score-release", "phase": "chaos:redis-pause", "dir": "score-release-chaos-redis-pause",
         "target": target, "verdicts": [{"name": "invariants", "passed": False, "detail": "not checked"}],
         "passed": False, "invalid": None},
    ]
    shutil.copytree(run_dir, report_dir / "score-release-double")
    (report_dir / "rehearsal.json").write_text(json.dumps(_rehearsal(runs)))

    index = report.write(report_dir)

    assert index == report_dir / "index.html"
    page = assert_complete(index, runs)
    target_run = _section(page, "run-score-release-target")
    assert _titles(target_run) == list(CHARTS)
    # Per request type (Locust's full history): the scenario's lookups are lines of their own.
    requests_chart = target_run.split('class="ct">Failures/s')[0]
    for row in summary.rows:
        if row.name.startswith("GET "):
            assert f"<title>{row.name}</title>" in requests_chart, row.name
    assert "limit 5,000 ms" in target_run and "target 2 req/s answered as due" in target_run
    lines = read_metrics(run_dir / "metrics.jsonl")
    assert len(lines) >= 6 and all(line["gateway"] for line in lines)
    assert "PostgreSQL: proc" in target_run
    for series in ("in flight", "slowest process", "capacity", "checks", "Redis", "PostgreSQL", "busiest process"):
        assert f"<title>{series}</title>" in target_run, series
    assert "invalid: generator saturated" in _section(page, "run-score-release-double")
    assert "invalid: generator saturated" not in target_run
    assert "Missing: the run&#x27;s directory" in _section(page, "run-score-release-chaos-redis-pause")


@pytest.mark.unit
def test_the_report_of_the_captured_rehearsal(tmp_path: Path) -> None:
    report_dir = _copy_fixture(tmp_path)
    rehearsal = json.loads((report_dir / "rehearsal.json").read_text())

    page = assert_complete(report.write(report_dir), rehearsal["runs"])

    assert "Rehearsal 2026-12-03T17:00:00Z: <span class=\"fail\">FAILED</span>" in page
    run = _section(page, "run-score-release-target")
    assert _titles(run) == list(CHARTS)
    assert run.count("<polyline") >= 10
    assert "invalid: generator saturated" in _section(page, "run-score-release-double")
    assert "factor: measured over reference" in page


@pytest.mark.unit
def test_a_run_without_full_history_or_metrics_is_drawn_from_what_there_is(tmp_path: Path) -> None:
    report_dir = _copy_fixture(tmp_path)
    run_dir = report_dir / "score-release-target"
    (run_dir / "metrics.jsonl").unlink()
    history = run_dir / "locust_stats_history.csv"
    rows = history.read_text().splitlines()
    history.write_text("\n".join([rows[0], *(row for row in rows[1:] if ",Aggregated," in row)]) + "\n")

    page = report.write(report_dir).read_text()

    run = _section(page, "run-score-release-target")
    assert "Missing: metrics.jsonl" in run
    assert "<title>all requests</title>" in run
    assert run.count("no metrics.jsonl") == 7  # the gateway's, the stores' and the generator's charts


@pytest.mark.unit
def test_the_readme_block_is_replaced_and_the_chart_kept_beside_it(tmp_path: Path) -> None:
    report_dir = _copy_fixture(tmp_path)
    readme, evidence = tmp_path / "README.md", tmp_path / "evidence"

    readme_evidence.update_readme(report_dir, readme=readme, evidence=evidence)
    readme.write_text(readme.read_text() + "\nMore text after the block.\n")
    readme_evidence.update_readme(report_dir, readme=readme, evidence=evidence)

    text = readme.read_text()
    assert text.startswith("# Load-test rehearsals")
    assert text.count(readme_evidence.START) == text.count(readme_evidence.END) == 1
    assert text.endswith("More text after the block.\n")
    block = text.split(readme_evidence.START)[1].split(readme_evidence.END)[0]
    assert "(commit abc1234) on 2 × test CPU, 4.0 GiB, Python 3.11: **FAILED**." in block
    assert "Calibration: the generator got 1,400 req/s from `/healthz` (reference 2,000)" in block
    table = [line for line in block.splitlines() if line.startswith("| score-release |")]
    assert len(table) == 3
    assert table[0].startswith("| score-release | target |") and table[0].endswith("| pass |")
    assert "(≥ 2)" in table[0] and "(≤ 5,000)" in table[0]
    assert "invalid: load generator CPU-saturated" in table[1]
    assert table[2].endswith("| FAIL (invariants) |")
    assert "![requests/s against the target and p95 against its limit, per scenario and phase](evidence/latest.png)" \
        in block
    with Image.open(evidence / "latest.png") as image:
        image.verify()
    assert json.loads((evidence / "latest.json").read_text())["when"] == "2026-12-03T17:00:00Z"


@pytest.mark.unit
def test_the_latest_report_is_the_newest_rehearsal(tmp_path: Path) -> None:
    for name in ("20261201T100000Z", "20261203T170000Z", "20261202T090000Z"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rehearsal.json").write_text("{}")
    (tmp_path / "20261204-101010-score-release").mkdir()  # a single run's directory, not a rehearsal
    assert readme_evidence.latest_report(tmp_path) == tmp_path / "20261203T170000Z"
    with pytest.raises(FileNotFoundError, match="run examgate rehearse first"):
        readme_evidence.latest_report(tmp_path / "none")


@pytest.mark.unit
def test_a_directory_without_a_rehearsal_changes_nothing(tmp_path: Path) -> None:
    readme, evidence = tmp_path / "README.md", tmp_path / "evidence"
    with pytest.raises(FileNotFoundError, match=r"holds no rehearsal\.json"):
        readme_evidence.update_readme(tmp_path, readme=readme, evidence=evidence)
    assert not readme.exists() and not evidence.exists()
