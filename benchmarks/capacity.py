"""``python -m benchmarks.capacity [--results FILE] …``: what a peak needs, from the measured costs per request.

The benchmarks record, per peak path, what one request costs (``benchmarks.costs``: the results'
``"costs"`` section). This module turns those costs and a peak (so many requests in so long) into
gateway cores, Redis shards and PostgreSQL write rate, with the formulas of ``docs/capacity.md``:

- peak rate ``λ = count / window_s × peak_factor`` (requests/s at the busiest second-scale stretch);
- gateway cores ``= ⌈λ × gateway_cpu_us / 10⁶ / gateway_utilisation⌉``;
- Redis shards ``= ⌈λ × redis_cpu_us / 10⁶ / redis_utilisation⌉`` (one shard is one main thread, one
  core); a path whose Redis work lives in **one slot** (a seat hold: one exam's inventory) cannot
  spread, so its rate is bounded by one shard whatever their number;
- PostgreSQL rows/s ``= λ × (pg_rows_written + redis_deferred_writes)`` (written now, or later by the
  write-behind from the stream entries the request appended), against the rows/s the payment
  notifications' group commit sustained in the same results (or ``--pg-rows-per-s``) × its utilisation;
- for a given deployment (``--gateway-cores``, ``--redis-shards``) each resource's ceiling
  ``λ_max`` (the peak rate it sustains at its utilisation); the smallest is the limit hit first;
- peaks sharing one slot at once (an opening's holds and polls: one exam) add up on one shard:
  ``Σ λ × redis_cpu_us / 10⁶`` against ``redis_utilisation``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Scenario:
    """A peak: ``count`` requests of ``path`` (or the first of ``paths`` measured) within ``window_s``."""

    name: str
    paths: tuple[str, ...]
    count: int
    window_s: float
    single_slot: bool = False  # the path's Redis work cannot spread over shards
    note: str = ""
    slot: str | None = None  # scenarios naming the same slot load the same shard at once


SCENARIOS = (
    Scenario("sign-in", ("sign_in",), 2_000_000, 30 * 60,
             note="2 million candidates signing in within 30 minutes"),
    Scenario("seat hold", ("seat_hold",), 500_000, 10 * 60, single_slot=True, slot="the exam's {exam:N}",
             note="500,000 seat holds in the first 10 minutes of an opening, one exam (one slot)"),
    Scenario("queue poll", ("queue_poll",), 5_000_000, 10 * 60, single_slot=True, slot="the exam's {exam:N}",
             note="the same 500,000 candidates polling the exam's waiting room (one slot) about 10 times each "
                  "over their wait (queueing.waiting_room.POLL_FRACTION)"),
    Scenario("score lookup", ("score_lookup_protected", "score_lookup"), 5_000_000, 60 * 60,
             note="5 million score lookups in the first hour of a release (captcha and rules on when measured so)"),
)


@dataclass(frozen=True)
class Assumptions:
    """The model's stated parameters."""

    peak_factor: float = 3.0  # busiest stretch over the window's average
    gateway_utilisation: float = 0.7  # of each gateway core
    redis_utilisation: float = 0.5  # of each shard's main thread
    pg_utilisation: float = 0.7  # of the measured PostgreSQL write rate
    pg_rows_per_s: float | None = None  # PostgreSQL write capacity; None: from the payment notifications
    gateway_cores: int = 16  # the deployment whose first limit is reported
    redis_shards: int = 3


def latest_results(directory: Path = RESULTS) -> Path:
    """The newest results file (by its timestamped name) with a non-empty ``costs`` section."""
    for path in sorted(directory.glob("*.json"), reverse=True):
        try:
            if json.loads(path.read_text()).get("costs"):
                return path
        except (OSError, ValueError):
            continue
    raise FileNotFoundError(f"no results with a costs section in {directory}: run python -m benchmarks "
                            "login seats lookups payments certificates")


def measured_pg_rows_per_s(costs: dict[str, dict[str, Any]]) -> float | None:
    """Rows/s PostgreSQL took from the payment notifications' group commit (a lower bound: one gateway core)."""
    paid = costs.get("payment_notification")
    if not paid or not paid.get("requests_per_s") or not paid.get("pg_rows_written"):
        return None
    return float(paid["requests_per_s"]) * float(paid["pg_rows_written"])


