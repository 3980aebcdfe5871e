"""``rehearsal.json``: the record of a rehearsal's runs, which the soak and chaos commands add theirs to.

The layout is the rehearsal's (``loadtest/reports/<ts>/rehearsal.json``: when, machine, calibration,
runs, passed); a soak or chaos run made on its own starts a record without a calibration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.rehearse import machine  # the machine and commit, as the rehearsal records them
from loadtest.verdicts import Verdict

__all__ = ["append_run", "machine", "run_entry"]


def append_run(report_dir: Path, run: dict[str, Any]) -> Path:
    """Add one run to ``report_dir/rehearsal.json`` (made when absent, without a calibration); its path.

    A run of the same scenario, phase and directory replaces the earlier one; ``passed`` is every run's.
    """
    path = report_dir / "rehearsal.json"
    report_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        record = json.loads(path.read_text())
    else:
        record = {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
                  "calibration": None, "runs": [], "passed": True}
    key = (run["scenario"], run["phase"], run["dir"])
    record["runs"] = [r for r in record.get("runs", []) if (r.get("scenario"), r.get("phase"), r.get("dir")) != key]
    record["runs"].append(run)
    record["passed"] = all(r.get("passed") and not r.get("invalid") for r in record["runs"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    tmp.replace(path)
    return path


def run_entry(scenario: str, phase: str, run_dir: Path, target: dict[str, Any], verdicts: Sequence[Verdict],
              invalid: str | None) -> dict[str, Any]:
    """One entry of ``rehearsal.json``'s ``runs``."""
    return {"scenario": scenario, "phase": phase, "dir": run_dir.name, "target": target,
            "verdicts": [{"name": v.option, "passed": v.passed, "detail": v.text} for v in verdicts],
            "passed": all(v.passed for v in verdicts) and invalid is None, "invalid": invalid}
