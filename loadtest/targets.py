"""The rehearsal's pass criteria (``loadtest/targets.toml``), scaled to the machine and judged on a run's figures.

The file declares, per scenario, the load (users and think time), the rate it must answer as a
share of what the calibration found the do-nothing route gives (``rps_share_of_noop``), p95/p99 per
request name (``"POST /api/v1/sessions"``, as Locust names it) or for ``all`` served requests, the
largest share of failed requests, and which refusals may happen and how often (by reason as the
users record them: ``"429"``, ``"503 overloaded"``, ``already_registered``, ``site_full``…). The
``[double]`` table says what changes at twice the users: no rate target, overload refusals allowed,
failures still not. ``criteria`` turns a scenario and a phase into the figures one run must show,
with the rate and the users multiplied by the calibration's factor (``loadtest.calibrate``);
``judge`` checks a run's ``Summary`` against them, one verdict per figure.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.summary import Summary
from loadtest.verdicts import number

__all__ = ["TARGETS_FILE", "ALL", "PHASES", "Criteria", "FigureVerdict", "Targets", "TargetsError", "judge", "load"]

TARGETS_FILE = Path(__file__).resolve().parent / "targets.toml"
ALL = "all"  # a latency bound on every served request together
PHASES = ("target", "double")
BARE = "bare"  # the key of the bare aiohttp app's reference rate in [calibration] reference_rps
NOOP_PATH = "/_bench/noop"  # the shares are of this route's rate


class TargetsError(ValueError):
    """The targets file is missing, not TOML, or declares something unknown; the message says what and where."""


class FigureVerdict(NamedTuple):
    """One figure of a run checked: what (``p95 POST /api/v1/sessions``), whether it held, and the figures."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Criteria:
    """What one run (a scenario at a phase) is run with and must show; the rate already scaled to the machine."""

    users: int
    think_ms: int
    target_rps: float | None
    max_fail_ratio: float
    p95_ms: Mapping[str, float] = field(default_factory=dict)
    p99_ms: Mapping[str, float] = field(default_factory=dict)
    refusals: Mapping[str, float] = field(default_factory=dict)  # reason -> largest share of the requests

    def as_json(self) -> dict[str, Any]:
        """The criteria as ``rehearsal.json`` shows them."""
        return {"users": self.users, "think_ms": self.think_ms,
                "target_rps": None if self.target_rps is None else round(self.target_rps, 1),
                "max_fail_ratio": self.max_fail_ratio, "p95_ms": dict(self.p95_ms), "p99_ms": dict(self.p99_ms),
                "refusals_allowed": dict(self.refusals)}


@dataclass(frozen=True)
class Phase:
    """A scenario's figures for one phase as the file declares them (before scaling)."""

    users: float  # the target's users, before the calibration's factor
    users_factor: float  # the phase's users over the target's (2 at double)
    think_ms: int
    rps_share_of_noop: float | None
    max_fail_ratio: float
    p95_ms: Mapping[str, float]
    p99_ms: Mapping[str, float]
    refusals: Mapping[str, float]


@dataclass(frozen=True)
class Targets:
    """The whole file: how runs and the calibration are made, and each scenario's phases."""

    processes: int
    duration_s: int
    cpu_limit_pct: float
    calibration_users: int
    calibration_duration_s: int
    reference_rps: Mapping[str, float]  # path (or "bare") -> req/s on the machine the figures were set on
    edge_slowdown_allowed: float  # how far the do-nothing route may fall against the bare floor
    scenarios: Mapping[str, Mapping[str, Phase]]  # scenario -> phase -> figures
    path: Path

    def criteria(self, scenario: str, phase: str, factor: float, capacity_rps: float) -> Criteria:
        """The figures of ``scenario`` at ``phase``: users times ``factor``, rate as a share of ``capacity_rps``."""
        declared = self.scenarios[scenario][phase]
        at_target = max(1, math.ceil(declared.users * factor - 1e-9))
        users = max(1, math.ceil(at_target * declared.users_factor - 1e-9))  # double: exactly twice the target's
        rate = None if declared.rps_share_of_noop is None else declared.rps_share_of_noop * capacity_rps
        return Criteria(users, declared.think_ms, rate, declared.max_fail_ratio, declared.p95_ms, declared.p99_ms,
                        declared.refusals)