def plan(scenario: Scenario, cost: dict[str, Any], a: Assumptions, pg_rows_per_s: float | None) -> dict[str, Any]:
    """What ``scenario`` needs with the per-request ``cost``, and where its first limit is."""
    rate = scenario.count / scenario.window_s * a.peak_factor
    gateway_cpu_s = rate * cost["gateway_cpu_us"] / 1e6  # cores busy
    redis_cpu_s = rate * cost["redis_cpu_us"] / 1e6  # shard main threads busy
    pg_rows = rate * (cost["pg_rows_written"] + cost["redis_deferred_writes"])
    needs = {
        "peak_rate_per_s": rate,
        "gateway_cores": math.ceil(gateway_cpu_s / a.gateway_utilisation),
        "redis_shards": math.ceil(redis_cpu_s / a.redis_utilisation),
        "redis_commands_per_s": rate * cost["redis_commands"],
        "pg_rows_per_s": pg_rows,
        "pg_transactions_per_s": rate * cost["pg_transactions"],
    }
    shards = 1 if scenario.single_slot else a.redis_shards
    ceilings: dict[str, float | None] = {
        "gateway": a.gateway_cores * a.gateway_utilisation * 1e6 / cost["gateway_cpu_us"]
        if cost["gateway_cpu_us"] > 0 else None,
        "redis": shards * a.redis_utilisation * 1e6 / cost["redis_cpu_us"] if cost["redis_cpu_us"] > 0 else None,
        "postgresql": pg_rows_per_s * a.pg_utilisation / (pg_rows / rate)
        if pg_rows_per_s and pg_rows > 0 else None,
    }
    known = {name: value for name, value in ceilings.items() if value is not None}
    first = min(known, key=lambda name: known[name]) if known else None
    return {"scenario": scenario.name, "path": cost["path"], "needs": needs, "ceilings_per_s": ceilings,
            "redis_shards_usable": shards, "first_limit": first,
            "headroom": known[first] / rate if first else None}


def model(results: dict[str, Any], a: Assumptions) -> dict[str, Any]:
    """Every scenario's plan from a results file's costs (a scenario whose path was not measured: None)."""
    costs: dict[str, dict[str, Any]] = results.get("costs") or {}
    pg_capacity = a.pg_rows_per_s if a.pg_rows_per_s is not None else measured_pg_rows_per_s(costs)
    plans: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        path = next((p for p in scenario.paths if p in costs), None)
        plans.append(plan(scenario, {**costs[path], "path": path}, a, pg_capacity) if path
                     else {"scenario": scenario.name, "path": None})
    slots: dict[str, dict[str, Any]] = {}
    for scenario, p in zip(SCENARIOS, plans, strict=True):
        if scenario.slot and p["path"]:
            busy = p["needs"]["peak_rate_per_s"] * costs[p["path"]]["redis_cpu_us"] / 1e6
            slot = slots.setdefault(scenario.slot, {"scenarios": [], "main_thread_busy": 0.0})
            slot["scenarios"].append(scenario.name)
            slot["main_thread_busy"] += busy
    for slot in slots.values():  # the share of the peaks one shard's main thread sustains at its utilisation
        slot["sustains"] = a.redis_utilisation / slot["main_thread_busy"] if slot["main_thread_busy"] else None
    return {"costs": costs, "pg_rows_per_s": pg_capacity, "plans": plans, "slots": slots}


