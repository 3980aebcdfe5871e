"""A Redis Cluster beside a single Redis: the seat hold and the score lookup, same gateway, same run.

**Set-up.** The benchmarks' single Redis database, a local cluster of three masters
(``loadtest.cluster_servers.RedisClusterServers`` without replicas), and a second one of three masters with a
replica each, every node on this machine; one scratch PostgreSQL database behind all three. The
cluster set against the single Redis has no replicas: on this 2-core machine a replica's CPU (applying
every write again) is taken from the same two cores as the gateway's, which a deployment's replicas,
on hosts of their own, do not. ``seed.seed`` writes ``LOOKUP_CANDIDATES`` candidates, exam A's
scores are released and prewarmed into the single Redis and the first cluster. For the seat hold,
``bench_seats.prepare`` makes one exam per store (5,000 approved registrations, sessions,
waiting-room places, admission tokens). Four gateways, one process each, all pinned to core 0 and
loaded one at a time:

- ``single``: ``EXAMGATE_REDIS_URL`` the single Redis;
- ``cluster``: ``EXAMGATE_REDIS_CLUSTER=true`` on the three masters;
- ``replicated`` and ``replicated_wait``: on the cluster with replicas, without and with
  ``EXAMGATE_HOLD_REPLICAS=1`` (each hold answered once a replica has it, one ``WAIT`` per tick):
  what the failover guarantee costs on the hold path.

Each has the live config of ``bench_seats`` (the queue on, a generous candidate-keyed rule on the
seat route) with the score lookup's captcha off. wrk on core 1, 64 connections, the same scripts as
``bench_seats`` (seat moves between two sites) and ``bench_lookups`` (lookups by id number):
interleaved rounds, the order reversed every other round, each ratio the median of the per-round
ratios. Every scripted answer's status is counted; anything but 200 fails the figure.

**Figures**: ``seat_hold_cluster_vs_single`` and ``score_lookup_cluster_vs_single`` (target ≥ 0.8:
the cluster client's routing must cost the gateway little); ``seat_hold_wait_replica_vs_cluster``
(``replicated_wait`` over ``replicated``, no target: the price of the failover guarantee).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from benchmarks import bench_lookups, bench_seats
from benchmarks.common import scratch_stores, wait_config_version
from benchmarks.wrk import run_wrk, statuses
from core import redis_cluster
from loadtest.cluster_servers import start_redis_cluster
from loadtest.processes import Process
from lookups import prewarm
from seed import EXAM_A_CODE, seed

LOOKUP_CANDIDATES = 100_000
LOOKUP_KEYS = 20_000
ROUNDS = 5
ROUND_S = 3
CONNECTIONS = 64
TARGET = 0.8
CLUSTER = {"EXAMGATE_REDIS_CLUSTER": "true"}
CLUSTER_WAIT = {**CLUSTER, "EXAMGATE_HOLD_REPLICAS": "1", "EXAMGATE_HOLD_REPLICA_WAIT_MS": "1000"}


async def seed_and_prewarm(pg_dsn: str, stores: dict[str, tuple[str, bool]]) -> int:
    """Seed, release exam A's scores and prewarm them into every store; exam A's id."""
    started = time.perf_counter()
    await seed(pg_dsn, LOOKUP_CANDIDATES)
    print(f"  seeded {LOOKUP_CANDIDATES:,} candidates in {time.perf_counter() - started:.1f} s", flush=True)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        exam_id = int(await pool.fetchval("UPDATE exams SET score_release_at = now() - interval '1 hour' "
                                          "WHERE code = $1 RETURNING id", EXAM_A_CODE))
        for name, (url, cluster) in stores.items():
            client: aioredis.Redis = redis_cluster.redis_py(url, cluster=cluster)
            try:
                report = await prewarm.prewarm(pool, client, exam_id)
            finally:
                await client.aclose()
            print(f"  prewarmed {report.scores:,} score records into {name} in {report.seconds:.1f} s", flush=True)
    finally:
        await pool.close()
    return exam_id


class Lookups:
    """The score lookup load of one gateway, with the statuses its script counted."""

    def __init__(self, gateway: Process, script: str) -> None:
        self.url = gateway.url + bench_lookups.SCORES
        self.script = script
        self.statuses: dict[str, int] = {}

    def run(self, duration_s: int, *, measured: bool = True) -> float:
        result = run_wrk(self.url, duration_s=duration_s, connections=CONNECTIONS, script=self.script)
        counted = statuses(result.output)
        if not counted:
            raise RuntimeError(f"the lookup script reported no statuses:\n{result.output}")
        if measured:
            for status, count in counted.items():
                self.statuses[status] = self.statuses.get(status, 0) + count
        return result.requests_per_s


def _gateway(pg_dsn: str, url: str, data: dict[str, Any], body: str | None, env: dict[str, str]) -> Process:
    """A seat gateway (``bench_seats``); with a lookup ``body``, the score lookup's captcha off and one checked."""
    gateway = bench_seats.start_seat_gateway(pg_dsn, url, data, **env)
    if body is None:
        return gateway
    try:
        wait_config_version(gateway.url, gateway.patch_config({"captcha": bench_lookups.OFF["captcha"]}))
        answer = bench_lookups._post(gateway.url + bench_lookups.SCORES, body, {})
        if "subjects" not in answer:
            raise RuntimeError(f"the score lookup answered {answer}")
    except Exception:
        gateway.stop()
        raise
    return gateway


