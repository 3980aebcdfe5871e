"""The capacity model's arithmetic, on a small results file whose figures are easy to follow by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import capacity

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "capacity_results.json"


def _plans(assumptions: capacity.Assumptions | None = None) -> dict[str, dict[str, Any]]:
    results = json.loads(FIXTURE.read_text())
    model = capacity.model(results, assumptions or capacity.Assumptions())
    return {plan["scenario"]: plan for plan in model["plans"]}


def test_sign_in_needs_cores_for_its_hashing_and_the_gateway_is_its_first_limit() -> None:
    plan = _plans()["sign-in"]
    # 2,000,000 in 30 min × peak factor 3 = 3,333.3/s; × 50,000 µs = 166.7 cores busy, at 70 % → 239 cores.
    assert plan["needs"]["peak_rate_per_s"] == pytest.approx(3333.333, rel=1e-6)
    assert plan["needs"]["gateway_cores"] == 239
    assert plan["needs"]["redis_shards"] == 1  # 0.067 of a main thread
    assert plan["needs"]["redis_commands_per_s"] == pytest.approx(13333.333, rel=1e-6)
    # 16 cores × 70 % / 50 ms = 224 logins/s; 3 shards × 50 % / 20 µs = 75,000/s; no PostgreSQL write.
    assert plan["ceilings_per_s"] == {"gateway": pytest.approx(224.0), "redis": pytest.approx(75000.0),
                                      "postgresql": None}
    assert plan["first_limit"] == "gateway"
    assert plan["headroom"] == pytest.approx(224 / 3333.333, rel=1e-5)


def test_a_seat_hold_uses_one_shard_and_its_deferred_writes_count_against_postgresql() -> None:
    plan = _plans()["seat hold"]
    # 500,000 in 10 min × 3 = 2,500/s; × 400 µs = 1 core, at 70 % → 2 cores; × 50 µs = 0.125 thread → 1 shard.
    assert plan["needs"]["peak_rate_per_s"] == pytest.approx(2500.0)
    assert (plan["needs"]["gateway_cores"], plan["needs"]["redis_shards"]) == (2, 1)
    assert plan["needs"]["pg_rows_per_s"] == pytest.approx(2500.0)  # one stream entry per hold, written later
    # One slot: 1 shard × 50 % / 50 µs = 10,000/s whatever the shards; PostgreSQL: the payments' 2,000/s × 5 rows
    # = 10,000 rows/s, at 70 % over 1 row per hold = 7,000/s: the first limit, 2.8× the peak.
    assert plan["redis_shards_usable"] == 1
    assert plan["ceilings_per_s"]["redis"] == pytest.approx(10000.0)
    assert plan["ceilings_per_s"]["postgresql"] == pytest.approx(7000.0)
    assert plan["first_limit"] == "postgresql" and plan["headroom"] == pytest.approx(2.8)


def test_score_lookup_falls_back_to_the_unprotected_path_and_an_unmeasured_path_is_said() -> None:
    plans = _plans()
    lookup = plans["score lookup"]
    assert lookup["path"] == "score_lookup"  # no score_lookup_protected in these results
    assert lookup["needs"]["gateway_cores"] == 1  # 4,166.7/s × 150 µs = 0.625 core, at 70 % → 1
    assert lookup["ceilings_per_s"]["gateway"] == pytest.approx(16 * 0.7e6 / 150)
    assert lookup["first_limit"] == "gateway"
    assert plans["queue poll"] == {"scenario": "queue poll", "path": None}


def test_the_assumptions_change_the_figures_as_the_formulas_say() -> None:
    changed = capacity.Assumptions(peak_factor=1.0, gateway_cores=300, redis_shards=6, pg_rows_per_s=1000.0)
    plan = _plans(changed)["seat hold"]
    assert plan["needs"]["peak_rate_per_s"] == pytest.approx(833.333, rel=1e-6)
    assert plan["ceilings_per_s"]["redis"] == pytest.approx(10000.0)  # still one shard: one slot
    assert plan["ceilings_per_s"]["postgresql"] == pytest.approx(700.0)
    assert plan["first_limit"] == "postgresql"
    sign_in = _plans(changed)["sign-in"]
    assert sign_in["ceilings_per_s"]["redis"] == pytest.approx(150000.0)


def test_the_latest_results_with_costs_are_chosen_and_printed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(FIXTURE, tmp_path / "20261203T000000Z.json")
    (tmp_path / "20261203T010000Z.json").write_text(json.dumps({"when": "later", "figures": []}))
    assert capacity.latest_results(tmp_path).name == "20261203T000000Z.json"
    assert capacity.main(["--results", str(tmp_path / "20261203T000000Z.json")]) == 0
    out = capsys.readouterr().out
    assert "commit abc1234" in out
    assert "2,500/s → 2 gateway cores, 1 Redis shard(s)" in out
    assert "first limit: postgresql, which sustains 2.80× the peak" in out
    assert "queue poll: not measured in these results" in out
    with pytest.raises(FileNotFoundError):
        capacity.latest_results(tmp_path / "empty")


def test_peaks_of_one_slot_add_up_on_one_shard() -> None:
    results = json.loads(FIXTURE.read_text())
    results["costs"]["queue_poll"] = {**results["costs"]["score_lookup"], "redis_cpu_us": 10.0}
    model = capacity.model(results, capacity.Assumptions())
    slot = model["slots"]["the exam's {exam:N}"]
    # holds 2,500/s × 50 µs = 0.125; polls 5,000,000 in 10 min × 3 = 25,000/s × 10 µs = 0.25 → 0.375 busy.
    assert slot["scenarios"] == ["seat hold", "queue poll"]
    assert slot["main_thread_busy"] == pytest.approx(0.375)
    assert slot["sustains"] == pytest.approx(0.5 / 0.375)
    text = capacity.render(results, "fixture.json", capacity.Assumptions())
    assert "seat hold + queue poll keep 0.38 of its shard's main thread busy; at 50% it sustains 1.33×" in text
