"""A rehearsal's report: ``index.html`` (one self-contained page) and ``summary.png`` in the rehearsal's directory.

``write(report_dir)`` reads ``rehearsal.json`` and every run directory it names (Locust's CSVs, the
run's ``summary.json``, the sampler's ``metrics.jsonl``; ``loadtest.rehearsal_runs``) and writes:

1. ``summary.png``: per scenario and phase, the requests/s answered as due against the (scaled)
   target and the served requests' p95 against its limit (``loadtest.charts.draw_overview``);
2. ``index.html``: the machine and commit; the calibration (the generator against the gateway's
   do-nothing route and the bare aiohttp app, the factor applied to the targets); a table of
   verdicts per scenario and phase with the scaled criteria and what was achieved; the overview
   chart; then per run its table of request types and charts over time: requests/s, failures/s,
   expected refusals/s and p50/p95/p99 per request type (``locust_stats_history.csv``, per type when
   Locust ran with ``--csv-full-history``, else all requests together), the gateway's own figures
   (requests in flight, event-loop lag, shedding, the rate limiter's decisions, the password hashing
   pool), Redis's and PostgreSQL's CPU, and the load generator's CPU, marked "invalid: generator
   saturated" when a process of it was at the limit for seconds in a row (``loadtest.verdicts``).

The page holds its charts as inline SVG and the overview as an embedded PNG: no script, no outside
asset. A run whose directory or files are missing is shown as such; the rest of the report is written.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from loadtest.charts import Bar, Limit, OverviewRow, Points, draw_overview, line_chart
from loadtest.rehearsal_runs import (
    ALL,
    HISTORY_FILE,
    METRICS_FILE,
    P95_KEYS,
    P99_KEYS,
    REHEARSAL_FILE,
    RPS_KEYS,
    History,
    RunData,
    closest_to_limit,
    criterion,
    judged,
    latency_limits,
    load_runs,
)
from loadtest.summary import Summary
from loadtest.verdicts import CPU_LIMIT_PCT, cpu_saturation, number

INDEX_FILE = "index.html"
OVERVIEW_FILE = "summary.png"
LEAD_S = 3.0  # the charts start this long before the first user, to show the system idle
CALIBRATION_FIGURES = {
    "noop_path": "the do-nothing route measured",
    "generator_noop_rps": "the load generator against the gateway's do-nothing route, req/s",
    "generator_bare_rps": "the load generator against the bare aiohttp app (the floor), req/s",
    "reference_noop_rps": "the do-nothing rate on the machine the targets were written on, req/s",
    "reference_bare_rps": "the bare app's rate on that machine, req/s",
    "factor": "factor: measured over reference (scales the rate targets and the users)",
    "capacity_rps": "the rate the targets' shares are of, req/s",
    "noop_share_of_bare": "the do-nothing route's share of the bare app's rate here",
    "reference_share_of_bare": "the same share on the reference machine",
    "edge_slowdown_allowed": "how far below the reference that share may fall",
    "verdict": "the edge's check (a slower gateway, not a slower machine)",
    "users": "calibration users", "duration_s": "calibration run, s", "processes": "load generator processes",
    "note": "note",
}
PG_SOURCES = {
    "proc": "PostgreSQL: proc, the CPU of the server's processes (the postmaster, its backends and helpers)",
    "pg_stat_activity": "PostgreSQL: pg_stat_activity, client backends active each second (backend-seconds: an "
                        "upper bound of their CPU, waiting on locks or I/O counts too)",
}
_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

__all__ = ["INDEX_FILE", "OVERVIEW_FILE", "write", "overview_rows", "rates"]


# --- the gateway's, the stores' and the generator's series -----------------------------------------------------

def _split_sample(name: str) -> tuple[str, dict[str, str]]:
    metric, _, rest = name.partition("{")
    return metric, dict(_LABELS.findall(rest))


def _gauge(metrics: list[dict[str, Any]], metric: str, label: str | None = None, pick: str = "sum",
           name: str | None = None) -> dict[str, Points]:
    """A gateway figure over time, one series per value of ``label`` (else one, ``name``d), summed or maxed across
    samples."""
    series: dict[str, Points] = defaultdict(list)
    for line in metrics:
        values: dict[str, list[float]] = defaultdict(list)
        for sample_name, value in (line.get("gateway") or {}).items():
            sample, labels = _split_sample(sample_name)
            if sample == metric:
                values[labels.get(label, metric) if label else (name or metric)].append(float(value))
        for key, found in values.items():
            series[key].append((float(line["t"]), max(found) if pick == "max" else sum(found)))
    return dict(series)


def rates(points: Points) -> Points:
    """Per-second rate of a running total; a drop (a restarted process's counter) is skipped, not drawn negative."""
    out: Points = []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t1 > t0 and v1 >= v0:
            out.append((t1, (v1 - v0) / (t1 - t0)))
    return out


def _moving(totals: dict[str, Points]) -> dict[str, Points]:
    """The per-second rates of the running totals that moved at all (a kind that never happened draws no line)."""
    moved = {name: rates(points) for name, points in totals.items()}
    return {name: points for name, points in moved.items() if any(value for _, value in points)}


def _field(metrics: list[dict[str, Any]], key: str) -> Points:
    return [(float(line["t"]), float(line[key])) for line in metrics if isinstance(line.get(key), (int, float))]


def _shift(series: dict[str, Points], start: float, scale: float = 1.0) -> dict[str, Points]:
    """Seconds from ``start`` (what came before is left out), values times ``scale``."""
    return {name: [(t - start, v * scale) for t, v in points if t >= start] for name, points in series.items()}


# --- the page ----------------------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans CJK SC",sans-serif;margin:24px auto;
max-width:1200px;padding:0 16px;color:#1b1b1b}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 6px;border-top:1px solid #ddd;padding-top:18px}
h3{font-size:15px;margin:18px 0 6px}table{border-collapse:collapse;margin:8px 0 14px}
th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#1d6b3f;font-weight:600}
.fail{color:#b3261e;font-weight:600}.invalid{color:#6b5900;font-weight:600}
p.invalid{background:#fff4c2;border:1px solid #e0c200;padding:6px 10px}
.grid{display:flex;flex-wrap:wrap;gap:10px}svg.chart{border:1px solid #eee;background:#fff}
svg .ct{font-size:13px;font-weight:600}svg .tick{font-size:10px;fill:#666}svg .legend{font-size:10px}
svg line.grid{stroke:#eee}svg line.axis{stroke:#999}svg line.limit{stroke:#b3261e;stroke-dasharray:5 4}
svg .limitlabel{font-size:10px;fill:#b3261e}svg .empty{font-size:12px;fill:#999}
ul.v{margin:0;padding-left:16px}small,.note{color:#666}img.overview{max-width:100%;border:1px solid #eee}
"""


def _verdict_cell(run: RunData) -> str:
    invalid = run.invalid()
    if invalid:
        return '<td class="invalid">INVALID</td>'
    if run.entry.get("passed") is True:
        return '<td class="pass">passed</td>'
    if run.entry.get("passed") is False:
        return '<td class="fail">FAILED</td>'
    return "<td>not judged</td>"


def _criteria_text(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "none"
        return "; ".join(f"{escape(str(k))} {_criteria_text(v)}" for k, v in value.items())
    if isinstance(value, bool) or value is None:
        return escape(str(value))
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, list):
        return ", ".join(_criteria_text(v) for v in value)
    return escape(str(value))


def _achieved(run: RunData) -> str:
    summary = run.summary
    if summary is None:
        return "not measured"
    total = summary.total
    parts = [f"{summary.good_rps:,.1f} req/s answered as due", f"p95 {_ms(total.p95_ms)}", f"p99 {_ms(total.p99_ms)}",
             f"failures {total.failures:,} of {total.requests:,} ({summary.fail_ratio:.4f})"]
    if total.refused:
        parts.append(f"expected refusals {total.refused:,}")
    return "<br>".join(parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _verdict_details(run: RunData) -> str:
    verdicts = run.entry.get("verdicts") or []
    items = [f'<li class="{"pass" if v.get("passed") else "fail"}">{escape(str(v.get("name", "")))}: '
             f'<span style="font-weight:normal;color:#1b1b1b">{escape(str(v.get("detail", "")))}</span></li>'
             for v in verdicts]
    invalid = run.invalid()
    if invalid:
        items.append(f'<li class="invalid">invalid: {escape(invalid)}</li>')
    return f'<ul class="v">{"".join(items)}</ul>' if items else "-"


def _verdict_table(runs: list[RunData]) -> str:
    rows = [("<tr><th>scenario</th><th>phase</th><th>verdict</th><th>criteria (scaled to this machine)</th>"
            "<th>achieved</th><th>verdicts</th></tr>")]
    for run in runs:
        entry = run.entry
        criteria = _criteria_text(entry.get("target")) if entry.get("target") else "-"
        rows.append(f'<tr><td><a href="#{run.anchor}">{escape(str(entry.get("scenario", "?")))}</a></td>'
                    f'<td>{escape(str(entry.get("phase", "?")))}</td>{_verdict_cell(run)}'
                    f"<td>{criteria}</td><td>{_achieved(run)}</td>"
                    f"<td>{_verdict_details(run)}</td></tr>")
    return f'<table class="verdicts" id="verdict-table">{"".join(rows)}</table>'


def _calibration(rehearsal: dict[str, Any]) -> str:
    calibration = rehearsal.get("calibration") or {}
    if not calibration:
        return '<p class="note">No calibration recorded: the criteria are as written.</p>'
    rows = []
    for key, value in calibration.items():
        if key == "verdict" and isinstance(value, dict):
            shown = (f'<span class="{"pass" if value.get("passed") else "fail"}">'
                     f'{"ok" if value.get("passed") else "FAIL"}</span> {escape(str(value.get("detail", "")))}')
        else:
            shown = _criteria_text(value)
        rows.append(f"<tr><td>{escape(CALIBRATION_FIGURES.get(key, key))}</td><td>{shown}</td></tr>")
    return f'<table id="calibration-table"><tr><th>measured</th><th>value</th></tr>{"".join(rows)}</table>'


def _machine(rehearsal: dict[str, Any]) -> str:
    machine = rehearsal.get("machine") or {}
    return (f"{escape(str(machine.get('cpus', '?')))} × {escape(str(machine.get('cpu_model', '?')))}, "
            f"{escape(str(machine.get('memory_gib', '?')))} GiB, Python {escape(str(machine.get('python', '?')))}, "
            f"commit {escape(str(machine.get('commit') or 'unknown'))}")


def _request_table(summary: Summary) -> str:
    rows = [("<tr><th>request</th><th>requests</th><th>req/s</th><th>p50</th><th>p95</th><th>p99</th>"
            "<th>failures</th><th>expected refusals</th></tr>")]
    for row in [*summary.rows, summary.total]:
        refused = ", ".join(f"{reason} ×{count:,}" for reason, count in row.reasons.most_common())
        rows.append(f"<tr><td>{escape(row.name)}</td><td class='n'>{row.requests:,}</td>"
                    f"<td class='n'>{row.rps(summary.elapsed_s):,.1f}</td><td class='n'>{_ms(row.p50_ms)}</td>"
                    f"<td class='n'>{_ms(row.p95_ms)}</td><td class='n'>{_ms(row.p99_ms)}</td>"
                    f"<td class='n'>{row.failures:,}</td><td>{escape(refused) or '-'}</td></tr>")
    failures = summary.raw.get("failures") or []
    listed = "".join(f"<li>{int(f.get('occurrences', 0)):,} × {escape(str(f.get('method', '')))} "
                     f"{escape(str(f.get('name', '')))}: {escape(str(f.get('error', ''))[:300])}</li>"
                     for f in failures[:8])
    return f'<table class="requests">{"".join(rows)}</table>' + (f"<p>Failures:</p><ul>{listed}</ul>" if listed else "")


def _run_charts(run: RunData) -> str:
    target = run.entry.get("target") or {}
    history = run.history or History()
    moments = [t for t in (history.start(), run.metrics[0]["t"] if run.metrics else None) if t is not None]
    start = min(moments, default=0.0)
    if history.users_from is not None:  # from just before the users start: not the run's own start-up
        start = max(start, history.users_from - LEAD_S)
    ends = [t for points in history.requests.values() for t, _ in points] + [m["t"] for m in run.metrics]
    span = max(ends, default=start) - start
    chart = _ChartMaker(span)
    no_history = f"no {HISTORY_FILE}" if run.history is None else ""
    rps = criterion(target, RPS_KEYS)
    p95, p99 = _limit_lines(latency_limits(target, P95_KEYS)), _limit_lines(latency_limits(target, P99_KEYS))
    requests = [
        chart("Requests/s", _shift(history.requests, start), "per request type, refusals included",
              [Limit(rps, f"target {number(rps)} req/s answered as due")] if rps else [], no_history),
        chart("Failures/s", _shift(history.failures, start), "", [], no_history or "no failure"),
        chart("Expected refusals/s", _shift(history.refusals, start), "", [], no_history or "no refusal"),
        chart("Latency p50", _shift(history.percentiles["p50"], start), "ms", [], no_history),
        chart("Latency p95", _shift(history.percentiles["p95"], start), "ms", p95, no_history),
        chart("Latency p99", _shift(history.percentiles["p99"], start), "ms", p99, no_history),
    ]
    metrics = run.metrics
    no_metrics = f"no {METRICS_FILE}" if not metrics else ""
    pool = _gauge(metrics, "examgate_password_pool_jobs", "state")
    pool["rejected/s"] = rates(_gauge(metrics, "examgate_password_pool_rejected", name="rejected")
                               .get("rejected", []))
    gateway = [
        chart("Requests in flight", _shift(_gauge(metrics, "examgate_requests_in_flight", name="in flight"), start),
              "every process", [], no_metrics),
        chart("Event-loop lag", _shift(_gauge(metrics, "examgate_event_loop_lag_last_seconds", pick="max",
                                              name="slowest process"),
                                       start, 1000.0), "ms, the latest of the slowest process", [], no_metrics),
        chart("Shed/s", _shift(_moving(_gauge(metrics, "examgate_shed_total", "reason")), start),
              "requests refused at once, by reason", [], no_metrics or "nothing shed"),
        chart("Rate limiter/s", _shift(_moving(_gauge(metrics, "examgate_ratelimit_events", "event")), start),
              "decisions and fallbacks that happened, by kind", [], no_metrics or "no rule checked"),
        chart("Password hashing pool", _shift(pool, start), "jobs in flight, capacity; refusals/s", [], no_metrics),
    ]
    stores = {"Redis": rates(_field(metrics, "redis_cpu_s")), "PostgreSQL": rates(_field(metrics, "pg_cpu_s"))}
    sources = {str(m["pg_cpu_source"]) for m in metrics if m.get("pg_cpu_source")}
    pg_note = "; ".join(PG_SOURCES.get(source, source) for source in sorted(sources))
    generator = _field(metrics, "generator_cpu_pct")
    cpu = [
        chart("Redis and PostgreSQL CPU", _shift(stores, start, 100.0), "% of one core", [], no_metrics),
        chart("Load generator CPU", _shift({"busiest process": generator}, start), "% of one core",
              [Limit(CPU_LIMIT_PCT, f"saturated at {CPU_LIMIT_PCT:g}%")], no_metrics),
    ]
    locust_cpu = ""
    if run.summary is not None:
        locust_cpu = escape(cpu_saturation(run.summary.raw.get("cpu") or {}).text)
    return (f'<h3>Requests</h3><div class="grid">{"".join(requests)}</div>'
            f'<h3>Gateway (/metrics)</h3><div class="grid">{"".join(gateway)}</div>'
            f'<h3>Stores and load generator</h3><div class="grid">{"".join(cpu)}</div>'
            f'<p class="note">{escape(pg_note)}{"<br>" if pg_note and locust_cpu else ""}'
            f"{'Locust workers’ own samples: ' + locust_cpu if locust_cpu else ''}</p>")


def _limit_lines(limits: dict[str, float], most: int = 4) -> list[Limit]:
    """A latency criterion's lines: the tightest ``most`` of them."""
    tightest = sorted(limits.items(), key=lambda item: item[1])[:most]
    return [Limit(ms, f"limit {number(ms)} ms" + ("" if name == ALL else f" {name}")) for name, ms in tightest]


class _ChartMaker:
    """Charts of one run, sharing its time axis."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s

    def __call__(self, title: str, series: dict[str, Points], unit: str, limits: list[Limit], note: str) -> str:
        return line_chart(title, series, unit, limits=limits, x_max=self.span_s, note=note)


def _run_section(run: RunData) -> str:
    invalid = run.invalid()
    mark = ""
    if invalid:
        saturated = "saturat" in invalid.lower()
        mark = (f'<p class="invalid">invalid: {"generator saturated" if saturated else "see why"} '
                f"— {escape(invalid)}</p>")
    missing = (f'<p class="note">Missing: {escape(", ".join(run.missing))} (in {escape(str(run.directory))}).</p>'
               if run.missing else "")
    table = _request_table(run.summary) if run.summary is not None else ""
    charts = _run_charts(run) if run.history is not None or run.metrics else ""
    return (f'<section class="run" id="{run.anchor}"><h2>{escape(run.title)}</h2>{mark}{missing}{table}{charts}'
            "</section>")


def overview_rows(runs: list[RunData]) -> list[OverviewRow]:
    """The overview chart's rows: achieved requests/s and p95 against the run's scaled criteria."""
    rows: list[OverviewRow] = []
    for run in runs:
        target = run.entry.get("target") or {}
        rps_target = criterion(target, RPS_KEYS)
        rps = run.summary.good_rps if run.summary is not None else None
        p95 = closest_to_limit(run.summary, latency_limits(target, P95_KEYS), "p95_ms")
        rows.append(OverviewRow(
            run.title,
            Bar(rps, rps_target, None if rps is None or rps_target is None else rps >= rps_target),
            Bar(p95.value_ms, p95.limit_ms,
                None if p95.value_ms is None or p95.limit_ms is None else p95.value_ms <= p95.limit_ms,
                "" if p95.name == ALL else p95.name),
            run.invalid()))
    return rows


def write(report_dir: Path) -> Path:
    """Write ``summary.png`` and ``index.html`` of the rehearsal in ``report_dir``; the path of ``index.html``."""
    report_dir = Path(report_dir)
    rehearsal: dict[str, Any] = json.loads((report_dir / REHEARSAL_FILE).read_text())
    runs = load_runs(report_dir, rehearsal)
    when = str(rehearsal.get("when") or report_dir.name)
    verdicts: dict[bool | None, tuple[str, str]] = {True: ("pass", "PASSED"), False: ("fail", "FAILED"),
                                                    None: ("", "not judged")}
    verdict = verdicts[judged(rehearsal.get("passed"))]
    png = draw_overview(overview_rows(runs), report_dir / OVERVIEW_FILE, f"Rehearsal {when}: {verdict[1]}")
    image = base64.b64encode(png.read_bytes()).decode()
    runs_html = "".join(_run_section(run) for run in runs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Rehearsal {escape(when)}: {verdict[1]}</title><style>{STYLE}</style></head><body>
<header><h1>Rehearsal {escape(when)}: <span class="{verdict[0]}">{verdict[1]}</span></h1>
<p id="machine">{_machine(rehearsal)}</p></header>
<section id="calibration"><h2>Calibration</h2>
<p class="note">Rates mean nothing across machines: before the runs the same generator is measured against the
gateway's do-nothing route and the bare aiohttp app, and the rate targets are scaled to what this machine
reached.</p>{_calibration(rehearsal)}</section>
<section id="verdicts"><h2>Verdicts</h2>{_verdict_table(runs) if runs else "<p>No run recorded.</p>"}</section>
<section id="overview"><h2>Overview</h2><img class="overview" alt="requests/s against the target and p95 against
its limit, per scenario and phase" src="data:image/png;base64,{image}"></section>
<section id="runs">{runs_html}</section>
<footer><p class="note">{escape(str(report_dir))} — the runs' Locust CSVs, summaries and sampled metrics are in
their directories beside this page.</p></footer>
</body></html>
"""
    index = report_dir / INDEX_FILE
    index.write_text(page, encoding="utf-8")
    return index