def run() -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    started = time.perf_counter()
    with scratch_stores() as (pg_dsn, single_url), start_redis_cluster(with_replicas=False) as cluster, \
            start_redis_cluster() as replicated, tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        stores = {"single": (single_url, False), "cluster": (cluster.url, True)}
        exam_id = asyncio.run(seed_and_prewarm(pg_dsn, stores))
        data = {name: asyncio.run(bench_seats.prepare(pg_dsn, url, cluster=is_cluster))
                for name, (url, is_cluster) in {**stores, "replicated": (replicated.url, True)}.items()}
        bodies = bench_lookups._bodies(exam_id, LOOKUP_KEYS, LOOKUP_CANDIDATES)
        script = bench_lookups.write_script(Path(tmp), "lookup", bench_lookups.SCORES, bodies, {})
        print(f"  prepared in {time.perf_counter() - started:.1f} s", flush=True)
        gateways: dict[str, Process] = {}
        lookups_on = ("single", "cluster")
        try:
            seat_data = {"single": data["single"], "cluster": data["cluster"], "replicated": data["replicated"],
                         "replicated_wait": data["replicated"]}
            for name, url, env in (("single", single_url, {}), ("cluster", cluster.url, CLUSTER),
                                   ("replicated", replicated.url, CLUSTER),
                                   ("replicated_wait", replicated.url, CLUSTER_WAIT)):
                gateways[name] = _gateway(pg_dsn, url, seat_data[name], bodies[0] if name in lookups_on else None, env)
            for name in gateways:
                (Path(tmp) / name).mkdir()
            seat_loads = {name: bench_seats.Loads(gateway.url, gateway.metrics_token(), seat_data[name],
                                                  Path(tmp) / name)
                          for name, gateway in gateways.items()}
            lookups = {name: Lookups(gateways[name], script) for name in lookups_on}
            runs = {**{f"seat_{name}": loads.seat for name, loads in seat_loads.items()},
                    **{f"lookup_{name}": load.run for name, load in lookups.items()}}
            for run_load in runs.values():
                run_load(2, measured=False)
            samples: dict[str, list[float]] = {name: [] for name in runs}
            order = list(runs.items())
            for round_no in range(ROUNDS):
                for name, run_load in order if round_no % 2 == 0 else order[::-1]:
                    rps = run_load(ROUND_S)
                    samples[name].append(rps)
                    print(f"  round {round_no + 1}/{ROUNDS} {name}: {rps:,.0f} req/s", flush=True)
        finally:
            for gateway in gateways.values():
                gateway.stop()
        cluster_nodes = {"cluster": (len(cluster.masters()), len(cluster.replicas())),
                         "replicated": (len(replicated.masters()), len(replicated.replicas()))}

    def per_round(name: str, baseline: str) -> list[float]:
        return [round(a / b, 4) for a, b in zip(samples[name], samples[baseline], strict=True)]

    seat_rounds = per_round("seat_cluster", "seat_single")
    lookup_rounds = per_round("lookup_cluster", "lookup_single")
    wait_rounds = per_round("seat_replicated_wait", "seat_replicated")
    unexpected = {**{f"seat_{name}": {s: n for s, n in loads.statuses["seat"].items() if s != "200"}
                     for name, loads in seat_loads.items()},
                  **{f"lookup_{name}": {s: n for s, n in load.statuses.items() if s != "200"}
                     for name, load in lookups.items()}}
    median_rps = {name: round(statistics.median(values)) for name, values in samples.items()}
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "wrk_cpus": "1", "connections": CONNECTIONS,
             "rounds": ROUNDS, "round_s": ROUND_S, "masters_replicas": cluster_nodes,
             "lookup_candidates": LOOKUP_CANDIDATES, "elapsed_s": round(time.perf_counter() - started, 1),
             "requests_per_s": median_rps, "unexpected_statuses": unexpected}
    seat_ratio, lookup_ratio = statistics.median(seat_rounds), statistics.median(lookup_rounds)
    wait_ratio = statistics.median(wait_rounds)
    seats_clean = not unexpected["seat_single"] and not unexpected["seat_cluster"]
    return [
        {"benchmark": "cluster", "metric": "seat_hold_cluster_vs_single", "value": round(seat_ratio, 3), "unit": "×",
         "target": f">= {TARGET}", "passed": seat_ratio >= TARGET and seats_clean,
         "details": {"per_round": seat_rounds, "samples": samples, **setup}},
        {"benchmark": "cluster", "metric": "score_lookup_cluster_vs_single", "value": round(lookup_ratio, 3),
         "unit": "×", "target": f">= {TARGET}",
         "passed": lookup_ratio >= TARGET and not unexpected["lookup_single"] and not unexpected["lookup_cluster"],
         "details": {"per_round": lookup_rounds}},
        {"benchmark": "cluster", "metric": "seat_hold_wait_replica_vs_cluster", "value": round(wait_ratio, 3),
         "unit": "×", "target": None,
         "passed": None if not unexpected["seat_replicated_wait"] and not unexpected["seat_replicated"] else False,
         "details": {"per_round": wait_rounds, "statuses": seat_loads["replicated_wait"].statuses["seat"]}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
