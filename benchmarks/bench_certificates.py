"""Certificate verification beside the score lookup: prewarming a million certificates, and a verification
measured as ``bench_lookups`` measures the score lookup, against the same targets.

**Set-up.** One exam with one level and 1,000,000 certificates written by one ``INSERT … SELECT
generate_series`` into a scratch database (numbers ``ZG0000000000`` …, holders ``持证人<i>``).

**Figure 1**: ``lookups.cert_prewarm.prewarm`` into the benchmarks' Redis database, timed, and the
fields in Redis counted against the table (one a certificate, and each bucket's complete mark). Target
≤ 30 s, the score records' target.

**The verification figures**: the score lookup's records are seeded and prewarmed too
(``SCORE_CANDIDATES`` seeded, exam A's scores released and prewarmed), so both routes are measured in the same
rounds; one gateway process and the bare aiohttp app pinned to core 0, wrk
on core 1 with 64 connections and a Lua script posting verifications (number and holder's name,
all genuine: every answer must be 200, with its signed PDF link), rotating through ``KEYS``
certificates spread over the million. ``bench_lookups``' rounds: interleaved with the bare app's
``GET /noop`` (the floor the targets are ratios to) and examgate's ``/_bench/noop``, each ratio the
median of the per-round ratios; two phases:

- *captcha and throttles off*: target ≥ 0.6 × the bare GET (the score lookup's);
- *captcha and throttles on*: captcha ``either`` passed with a load-test token and the production
  ``certificates-ip`` rule, generous so that nothing is refused: target ≥ 0.45 × the bare GET.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from benchmarks import bench_lookups, costs
from benchmarks.bench_lookups import (
    CONNECTIONS,
    GENEROUS,
    NOOP,
    ROUND_S,
    ROUNDS,
    TARGET_OFF,
    TARGET_ON,
    Load,
    Phase,
    PhaseLoads,
    _loadtest_token,
    _per_round,
    write_script,
)
from benchmarks.common import bare_app, scratch_stores, wait_config_version
from loadtest.processes import Process, start_gateway
from lookups import cert_prewarm, certificates, prewarm
from seed import EXAM_A_CODE, seed

CERTIFICATES = 1_000_000
KEYS = 20_000
SCORE_CANDIDATES = 20_000  # the score lookup measured beside the verification, in the same rounds
TARGET_PREWARM_S = 30.0
VERIFY = "/api/v1/certificates/verify"
BARE_GET = "/noop"
OFF = {"captcha": {"routes": {"certificates.verify": "off", "scores.lookup": "off"}}, "ratelimit": {"rules": []}}
ON = {"captcha": {"routes": {"certificates.verify": "either", "scores.lookup": "either"}},
      "ratelimit": {"rules": [{"id": "certificates-ip", "routes": ["certificates.verify"], "key": "ip", **GENEROUS},
                              *bench_lookups.ON["ratelimit"]["rules"]]}}  # type: ignore[index]


def cert_no(index: int) -> str:
    """The number of the ``index``-th certificate written."""
    return f"ZG{index:010d}"


def holder(index: int) -> str:
    """The holder's name of the ``index``-th certificate."""
    return f"持证人{index}"


