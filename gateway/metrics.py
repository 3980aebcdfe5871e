"""Prometheus metrics, shared across gateway processes through prometheus-client's multiprocess mode.

``examgate serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before it starts the worker
processes, so every process writes its samples to files there and ``/metrics`` in any
of them reports the sum. Imported lazily: the variable must be set before
prometheus-client is first imported.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS = Counter("examgate_requests_total", "Requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "examgate_request_duration_seconds", "Time from request to response", ["route"], buckets=LATENCY_BUCKETS_S
)
IN_FLIGHT = Gauge("examgate_requests_in_flight", "Requests being handled", multiprocess_mode="livesum")
LOOP_LAG = Histogram("examgate_event_loop_lag_seconds", "How late a periodic timer fires", buckets=LAG_BUCKETS_S)
LOOP_LAG_LAST = Gauge("examgate_event_loop_lag_last_seconds", "Latest event-loop lag per process",
                      multiprocess_mode="liveall")
PG_POOL = Gauge("examgate_pg_pool_connections", "PostgreSQL pool connections", ["state"], multiprocess_mode="livesum")
REDIS_IN_FLIGHT = Gauge("examgate_redis_commands_in_flight", "Hot-path Redis commands awaiting a reply",
                        multiprocess_mode="livesum")
REDIS_BATCHES = Gauge("examgate_redis_batches_sent", "Auto-pipelined batches written", multiprocess_mode="livesum")
RATELIMIT = Gauge("examgate_ratelimit_events", "Rate-limiter decisions and fallbacks since start",
                  ["event"], multiprocess_mode="livesum")
SHED = Counter("examgate_shed_total", "Requests refused at once to protect the process",
               ["route_class", "reason"])
PAYMENT_REJECTED = Counter("examgate_payment_notifications_rejected", "Payment notifications answered as rejected "
                           "(failed verification or not matching their order), recorded in the ledger or not",
                           ["provider", "reason"])
CAPTCHA_POOL = Gauge("examgate_captcha_pool_images",
                     "Pre-drawn captcha images waiting in Redis (all processes see one pool)",
                     multiprocess_mode="mostrecent")
CAPTCHA_POOL_TARGET = Gauge("examgate_captcha_pool_target", "Images the worker keeps drawn ahead",
                            multiprocess_mode="mostrecent")
CAPTCHA_REFILL_RATE = Gauge("examgate_captcha_refill_images_per_second", "Drawing rate of the worker's last refill",
                            multiprocess_mode="mostrecent")
CAPTCHA_TAKES = Gauge("examgate_captcha_takes",
                      "Image captcha requests since start, served or found the pool empty",
                      ["outcome"], multiprocess_mode="livesum")
PASSWORD_POOL = Gauge("examgate_password_pool_jobs", "Password hashing pool: jobs in it and jobs it accepts",
                      ["state"], multiprocess_mode="livesum")
PASSWORD_REJECTED = Gauge("examgate_password_pool_rejected",
                          "Hashing jobs refused because the pool was full, since start",
                          multiprocess_mode="livesum")
REDIS_COMMANDS = Gauge("examgate_redis_commands_sent", "Auto-pipelined commands written", multiprocess_mode="livesum")
SMS_QUEUE = Gauge("examgate_sms_queue_messages", "SMS messages waiting in the outbox: queued (new, or awaiting a "
                  "retry) and sending (claimed by a delivery worker, or in doubt)", ["state"],
                  multiprocess_mode="mostrecent")
SMS_OLDEST = Gauge("examgate_sms_oldest_waiting_seconds", "Age of the oldest SMS message still waiting to be sent",
                   multiprocess_mode="mostrecent")
SMS_DELIVERIES = Gauge("examgate_sms_deliveries", "SMS delivery outcomes, every worker together: sent, failed, retried "
                       "(after a provider error), throttled, looked_up (in doubt), found (sent before)", ["outcome"],
                       multiprocess_mode="mostrecent")
SMS_SEND_RATE = Gauge("examgate_sms_send_rate_per_second", "SMS messages the provider accepted per second, the live "
                      "delivery workers together (last 10 s)", multiprocess_mode="mostrecent")
RENDERS = Counter("examgate_metrics_renders_total", "Times this exposition was rendered (at most one per cache "
                  "interval per process, however many scrapes)")
READINESS_CHECKS = Counter("examgate_readiness_checks_total", "Readiness verdicts computed, each asking Redis and "
                           "PostgreSQL once (at most one per cache interval per process)")


class RouteTally:
    """One route's answers since the last export: counts by (method, status), and a latency histogram."""

    __slots__ = ("name", "label", "counts", "buckets", "sum_s")

    def __init__(self, name: str, label: str) -> None:
        self.name = name  # the route name (live figures)
        self.label = label  # the path template (Prometheus ``route`` label)
        self.counts: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one: above every bound
        self.sum_s = 0.0

    def observe(self, method: str, status: int, elapsed_s: float) -> None:
        """Count one answer and its latency."""
        key = (method, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1
        self.sum_s += elapsed_s


class RequestTally:
    """Every route's answers and the requests in flight in this process, in memory until ``export``.

    A Prometheus value in multiprocess mode is a locked write to a memory-mapped file; four of them
    per request (in flight up and down, the counter, the histogram) cost more than a do-nothing
    route's handler. So a request only adds to dicts and lists here, and ``export`` moves the sums
    into the Prometheus values (and the live figures) once a second and before every render: the
    exposition and the live figures are complete, at most an export interval behind.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._routes: list[RouteTally] = []

    def route(self, name: str, label: str) -> RouteTally:
        """A new tally for one route (each route's wrapper keeps its own)."""
        tally = RouteTally(name, label)
        self._routes.append(tally)
        return tally

    def export(self, record: Callable[[str, int, int], None] | None = None) -> int:
        """Add what was counted since the last export to the Prometheus values; ``record(route name, status, n)``
        gets the counts too. How many answers were exported."""
        exported = 0
        for tally in self._routes:
            if not tally.counts:
                continue
            counts = dict(tally.counts)
            tally.counts.clear()
            buckets, tally.buckets[:] = list(tally.buckets), [0] * len(tally.buckets)
            sum_s, tally.sum_s = tally.sum_s, 0.0
            for (method, status), n in counts.items():
                REQUESTS.labels(tally.label, method, str(status)).inc(n)
                if record is not None:
                    record(tally.name, status, n)
                exported += n
            add_observations(LATENCY.labels(tally.label), buckets, sum_s)
        IN_FLIGHT.set(self.in_flight)
        return exported


def add_observations(histogram: Any, buckets: list[int], sum_s: float) -> None:
    """Add many observations to one labelled Histogram at once: ``buckets[i]`` of them in its i-th bucket.

    prometheus-client has no bulk observe; its child keeps one value per bucket (not cumulative) and one
    for the sum, which ``observe`` increments, as this does (``tests/gateway/test_metrics_tally.py``
    checks that both give the same exposition, so an upgrade that changes them fails a test).
    """
    histogram._sum.inc(sum_s)
    for value, n in zip(histogram._buckets, buckets, strict=True):
        if n:
            value.inc(n)


def render() -> tuple[bytes, str]:
    """The exposition text: every process's samples when in multiprocess mode, else this one's."""
    RENDERS.inc()  # before rendering, so the text counts itself
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (the parent calls this for exited workers)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


class LoopLagMonitor:
    """Measures how late a periodic timer fires: a busy event loop shows as lag."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0

    async def run(self) -> None:
        """Measure until cancelled, keeping in ``lag_s`` the smaller of the last two figures."""
        loop = asyncio.get_running_loop()
        previous_s = 0.0
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            lag_s = max(0.0, loop.time() - start - self.interval_s)
            LOOP_LAG.observe(lag_s)
            # Shedding reads ``lag_s``: a loop late twice in a row is overloaded; one late timer (a
            # garbage-collection pause, a slow start-up step) is not, and shedding on it refused the
            # requests that had merely queued behind it.
            self.lag_s = min(previous_s, lag_s)
            previous_s = lag_s
            LOOP_LAG_LAST.set(lag_s)


def sample_limiter(limiter: Any) -> None:
    """Copy the limiter's counters (checks, denials, denial-cache hits, every fallback) into gauges."""
    if limiter is not None:
        for event, count in limiter.counters.items():
            RATELIMIT.labels(event).set(count)


def sample_pools(pg_pool: Any, redis_client: Any) -> None:
    """Copy pool figures into gauges (called on each scrape and periodically)."""
    if pg_pool is not None:
        size = pg_pool.get_size()
        idle = pg_pool.get_idle_size()
        PG_POOL.labels("in_use").set(size - idle)
        PG_POOL.labels("idle").set(idle)
    if redis_client is not None:
        REDIS_IN_FLIGHT.set(getattr(redis_client, "in_flight", 0))
        REDIS_BATCHES.set(getattr(redis_client, "batches_sent", 0))
        REDIS_COMMANDS.set(getattr(redis_client, "commands_sent", 0))


def sample_captcha(stats: Any, takes: Any) -> None:
    """Copy the image pool's figures (``captcha.pool.PoolStats``) and this process's take counters into gauges."""
    if stats is not None:
        CAPTCHA_POOL.set(stats.size)
        CAPTCHA_POOL_TARGET.set(stats.target)
        CAPTCHA_REFILL_RATE.set(stats.last_refill_rate_per_s)
    if takes is not None:
        CAPTCHA_TAKES.labels("taken").set(takes.taken)
        CAPTCHA_TAKES.labels("empty").set(takes.empty)


def sample_hasher(hasher: Any) -> None:
    """Copy the password hashing pool's figures (in flight, capacity, refusals) into gauges."""
    if hasher is not None:
        stats = hasher.stats()
        PASSWORD_POOL.labels("in_flight").set(stats.in_flight)
        PASSWORD_POOL.labels("capacity").set(stats.capacity)
        PASSWORD_REJECTED.set(stats.rejected)


def sample_sms(stats: Any) -> None:
    """Copy the SMS outbox's depth and the delivery workers' figures (``messaging.stats.DeliveryStats``) into gauges."""
    if stats is not None:
        SMS_QUEUE.labels("queued").set(stats.queued)
        SMS_QUEUE.labels("sending").set(stats.sending)
        SMS_OLDEST.set(stats.oldest_s)
        for outcome, count in stats.totals.items():
            SMS_DELIVERIES.labels(outcome).set(count)
        SMS_SEND_RATE.set(stats.rate_per_s)


def monotonic() -> float:
    """The clock request latencies are measured with."""
    return time.perf_counter()