_RUN_KEYS = {"processes", "duration_s", "cpu_limit_pct"}
_CALIBRATION_KEYS = {"users", "duration_s", "reference_rps", "edge_slowdown_allowed"}
_PHASE_KEYS = {"users", "users_factor", "think_ms", "rps_share_of_noop", "max_fail_ratio", "p95_ms", "p99_ms",
               "refusals"}


def load(path: Path = TARGETS_FILE, known: Any = None) -> Targets:
    """Read and check the targets file; ``known`` (scenario names) refuses a scenario no locustfile runs."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TargetsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError(f"{path}: {exc}") from None
    run = _table(raw, "run", _RUN_KEYS)
    calibration = _table(raw, "calibration", _CALIBRATION_KEYS)
    double = _table(raw, "double", _PHASE_KEYS - {"users", "think_ms"})
    references = {str(k): _positive(v, f"calibration.reference_rps.{k}") for k, v in
                  _mapping(calibration.get("reference_rps"), "calibration.reference_rps").items()}
    if NOOP_PATH not in references or BARE not in references:
        raise TargetsError(f"{path}: calibration.reference_rps needs {NOOP_PATH!r} and {BARE!r}")
    scenarios: dict[str, dict[str, Phase]] = {}
    for name in _mapping(raw.get("scenarios"), "scenarios"):
        if known is not None and name not in known:
            raise TargetsError(f"{path}: unknown scenario {name!r} (known: {', '.join(known)})")
        where = f"scenarios.{name}"
        declared = _table(raw["scenarios"], name, (_PHASE_KEYS - {"users_factor"}) | {"double"}, where)
        target = _phase(declared, where, None)
        own_double = _table(declared, "double", _PHASE_KEYS - {"users", "think_ms"}, f"{where}.double")
        scenarios[name] = {"target": target, "double": _phase({**double, **own_double}, f"{where}.double", target)}
    if not scenarios:
        raise TargetsError(f"{path}: no [scenarios.<name>] table")
    return Targets(
        processes=int(_positive(run.get("processes", 1), "run.processes")),
        duration_s=int(_positive(run.get("duration_s", 20), "run.duration_s")),
        cpu_limit_pct=_positive(run.get("cpu_limit_pct", 90), "run.cpu_limit_pct"),
        calibration_users=int(_positive(calibration.get("users", 16), "calibration.users")),
        calibration_duration_s=int(_positive(calibration.get("duration_s", 5), "calibration.duration_s")),
        reference_rps=references,
        edge_slowdown_allowed=_share(calibration.get("edge_slowdown_allowed", 0.3),
                                     "calibration.edge_slowdown_allowed"),
        scenarios=scenarios, path=path,
    )


def _phase(table: Mapping[str, Any], where: str, base: Phase | None) -> Phase:
    """A phase's figures; the double phase (``base`` given) starts from the target's and keeps its refusals."""
    if base is None:
        if "users" not in table:
            raise TargetsError(f"{where}: users is required")
        users = _positive(table["users"], f"{where}.users")
        users_factor = 1.0
        think_ms = int(_at_least_zero(table.get("think_ms", 500), f"{where}.think_ms"))
        refusals: dict[str, float] = {}
    else:
        users, think_ms = base.users, base.think_ms
        users_factor = _positive(table.get("users_factor", 2.0), f"{where}.users_factor")
        refusals = dict(base.refusals)
    refusals.update({str(reason): _share(share, f"{where}.refusals.{reason}")
                     for reason, share in _mapping(table.get("refusals"), f"{where}.refusals").items()})
    share = table.get("rps_share_of_noop")
    return Phase(
        users=users, users_factor=users_factor, think_ms=think_ms,
        rps_share_of_noop=None if share is None else _share(share, f"{where}.rps_share_of_noop"),
        max_fail_ratio=_share(table.get("max_fail_ratio", 0.0), f"{where}.max_fail_ratio"),
        p95_ms=_latencies(table.get("p95_ms"), f"{where}.p95_ms"),
        p99_ms=_latencies(table.get("p99_ms"), f"{where}.p99_ms"),
        refusals=refusals,
    )


def _table(parent: Mapping[str, Any], key: str, allowed: set[str], where: str | None = None) -> dict[str, Any]:
    table = _mapping(parent.get(key), where or key)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise TargetsError(f"{where or key}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    return dict(table)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TargetsError(f"{where}: must be a table")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TargetsError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _positive(value: Any, where: str) -> float:
    figure = _number(value, where)
    if figure <= 0:
        raise TargetsError(f"{where}: must be above 0, got {value!r}")
    return figure


def _at_least_zero(value: Any, where: str) -> float:
    figure = _number(value, where)
    if figure < 0:
        raise TargetsError(f"{where}: must be 0 or more, got {value!r}")
    return figure


def _share(value: Any, where: str) -> float:
    figure = _at_least_zero(value, where)
    if figure > 1:
        raise TargetsError(f"{where}: a share is at most 1, got {value!r}")
    return figure


def _latencies(value: Any, where: str) -> dict[str, float]:
    return {str(name): _positive(ms, f"{where}.{name}") for name, ms in _mapping(value, where).items()}


def _percent(share: float) -> str:
    return f"{number(round(share * 100, 2))}%"


def _rps(value: float) -> str:
    return f"{value:,.1f} req/s" if value >= 10 else f"{value:.2f} req/s"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


def _latency(summary: Summary, percentile: str, name: str, limit_ms: float) -> FigureVerdict:
    label = "all served requests" if name == ALL else name
    verdict = f"{percentile} {name}"
    if name == ALL:
        measured = getattr(summary.total, f"{percentile}_ms")
    else:
        row = next((row for row in summary.rows if row.name == name), None)
        measured = None if row is None else getattr(row, f"{percentile}_ms")
    if measured is None:
        return FigureVerdict(verdict, False, f"{percentile} of {label}: no served request to measure (<= "
                                             f"{_ms(limit_ms)} wanted)")
    if measured <= limit_ms:
        return FigureVerdict(verdict, True, f"{percentile} of {label} {_ms(measured)} <= {_ms(limit_ms)}")
    return FigureVerdict(verdict, False, f"{percentile} of {label} {_ms(measured)} > {_ms(limit_ms)}")


def judge(summary: Summary, criteria: Criteria) -> list[FigureVerdict]:
    """Every figure ``criteria`` sets, checked on the run's ``summary`` (refusals of a reason not allowed fail)."""
    verdicts: list[FigureVerdict] = []
    total = summary.total
    if criteria.target_rps is not None:
        rps, target = summary.good_rps, criteria.target_rps
        if rps >= target:
            verdicts.append(FigureVerdict("rate", True, f"{_rps(rps)} answered as due >= {_rps(target)}"))
        else:
            verdicts.append(FigureVerdict("rate", False, f"{_rps(rps)} answered as due < {_rps(target)} "
                                                         f"({rps / target:.0%} of the target)"))
    for percentile, bounds in (("p95", criteria.p95_ms), ("p99", criteria.p99_ms)):
        for name, limit_ms in bounds.items():
            verdicts.append(_latency(summary, percentile, name, limit_ms))
    counted = f"{total.failures:,} of {total.requests:,} requests"
    if total.requests == 0:
        verdicts.append(FigureVerdict("failures", False, "no request was made"))
    elif summary.fail_ratio <= criteria.max_fail_ratio:
        verdicts.append(FigureVerdict("failures", True, f"failures {summary.fail_ratio:.4f} ({counted}) <= "
                                                        f"{number(criteria.max_fail_ratio)}"))
    else:
        verdicts.append(FigureVerdict("failures", False, f"failures {summary.fail_ratio:.4f} ({counted}) > "
                                                         f"{number(criteria.max_fail_ratio)}"))
    for reason, count in sorted(total.reasons.items()):
        share = count / total.requests if total.requests else 0.0
        allowed = criteria.refusals.get(reason)
        seen = f"refused {reason}: {count:,} of {total.requests:,} requests ({_percent(share)})"
        if allowed is None:
            verdicts.append(FigureVerdict(f"refused {reason}", False, f"{seen}, not an expected refusal here"))
        elif share <= allowed:
            verdicts.append(FigureVerdict(f"refused {reason}", True, f"{seen} <= {_percent(allowed)} allowed"))
        else:
            verdicts.append(FigureVerdict(f"refused {reason}", False, f"{seen} > {_percent(allowed)} allowed"))
    return verdicts