async def seed_and_prewarm(pg_dsn: str, redis_url: str, count: int) -> dict[str, Any]:
    """Write ``count`` certificates, prewarm them (timed) and count the fields Redis holds."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        started = time.perf_counter()
        exam_id = await pool.fetchval(
            """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at, ticket_print_opens_at,
                   ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen)
               VALUES ('CERT-BENCH', '证书基准考试', now() - interval '400 days', now() - interval '380 days',
                       now() - interval '370 days', now() - interval '366 days', now() - interval '365 days',
                       now() - interval '300 days', 5600) RETURNING id""")
        await pool.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级')", exam_id)
        await pool.execute(
            """INSERT INTO certificates (cert_no, name, id_number, exam_id, level_code, approved_on, management_no)
               SELECT 'ZG' || lpad(i::text, 10, '0'), '持证人' || i, '1101051990' || lpad(i::text, 8, '0'), $1, 'mid',
                      current_date - 30, 'GL-' || i
                 FROM generate_series(0, $2 - 1) i""", exam_id, count)
        seeded_s = time.perf_counter() - started
        print(f"  wrote {count:,} certificates in {seeded_s:.1f} s", flush=True)
        report = await cert_prewarm.prewarm(pool, redis)
        fields = 0
        async for key in redis.scan_iter(match=certificates.PREFIX + "*", count=1000):
            if key != certificates.META_KEY.encode():
                fields += await redis.hlen(key)
    finally:
        await pool.close()
        await redis.aclose()
    print(f"  prewarmed {report.certificates:,} certificates in {report.seconds:.1f} s", flush=True)
    return {"seed_s": round(seeded_s, 1), "report": report, "redis_fields": fields}


async def score_records(pg_dsn: str, redis_url: str, candidates: int) -> int:
    """Seed ``candidates``, release exam A's scores and prewarm them, as ``bench_lookups`` does (untimed); its id."""
    await seed(pg_dsn, candidates)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        exam_id: int = await pool.fetchval("UPDATE exams SET score_release_at = now() - interval '1 hour' "
                                           "WHERE code = $1 RETURNING id", EXAM_A_CODE)
        await prewarm.prewarm(pool, redis, exam_id)
    finally:
        await pool.close()
        await redis.aclose()
    return exam_id


