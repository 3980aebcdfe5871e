"""The request tally: counted in memory, exported into the Prometheus values exactly as observing each would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway import metrics
from gateway.metrics import LATENCY_BUCKETS_S, RequestTally, add_observations

pytestmark = pytest.mark.unit


def test_bulk_observations_give_the_exposition_of_one_observe_each() -> None:
    one_by_one, in_bulk = CollectorRegistry(), CollectorRegistry()
    each = Histogram("lat", "l", ["route"], buckets=LATENCY_BUCKETS_S, registry=one_by_one)
    bulk = Histogram("lat", "l", ["route"], buckets=LATENCY_BUCKETS_S, registry=in_bulk)
    rng = random.Random(7)
    # Every bound exactly, just above it, and a spread in between and beyond the last.
    samples = [*LATENCY_BUCKETS_S, *(b * 1.0001 for b in LATENCY_BUCKETS_S),
               *(rng.uniform(0, 12) ** 3 / 100 for _ in range(500))]
    tally = metrics.RouteTally("r", "/r")
    for sample in samples:
        each.labels("/r").observe(sample)
        tally.observe("GET", 200, sample)
    add_observations(bulk.labels("/r"), tally.buckets, tally.sum_s)
    assert sum(tally.buckets) == len(samples)

    def lines(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert lines(in_bulk) == lines(one_by_one)


def test_export_moves_the_counts_once_and_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    requests = Counter("req", "r", ["route", "method", "status"], registry=registry)
    latency = Histogram("lat", "l", ["route"], buckets=LATENCY_BUCKETS_S, registry=registry)
    monkeypatch.setattr(metrics, "REQUESTS", requests)
    monkeypatch.setattr(metrics, "LATENCY", latency)
    tally = RequestTally()
    seat = tally.route("registrations.seat.put", "/api/v1/registrations/{registration_id}/seat")
    for status in (200, 200, 200, 429):
        seat.observe("PUT", status, 0.002)
    recorded: list[tuple[str, int, int]] = []
    assert tally.export(lambda *row: recorded.append(row)) == 4
    assert sorted(recorded) == [("registrations.seat.put", 200, 3), ("registrations.seat.put", 429, 1)]
    route = "/api/v1/registrations/{registration_id}/seat"
    assert registry.get_sample_value("req_total", {"route": route, "method": "PUT", "status": "200"}) == 3
    assert registry.get_sample_value("lat_count", {"route": route}) == 4
    assert registry.get_sample_value("lat_bucket", {"route": route, "le": "0.001"}) == 0
    assert registry.get_sample_value("lat_bucket", {"route": route, "le": "0.0025"}) == 4
    assert tally.export() == 0  # nothing twice
    seat.observe("PUT", 200, 0.002)
    assert tally.export() == 1
    assert registry.get_sample_value("req_total", {"route": route, "method": "PUT", "status": "200"}) == 4
