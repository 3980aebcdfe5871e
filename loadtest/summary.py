"""A run's figures per request name, from the ``summary.json`` the Locust master writes, as a table.

The master writes one entry per recorded name (refusals under their own, see ``answers``) and
the percentiles of every served request together; here the entries are folded back into one row
per request: requests (served and refused), req/s, p50/p95/p99 of the served ones, failures and
expected refusals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loadtest.answers import split_name


@dataclass
class Row:
    """One request name's figures; percentiles are of served requests (None when none was served)."""

    name: str
    requests: int = 0
    failures: int = 0
    refused: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    def rps(self, elapsed_s: float) -> float:
        """Requests per second over the run."""
        return self.requests / elapsed_s if elapsed_s > 0 else 0.0


@dataclass
class Summary:
    """The rows of a run, its totals and what the run was."""

    rows: list[Row]
    total: Row
    elapsed_s: float
    served_requests: int
    served_failures: int
    raw: dict[str, Any]

    @property
    def good_rps(self) -> float:
        """Requests per second answered as due: neither failures nor expected refusals."""
        good = self.served_requests - self.served_failures
        return good / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def fail_ratio(self) -> float:
        """Failures over every request made."""
        return self.total.failures / self.total.requests if self.total.requests else 0.0


def summarize(figures: dict[str, Any]) -> Summary:
    """Fold the master's entries into one row per request name, sorted by name."""
    rows: dict[str, Row] = {}
    for entry in figures.get("entries", []):
        base, reason = split_name(entry["name"])
        label = f"{entry['method']} {base}".strip()
        row = rows.setdefault(label, Row(label))
        row.requests += int(entry["requests"])
        row.failures += int(entry["failures"])
        if reason is None:
            row.p50_ms, row.p95_ms, row.p99_ms = entry["p50_ms"], entry["p95_ms"], entry["p99_ms"]
        else:
            row.refused += int(entry["requests"])
            row.reasons[reason] += int(entry["requests"])
    served = figures.get("served") or {}
    total = Row("total", requests=sum(r.requests for r in rows.values()),
                failures=sum(r.failures for r in rows.values()), refused=sum(r.refused for r in rows.values()),
                p50_ms=served.get("p50_ms"), p95_ms=served.get("p95_ms"), p99_ms=served.get("p99_ms"))
    for row in rows.values():
        total.reasons.update(row.reasons)
    return Summary(sorted(rows.values(), key=lambda r: r.name), total, float(figures.get("elapsed_s") or 0.0),
                   int(served.get("requests") or 0), int(served.get("failures") or 0), figures)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(summary: Summary) -> str:
    """The table: one line per request name, then the totals and the expected refusals by reason."""
    header = ("request", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "refused")
    lines = [header]
    for row in [*summary.rows, summary.total]:
        lines.append((row.name, f"{row.requests:,}", f"{row.rps(summary.elapsed_s):,.1f}", _ms(row.p50_ms),
                      _ms(row.p95_ms), _ms(row.p99_ms), f"{row.failures:,}", f"{row.refused:,}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        numbers = (cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True))
        return "  ".join([line[0].ljust(widths[0]), *numbers])

    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines[1:-1]]
    out += ["  ".join("-" * w for w in widths), fmt(lines[-1])]
    if summary.total.refused:
        reasons = ", ".join(f"{reason} ×{count:,}" for reason, count in summary.total.reasons.most_common())
        out.append(f"expected refusals (not failures): {reasons}")
    failures = summary.raw.get("failures") or []
    if failures:
        out.append("failures:")
        out += [f"  {f['occurrences']:>6,} × {f['method']} {f['name']}: {f['error']}" for f in failures[:8]]
    return "\n".join(out)