def _bodies(count: int, certificates_written: int) -> list[str]:
    step = max(1, certificates_written // count)
    return [json.dumps({"cert_no": cert_no(index), "name": holder(index)}, separators=(",", ":"))
            for index in range(0, step * count, step)[:count]]


def phases(gateway: Process, bare_url: str, written: int, exam_id: int, directory: Path) -> list[PhaseLoads]:
    """Both phases' loads: the bare GET, examgate's noop, the verification and the score lookup."""
    bodies = _bodies(KEYS, written)
    score_bodies = bench_lookups._bodies(exam_id, KEYS, SCORE_CANDIDATES)
    token = _loadtest_token(gateway)

    def loads(label: str, headers: dict[str, str]) -> dict[str, Load]:
        return {"noop": Load(gateway.url + NOOP), "bare": Load(bare_url + BARE_GET),
                "verify": Load(gateway.url + VERIFY,
                               write_script(directory, f"{label}-verify", VERIFY, bodies, headers), headers),
                "score_lookup": Load(gateway.url + bench_lookups.SCORES,
                                     write_script(directory, f"{label}-scores", bench_lookups.SCORES, score_bodies,
                                                  headers), headers)}

    return [PhaseLoads("off", OFF, loads("off", {}), bodies[0]),
            PhaseLoads("on", ON, loads("on", {"X-Loadtest-Token": token}), bodies[0])]


def apply(gateway: Process, phase: PhaseLoads, score_body: str) -> None:
    """The phase's live config, then one verification and one score lookup posted by hand (a broken route fails
    here with its answer, rather than later as a count of statuses)."""
    wait_config_version(gateway.url, gateway.patch_config(phase.config))
    for name, body in (("verify", phase.body), ("score_lookup", score_body)):
        load = phase.loads[name]
        answer = bench_lookups._post(load.url, body, load.headers)
        print(f"  {phase.label} {load.url}: {json.dumps(answer, ensure_ascii=False)[:100]}…", flush=True)


def run(count: int = CERTIFICATES) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-certs-") as tmp:
        warm = asyncio.run(seed_and_prewarm(pg_dsn, redis_url, count))
        scores = {"exam_id": asyncio.run(score_records(pg_dsn, redis_url, SCORE_CANDIDATES))}
        score_body = bench_lookups._bodies(scores["exam_id"], 1, SCORE_CANDIDATES)[0]
        with bare_app() as bare_url:
            gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true",
                                    EXAMGATE_KEYS_DIR=str(Path(tmp) / "keys"))
            try:
                meter = costs.Meter("certificates", gateway.proc.pid, redis_url, pg_dsn)
                for spec in phases(gateway, bare_url, count, scores["exam_id"], Path(tmp)):
                    apply(gateway, spec, score_body)
                    phase = Phase(spec.loads, meter, {"verify": "certificate_verify" if spec.label == "off"
                                                      else "certificate_verify_protected"})
                    samples = phase.measure(spec.label)
                    results[spec.label] = {
                        "samples": samples, "statuses": phase.statuses,
                        "unexpected": {**phase.unexpected("verify"), **phase.unexpected("score_lookup")},
                        "vs_bare": {name: _per_round(samples, name, "bare")
                                    for name in ("verify", "score_lookup", "noop")},
                        "vs_noop": _per_round(samples, "verify", "noop"),
                        "vs_score_lookup": _per_round(samples, "verify", "score_lookup"),
                        "requests_per_s": {name: round(statistics.median(v)) for name, v in samples.items()}}
            finally:
                gateway.stop()
    report: cert_prewarm.CertificatesPrewarmed = warm["report"]
    counts_match = report.certificates == count and warm["redis_fields"] == count + certificates.BUCKETS
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "bare_app_cpus": "0", "wrk_cpus": "1",
             "connections": CONNECTIONS, "rounds": ROUNDS, "round_s": ROUND_S, "keys": KEYS, "certificates": count,
             "elapsed_s": round(time.perf_counter() - started, 1)}
    figures: list[dict[str, Any]] = [
        {"benchmark": "certificates", "metric": "prewarm_1m_certificates_s" if count == CERTIFICATES
         else f"prewarm_{count}_certificates_s", "value": report.seconds, "unit": "s",
         "target": f"<= {TARGET_PREWARM_S:g}", "passed": report.seconds <= TARGET_PREWARM_S and counts_match,
         "details": {**report.as_dict(), "redis_fields": warm["redis_fields"], "counts_match": counts_match,
                     "seed_s": warm["seed_s"], "certificates_per_s": round(report.certificates / report.seconds)}}]
    for label, target in (("off", TARGET_OFF), ("on", TARGET_ON)):
        phase = results[label]
        ok = not phase["unexpected"]
        vs_bare = statistics.median(phase["vs_bare"]["verify"])
        figures.append({"benchmark": "certificates", "metric": f"certificate_verify_vs_bare_aiohttp_captcha_throttle_"
                                                                 f"{label}",
                        "value": round(vs_bare, 3), "unit": "×", "target": f">= {target}",
                        "passed": vs_bare >= target and ok,
                        "details": {"requests_per_s": phase["requests_per_s"], "vs_bare": phase["vs_bare"],
                                    "vs_noop": phase["vs_noop"], "samples": phase["samples"],
                                    "statuses": phase["statuses"], "config": ON if label == "on" else OFF, **setup}})
        figures.append({"benchmark": "certificates", "metric": f"certificate_verify_vs_noop_captcha_throttle_{label}",
                        "value": round(statistics.median(phase["vs_noop"]), 3), "unit": "×", "target": None,
                        "passed": None if ok else False, "details": {}})
        figures.append({"benchmark": "certificates", "metric": f"score_lookup_vs_bare_aiohttp_captcha_throttle_{label}",
                        "value": round(statistics.median(phase["vs_bare"]["score_lookup"]), 3), "unit": "×",
                        "target": None, "passed": None if ok else False,
                        "details": {"meaning": "the score lookup in the same rounds, for comparison"}})
        figures.append({"benchmark": "certificates", "metric": f"certificate_verify_vs_score_lookup_captcha_throttle_"
                                                                 f"{label}",
                        "value": round(statistics.median(phase["vs_score_lookup"]), 3), "unit": "×",
                        "target": None, "passed": None if ok else False, "details": {}})
    return figures


if __name__ == "__main__":
    import sys

    for figure in run(int(sys.argv[1]) if len(sys.argv) > 1 else CERTIFICATES):
        print(figure)
