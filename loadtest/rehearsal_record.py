"""``rehearsal.json``: the record of a rehearsal's runs, which the soak and chaos commands add theirs to.

The layout is the rehearsal's (``loadtest/reports/<ts>/rehearsal.json``: when, machine, calibration,
runs, passed); a soak or chaos run made on its own starts a record without a calibration.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.verdicts import Verdict

__all__ = ["append_run", "machine", "run_entry"]


def machine() -> dict[str, Any]:
    """The machine and commit a run was made on, as ``rehearsal.json`` records them."""
    import os

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages * page_size / (1 << 30), 1)
    except (ValueError, OSError):
        memory_gib = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": memory_gib,
            "python": platform.python_version(), "commit": commit}


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