def _n(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(results: dict[str, Any], name: str, a: Assumptions) -> str:
    """The model as text: per-request costs, then per scenario its needs and its first limit."""
    m = model(results, a)
    machine = results.get("machine", {})
    lines = [(f"Costs from {name} (commit {machine.get('commit') or 'unknown'}, {machine.get('cpus')} × "
             f"{machine.get('cpu_model')}; steal % per benchmark: {results.get('steal_percent')})"), "",
             (f"{'path':<30}{'req/s':>9}{'gw CPU µs':>11}{'Redis cmds':>11}{'Redis CPU µs':>13}"
             f"{'PG rows':>9}{'deferred':>9}{'PG xacts':>9}  load 1m")]
    for path, c in m["costs"].items():
        load = c.get("load_average_1m", {})
        lines.append(f"{path:<30}{_n(c['requests_per_s']):>9}{_n(c['gateway_cpu_us'], 1):>11}"
                     f"{c['redis_commands']:>11.2f}{c['redis_cpu_us']:>13.2f}{c['pg_rows_written']:>9.3f}"
                     f"{c['redis_deferred_writes']:>9.3f}{c['pg_transactions']:>9.3f}  "
                     f"{load.get('min', '?')}–{load.get('max', '?')}")
    pg = m["pg_rows_per_s"]
    source = "--pg-rows-per-s" if a.pg_rows_per_s is not None else "payment notifications, group commit"
    lines += ["", (f"Assumptions: peak factor {a.peak_factor:g} over each window's average; gateway cores at "
              f"{a.gateway_utilisation:.0%}, Redis shards (one main thread each) at {a.redis_utilisation:.0%}, "
              f"PostgreSQL at {a.pg_utilisation:.0%} of {_n(pg)} rows/s ({source}). "
              f"Deployment for the first limit: {a.gateway_cores} gateway cores, {a.redis_shards} Redis shards."), ""]
    for p, scenario in zip(m["plans"], SCENARIOS, strict=True):
        if p["path"] is None:
            lines.append(f"{scenario.name}: not measured in these results ({' or '.join(scenario.paths)})")
            continue
        needs, ceil = p["needs"], p["ceilings_per_s"]
        lines += [
            f"{scenario.name} [{p['path']}]: {scenario.note}",
            (f"  peak {_n(needs['peak_rate_per_s'])}/s → {needs['gateway_cores']} gateway cores, "
            f"{needs['redis_shards']} Redis shard(s)"
            f"{' — more than one slot can have' if scenario.single_slot and needs['redis_shards'] > 1 else ''}"
            f" ({_n(needs['redis_commands_per_s'])} commands/s), "
            f"PostgreSQL {_n(needs['pg_rows_per_s'])} rows/s in {_n(needs['pg_transactions_per_s'])} transactions/s"),
            f"  ceilings with the deployment: gateway {_n(ceil['gateway'])}/s, Redis {_n(ceil['redis'])}/s"
            f"{' (one slot: one shard)' if scenario.single_slot else ''}, PostgreSQL {_n(ceil['postgresql'])}/s"
            f" → first limit: {p['first_limit']}"
            + (f", which sustains {p['headroom']:.2f}× the peak" if p["headroom"] is not None else ""),
        ]
    for name, slot in m["slots"].items():
        if len(slot["scenarios"]) > 1:
            lines.append(f"one slot, {name}, at once: {' + '.join(slot['scenarios'])} keep "
                         f"{slot['main_thread_busy']:.2f} of its shard's main thread busy; at "
                         f"{a.redis_utilisation:.0%} it sustains {_n(slot['sustains'], 2)}× these peaks")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the model of the latest (or the named) results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, help="a results JSON (default: the newest with costs)")
    defaults = Assumptions()
    parser.add_argument("--peak-factor", type=float, default=defaults.peak_factor)
    parser.add_argument("--gateway-utilisation", type=float, default=defaults.gateway_utilisation)
    parser.add_argument("--redis-utilisation", type=float, default=defaults.redis_utilisation)
    parser.add_argument("--pg-utilisation", type=float, default=defaults.pg_utilisation)
    parser.add_argument("--pg-rows-per-s", type=float, default=None)
    parser.add_argument("--gateway-cores", type=int, default=defaults.gateway_cores)
    parser.add_argument("--redis-shards", type=int, default=defaults.redis_shards)
    parser.add_argument("--json", action="store_true", help="print the model as JSON")
    args = parser.parse_args(argv)
    try:
        path = args.results or latest_results()
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    a = Assumptions(args.peak_factor, args.gateway_utilisation, args.redis_utilisation, args.pg_utilisation,
                    args.pg_rows_per_s, args.gateway_cores, args.redis_shards)
    print(json.dumps(model(results, a), indent=2) if args.json else render(results, path.name, a), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
