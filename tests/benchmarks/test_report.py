"""The benchmark report: the Markdown table, the README's latest table, the PNG chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import benchmarks.__main__ as report
from benchmarks import chart

pytestmark = pytest.mark.unit

FIGURES = [
    {"benchmark": "lookups", "metric": "score_lookup_vs_noop", "value": 0.71, "unit": "×", "target": ">= 0.8",
     "passed": False},
    {"benchmark": "payments", "metric": "group_commit", "value": 7.87, "unit": "×", "target": ">= 5", "passed": True},
    {"benchmark": "seed", "metric": "seed_s", "value": 25.7, "unit": "s", "target": "<= 60", "passed": True},
    {"benchmark": "processes", "metric": "noop_rps", "value": 16992, "unit": "req/s", "target": None, "passed": None},
]


def test_the_table_gives_each_figure_its_verdict() -> None:
    lines = report.table(FIGURES).splitlines()
    assert lines[0].startswith("| benchmark | metric | value | target | verdict |")
    assert "| lookups | score_lookup_vs_noop | 0.71 × | >= 0.8 | FAIL |" in lines
    assert "| processes | noop_rps | 16,992 req/s |  |  |" in lines


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro\n\n{report.TABLE_START}\nold\n{report.TABLE_END}\n\nafter\n")
    monkeypatch.setattr(report, "README", readme)
    about = {"cpus": 2, "cpu_model": "test cpu", "memory_gib": 24.0, "python": "3.11", "commit": "abc1234"}
    report.update_readme(report.report(FIGURES, "20261124T000000Z", about, 600), "latest.png")
    text = readme.read_text()
    assert "old" not in text and text.startswith("# Benchmarks\n\nintro") and text.endswith("after\n")
    assert "commit abc1234" in text and "2 × test cpu" in text and "10.0 min" in text
    assert "| payments | group_commit | 7.87 × | >= 5 | pass |" in text
    assert "![ratios against their targets](results/latest.png)" in text
    readme.write_text("no markers")
    with pytest.raises(RuntimeError, match="markers"):
        report.update_readme("table", None)


def test_the_chart_draws_one_bar_per_ratio(tmp_path: Path) -> None:
    assert [f["metric"] for f in chart.ratio_figures(FIGURES)] == ["score_lookup_vs_noop", "group_commit"]
    path = chart.draw(FIGURES, tmp_path / "chart.png", "test run")
    assert path is not None
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == chart.WIDTH
        assert image.height == chart.TOP_PX + 2 * chart.ROW_PX + 40
    assert chart.draw(FIGURES[2:], tmp_path / "none.png", "no ratios") is None
