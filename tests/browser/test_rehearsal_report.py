"""The rehearsal report opens in a browser from its file: the verdict table, the overview and the charts show.

The report is written from the captured rehearsal of the load tests (``tests/loadtest/fixtures/rehearsal``);
no gateway is needed, so this module never starts the browser tests' stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from loadtest import report
from tests.browser.conftest import DESKTOP, Shots

FIXTURE = Path(__file__).resolve().parent.parent / "loadtest" / "fixtures" / "rehearsal"


def test_the_rehearsal_report_opens_with_its_verdict_table(browser: Any, shots: Shots, tmp_path: Path) -> None:
    report_dir = tmp_path / "20261203T170000Z"
    shutil.copytree(FIXTURE, report_dir)
    index = report.write(report_dir)
    page = shots.watch(browser.new_page(**DESKTOP))
    page.goto(index.as_uri())

    table = page.locator("#verdict-table")
    assert table.is_visible()
    assert table.locator("tr").count() == 4  # the header and three runs
    assert table.locator("td.pass").count() == 1 and table.locator("td.invalid").count() == 1
    shots.take(page, "rehearsal-report")
    box = table.bounding_box()
    assert box is not None and box["y"] < DESKTOP["viewport"]["height"]  # on the first screen, not below the fold
    assert page.evaluate("document.querySelector('img.overview').naturalWidth") == 1200
    charts = page.locator("#run-score-release-target svg.chart")
    assert charts.count() == 13 and charts.first.is_visible()
    assert page.locator("#run-score-release-double p.invalid").inner_text().startswith("invalid: generator saturated")
    page.locator("#verdict-table a").first.click()
    assert page.evaluate("location.hash") == "#run-score-release-target"
    shots.take(page, "first-run")
    page.close()
