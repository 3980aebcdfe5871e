"""The committed evidence: the latest rehearsal's summary in ``loadtest/README.md``, as ``benchmarks/README.md`` has
the latest benchmarks.

``python -m loadtest.readme_evidence [REPORT_DIR]`` (default: the newest ``loadtest/reports/<ts>/`` holding a
``rehearsal.json``) replaces what lies between the README's markers with when and on what the rehearsal ran
(machine, commit), its calibration, one line per scenario and phase (requests/s answered as due against the
scaled target, p95 and p99 against their limits, failures, the verdict) and a link to the overview chart,
copied to ``loadtest/evidence/latest.png`` beside ``latest.json`` (the rehearsal's own record): the reports
directory is not committed, these two are. A README without the markers gets them at its end; a missing
README is created with a short introduction.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from loadtest.rehearsal_runs import (
    ALL,
    FAIL_KEYS,
    P95_KEYS,
    P99_KEYS,
    REHEARSAL_FILE,
    RPS_KEYS,
    closest_to_limit,
    criterion,
    judged,
    latency_limits,
    load_runs,
)
from loadtest.report import OVERVIEW_FILE, write
from loadtest.verdicts import number

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
EVIDENCE = HERE / "evidence"
REPORTS = HERE / "reports"
START = "<!-- rehearsal:start -->"
END = "<!-- rehearsal:end -->"
INTRO = """# Load-test rehearsals

`examgate rehearse` calibrates the load generator on this machine, runs every peak scenario at its
target and at twice it, and says with one verdict per scenario whether this build holds the opening
(docs/loadtest.md). Below: the latest rehearsal committed, with the machine and the commit it ran on.

"""

_WORDS: dict[bool | None, str] = {True: "**passed**", False: "**FAILED**", None: "not judged"}
_RUN_WORDS: dict[bool | None, str] = {True: "pass", False: "FAIL", None: "not judged"}

__all__ = ["calibration_line", "markdown", "update_readme", "latest_report"]


def latest_report(reports: Path = REPORTS) -> Path:
    """The newest rehearsal directory under ``reports`` (by name: ``<ts>`` sorts by time)."""
    found = sorted(path.parent for path in reports.glob(f"*/{REHEARSAL_FILE}"))
    if not found:
        raise FileNotFoundError(f"no {REHEARSAL_FILE} under {reports}/: run examgate rehearse first")
    return found[-1]


def _against(value: float | None, limit: float | None, *, at_least: bool, name: str = ALL) -> str:
    if value is None:
        return "-"
    text = number(round(value, 1))
    if limit is None:
        return text
    return f"{text} ({'≥' if at_least else '≤'} {number(limit)}{'' if name == ALL else f', {name}'})"


def _figure(value: Any) -> str:
    return number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def calibration_line(calibration: dict[str, Any]) -> str:
    """The calibration in a sentence: the generator's rates, the references and the factor."""
    get = calibration.get
    text = (f"Calibration: the generator got {_figure(get('generator_noop_rps', '?'))} req/s from "
            f"`{get('noop_path', 'the do-nothing route')}` (reference {_figure(get('reference_noop_rps', '?'))}) "
            f"and {_figure(get('generator_bare_rps', '?'))} from the bare aiohttp app; factor "
            f"{_figure(get('factor', '?'))}")
    if "capacity_rps" in calibration:
        text += f", rate targets are shares of {_figure(get('capacity_rps'))} req/s"
    return text + (f" ({get('note')})." if get("note") else ".")


def markdown(report_dir: Path, chart: str | None) -> str:
    """The block: when, on what, the calibration, the verdict table and the chart's link."""
    rehearsal: dict[str, Any] = json.loads((report_dir / REHEARSAL_FILE).read_text())
    machine = rehearsal.get("machine") or {}
    calibration = rehearsal.get("calibration") or {}
    overall = _WORDS[judged(rehearsal.get("passed"))]
    lines = [(f"Rehearsal {rehearsal.get('when') or report_dir.name} (commit {machine.get('commit') or 'unknown'}) "
             f"on {machine.get('cpus', '?')} × {machine.get('cpu_model', '?')}, {machine.get('memory_gib', '?')} GiB, "
             f"Python {machine.get('python', '?')}: {overall}.")]
    if calibration:
        lines.append(calibration_line(calibration))
    lines += ["", ("| scenario | phase | req/s answered as due (target) | p95 ms (limit) | p99 ms (limit) | "
                  "failures (max ratio) | verdict |"), "|---|---|---:|---:|---:|---:|---|"]
    for run in load_runs(report_dir, rehearsal):
        target = run.entry.get("target") or {}
        summary = run.summary
        rps = summary.good_rps if summary else None
        p95 = closest_to_limit(summary, latency_limits(target, P95_KEYS), "p95_ms")
        p99 = closest_to_limit(summary, latency_limits(target, P99_KEYS), "p99_ms")
        failures = "-"
        if summary is not None:
            limit = criterion(target, FAIL_KEYS)
            failures = f"{summary.total.failures:,} of {summary.total.requests:,}"
            failures += f" ({number(limit)})" if limit is not None else ""
        invalid = run.invalid()
        verdict = (f"invalid: {invalid}" if invalid else
                   _RUN_WORDS[judged(run.entry.get("passed"))])
        missed = [str(v.get("name")) for v in run.entry.get("verdicts") or [] if not v.get("passed")]
        if missed and not invalid:
            verdict += f" ({', '.join(missed)})"
        lines.append(f"| {run.entry.get('scenario', '?')} | {run.entry.get('phase', '?')} | "
                     f"{_against(rps, criterion(target, RPS_KEYS), at_least=True)} | "
                     f"{_against(p95.value_ms, p95.limit_ms, at_least=False, name=p95.name)} | "
                     f"{_against(p99.value_ms, p99.limit_ms, at_least=False, name=p99.name)} | {failures} | "
                     f"{verdict.replace('|', '/')} |")
    if chart:
        lines += ["", f"![requests/s against the target and p95 against its limit, per scenario and phase]({chart})"]
    return "\n".join(lines) + "\n"


def update_readme(report_dir: Path, readme: Path = README, evidence: Path = EVIDENCE) -> Path:
    """Copy the rehearsal's chart and record to ``evidence`` and put its summary between ``readme``'s markers."""
    report_dir = Path(report_dir)
    if not (report_dir / REHEARSAL_FILE).is_file():
        raise FileNotFoundError(f"{report_dir} holds no {REHEARSAL_FILE}: not a rehearsal's report directory")
    evidence.mkdir(parents=True, exist_ok=True)
    if not (report_dir / OVERVIEW_FILE).exists():
        write(report_dir)
    chart = None
    if (report_dir / OVERVIEW_FILE).exists():
        shutil.copyfile(report_dir / OVERVIEW_FILE, evidence / "latest.png")
        chart = (evidence / "latest.png").relative_to(readme.parent).as_posix() if evidence.is_relative_to(
            readme.parent) else str(evidence / "latest.png")
    shutil.copyfile(report_dir / REHEARSAL_FILE, evidence / "latest.json")
    block = f"{START}\n{markdown(report_dir, chart)}{END}"
    text = readme.read_text() if readme.exists() else INTRO
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
    return readme


def main(argv: list[str]) -> int:
    """``python -m loadtest.readme_evidence [REPORT_DIR]``."""
    try:
        report_dir = Path(argv[0]) if argv else latest_report()
        readme = update_readme(report_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{readme}: the summary of {report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
