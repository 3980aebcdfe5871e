"""Score release: prewarming a million records, and a score lookup beside a route doing nothing.

**Set-up.** ``seed.seed`` writes 1,000,000 candidates into a scratch database (each with an
exam-A registration, an admission ticket and two scores); exam A's score release is moved an
hour into the past.

**Figure 1**: ``lookups.prewarm.prewarm`` of exam A into the benchmarks' Redis database, timed
(1,000,000 records with their 2,000,000 scores, each record under its id number and its ticket
number), and the counts checked against PostgreSQL. Target ≤ 30 s.

**Figures 2–4**: one gateway process pinned to core 0, wrk on core 1 with 64 connections, a wrk
Lua script posting score lookups by id number, rotating through ``KEYS`` seeded candidates
(regenerated from their index with ``seed.lookup_keys``). Every answer's status is counted;
anything but 200 fails the figure. Two phases, each measured in interleaved rounds beside the
do-nothing route, each ratio the median of the per-round ratios:

- *captcha and throttles off* (``scores.lookup`` captcha ``off``, no rate-limit rules): the
  lookup served from Redis (target ≥ 0.8 × noop), and beside it the naive design,
  ``POST /_bench/scores-lookup-pg``: the same parsing and answer, the record read straight
  from PostgreSQL (no target: the baseline); and ``POST /_bench/post-json``, which reads the
  same body and answers a fixed one: what a POST with a JSON body costs before any lookup work;
- *captcha and throttles on*: captcha ``either`` passed with an operator-issued load-test token
  (``X-Loadtest-Token``), and the production ``lookup-ip`` rule plus an ``id_number`` rule,
  both generous so that no lookup is refused: every lookup runs the rate-limit script
  (target ≥ 0.5 × noop).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from benchmarks.common import scratch_stores, wait_config_version
from benchmarks.wrk import LUA_STATUS_COUNTER, run_wrk, statuses
from loadtest.processes import Process, start_gateway
from lookups import prewarm, records
from seed import EXAM_A_CODE, lookup_keys, seed

CANDIDATES = 1_000_000
KEYS = 20_000
ROUNDS = 5
ROUND_S = 3
CONNECTIONS = 64
TARGET_PREWARM_S = 30.0
TARGET_OFF = 0.8
TARGET_ON = 0.5
SCORES = "/api/v1/scores/lookup"
NAIVE = "/_bench/scores-lookup-pg"
POST_JSON = "/_bench/post-json"
GENEROUS = {"rate": 10_000_000, "period_s": 60, "burst": 10_000_000, "mode": "enforce", "on_redis_error": "open"}
OFF = {"captcha": {"routes": {"scores.lookup": "off"}}, "ratelimit": {"rules": []}}
ON = {"captcha": {"routes": {"scores.lookup": "either"}},
      "ratelimit": {"rules": [{"id": "lookup-ip", "routes": ["scores.lookup"], "key": "ip", **GENEROUS},
                              {"id": "lookup-id", "routes": ["scores.lookup"], "key": "id_number", **GENEROUS}]}}


# -- set-up and figure 1 ------------------------------------------------------------------------


async def seed_and_prewarm(pg_dsn: str, redis_url: str, candidates: int) -> dict[str, Any]:
    """Seed, release exam A's scores, prewarm it (timed) and check the counts against PostgreSQL."""
    started = time.perf_counter()
    await seed(pg_dsn, candidates)
    seeded_s = time.perf_counter() - started
    print(f"  seeded {candidates:,} candidates in {seeded_s:.1f} s", flush=True)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        exam_id = await pool.fetchval("UPDATE exams SET score_release_at = now() - interval '1 hour' "
                                      "WHERE code = $1 RETURNING id", EXAM_A_CODE)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if time.perf_counter() - last[0] >= 5 or done == total:
                last[0] = time.perf_counter()
                print(f"  prewarm {done:,}/{total:,}", flush=True)

        report = await prewarm.prewarm(pool, redis, exam_id, progress=progress)
        expected = await pool.fetchrow(
            """SELECT count(*) AS tickets,
                      count(*) FILTER (WHERE EXISTS (SELECT 1 FROM scores s
                                                     WHERE s.registration_id = t.registration_id)) AS scores,
                      (SELECT count(*) FROM scores WHERE exam_id = $1) AS score_rows
                 FROM admission_tickets t WHERE t.exam_id = $1""", exam_id)
        assert expected is not None  # an aggregate without GROUP BY: always exactly one row
        fields = 0
        async for key in redis.scan_iter(match=f"eg:lk:{exam_id}:*", count=1000):
            if key != records.meta_key(exam_id).encode():
                fields += await redis.hlen(key)
    finally:
        await pool.close()
        await redis.aclose()
    print(f"  prewarmed {report.scores:,} score records in {report.seconds:.1f} s", flush=True)
    return {"exam_id": exam_id, "seed_s": round(seeded_s, 1), "report": report,
            "postgresql": dict(expected), "redis_fields": fields}


# -- the wrk script -----------------------------------------------------------------------------


def _bodies(exam_id: int, count: int, candidates: int) -> list[str]:
    """Lookup bodies of ``count`` seeded candidates spread over all of them (JSON, ASCII-escaped)."""
    step = max(1, candidates // count)
    bodies = []
    for index in range(0, step * count, step)[:count]:
        keys = lookup_keys(index)
        bodies.append(json.dumps({"exam_id": exam_id, "name": keys.name, "id_number": keys.id_number},
                                 separators=(",", ":")))
    return bodies


def write_script(directory: Path, name: str, path: str, bodies: list[str], headers: dict[str, str]) -> str:
    """A wrk Lua script posting ``bodies`` to ``path`` in turn (requests formatted once, in ``init``)."""
    for text in (path, *headers, *headers.values(), *bodies):
        assert text.isascii() and "]==]" not in text, text
    rows = ",\n".join(f"[==[{body}]==]" for body in bodies)
    header_table = ", ".join(f'["{k}"] = [==[{v}]==]' for k, v in {"Content-Type": "application/json",
                                                                   **headers}.items())
    script = directory / f"{name}.lua"
    script.write_text(f"""local bodies = {{
{rows}
}}
local count = #bodies
local n = 0
local requests = {{}}
function init(args)
  local headers = {{{header_table}}}
  for i, body in ipairs(bodies) do requests[i] = wrk.format("POST", [==[{path}]==], headers, body) end
end
function request()
  local r = requests[n % count + 1]
  n = n + 1
  return r
end
{LUA_STATUS_COUNTER}""")
    return str(script)


# -- figures 2-4 --------------------------------------------------------------------------------


def _post(url: str, body: str, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST {url}: {exc.code} {exc.read()[:500]!r}") from exc


def _loadtest_token(gateway: Process) -> str:
    request = urllib.request.Request(gateway.url + "/admin/api/v1/loadtest-tokens", method="POST",
                                     data=json.dumps({"ttl_s": 3600, "name": "bench-lookups"}).encode(),
                                     headers={"Authorization": f"Bearer {gateway.admin_token()}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.loads(resp.read())["token"])


class Phase:
    """The loads of one phase, with every status their scripts counted."""

    def __init__(self, url: str, scripts: dict[str, str]) -> None:
        self.url = url
        self.scripts = scripts
        self.statuses: dict[str, dict[str, int]] = {name: {} for name in scripts}

    def run(self, name: str, duration_s: int, *, measured: bool = True) -> float:
        if name == "noop":
            return run_wrk(self.url + "/_bench/noop", duration_s=duration_s, connections=CONNECTIONS).requests_per_s
        result = run_wrk(self.url + "/", duration_s=duration_s, connections=CONNECTIONS, script=self.scripts[name])
        counted = statuses(result.output)
        if not counted:
            raise RuntimeError(f"the wrk script of {name} reported no statuses:\n{result.output}")
        if measured:
            for status, count in counted.items():
                self.statuses[name][status] = self.statuses[name].get(status, 0) + count
        return result.requests_per_s

    def measure(self, label: str) -> dict[str, list[float]]:
        """Interleaved rounds (order reversed every other round) after a warm-up of each load."""
        names = ["noop", *self.scripts]
        for name in names:
            self.run(name, 2, measured=False)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_no in range(ROUNDS):
            for name in names if round_no % 2 == 0 else names[::-1]:
                rps = self.run(name, ROUND_S)
                samples[name].append(rps)
                print(f"  {label} round {round_no + 1}/{ROUNDS} {name}: {rps:,.0f} req/s", flush=True)
        return samples

    def unexpected(self, name: str) -> dict[str, int]:
        return {status: count for status, count in self.statuses[name].items() if status != "200"}


def _per_round(samples: dict[str, list[float]], name: str) -> list[float]:
    return [round(a / b, 4) for a, b in zip(samples[name], samples["noop"], strict=True)]


def measure_lookups(gateway: Process, exam_id: int, candidates: int, directory: Path) -> dict[str, Any]:
    """Both phases; the samples, per-round ratios and statuses of each."""
    bodies = _bodies(exam_id, KEYS, candidates)
    token = _loadtest_token(gateway)
    results: dict[str, Any] = {}
    phases: list[tuple[str, dict[str, object], dict[str, tuple[str, dict[str, str]]]]] = [
        ("off", OFF, {"lookup_redis": (SCORES, {}), "lookup_postgresql": (NAIVE, {}), "post_json": (POST_JSON, {})}),
        ("on", ON, {"lookup_redis": (SCORES, {"X-Loadtest-Token": token})}),
    ]
    for label, patch, loads in phases:
        wait_config_version(gateway.url, gateway.patch_config(patch))
        scripts = {name: write_script(directory, f"{label}-{name}", path, bodies, headers)
                   for name, (path, headers) in loads.items()}
        for path, headers in loads.values():  # one lookup by hand: a broken route fails with its answer
            answer = _post(gateway.url + path, bodies[0], headers)
            print(f"  {label} {path}: {json.dumps(answer, ensure_ascii=False)[:100]}…", flush=True)
        phase = Phase(gateway.url, scripts)
        samples = phase.measure(label)
        results[label] = {"samples": samples, "per_round": {name: _per_round(samples, name) for name in scripts},
                          "statuses": phase.statuses, "unexpected": {name: phase.unexpected(name) for name in scripts},
                          "requests_per_s": {name: round(statistics.median(v)) for name, v in samples.items()}}
    return results


def run(candidates: int = CANDIDATES) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    started = time.perf_counter()
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-lookups-") as tmp:
        warm = asyncio.run(seed_and_prewarm(pg_dsn, redis_url, candidates))
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")
        try:
            lookups = measure_lookups(gateway, warm["exam_id"], candidates, Path(tmp))
        finally:
            gateway.stop()
    report: prewarm.PrewarmReport = warm["report"]
    expected = warm["postgresql"]
    counts_match = (report.tickets == expected["tickets"] and report.scores == expected["scores"]
                    and warm["redis_fields"] == 2 * expected["tickets"])
    off, on = lookups["off"], lookups["on"]
    off_ratio = statistics.median(off["per_round"]["lookup_redis"])
    pg_ratio = statistics.median(off["per_round"]["lookup_postgresql"])
    on_ratio = statistics.median(on["per_round"]["lookup_redis"])
    post_ratio = statistics.median(off["per_round"]["post_json"])
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "wrk_cpus": "1", "connections": CONNECTIONS,
             "rounds": ROUNDS, "round_s": ROUND_S, "keys": KEYS, "candidates": candidates,
             "elapsed_s": round(time.perf_counter() - started, 1)}
    return [
        {"benchmark": "lookups", "metric": "prewarm_1m_score_records_s" if candidates == CANDIDATES
         else f"prewarm_{candidates}_score_records_s", "value": report.seconds, "unit": "s",
         "target": f"<= {TARGET_PREWARM_S:g}", "passed": report.seconds <= TARGET_PREWARM_S and counts_match,
         "details": {**report.as_dict(), "score_rows": expected["score_rows"], "postgresql": expected,
                     "redis_fields": warm["redis_fields"], "counts_match": counts_match, "seed_s": warm["seed_s"],
                     "records_per_s": round(report.tickets / report.seconds)}},
        {"benchmark": "lookups", "metric": "score_lookup_vs_noop_captcha_throttle_off", "value": round(off_ratio, 3),
         "unit": "×", "target": f">= {TARGET_OFF}",
         "passed": off_ratio >= TARGET_OFF and not off["unexpected"]["lookup_redis"],
         "details": {"requests_per_s": off["requests_per_s"], "per_round": off["per_round"],
                     "samples": off["samples"], "statuses": off["statuses"], **setup}},
        {"benchmark": "lookups", "metric": "score_lookup_postgresql_direct_vs_noop", "value": round(pg_ratio, 3),
         "unit": "×", "target": "naive baseline",
         "passed": None if not off["unexpected"]["lookup_postgresql"] else False,
         "details": {"redis_vs_postgresql": round(off_ratio / pg_ratio, 2) if pg_ratio else None}},
        {"benchmark": "lookups", "metric": "post_json_body_vs_noop", "value": round(post_ratio, 3), "unit": "×",
         "target": "calibration", "passed": None if not off["unexpected"]["post_json"] else False,
         "details": {"meaning": "the same POST bodies read and answered with a fixed body: what the request's "
                                "shape costs before any lookup work"}},
        {"benchmark": "lookups", "metric": "score_lookup_vs_noop_captcha_throttle_on", "value": round(on_ratio, 3),
         "unit": "×", "target": f">= {TARGET_ON}",
         "passed": on_ratio >= TARGET_ON and not on["unexpected"]["lookup_redis"],
         "details": {"requests_per_s": on["requests_per_s"], "per_round": on["per_round"], "samples": on["samples"],
                     "statuses": on["statuses"], "config": ON}},
    ]


if __name__ == "__main__":
    import sys

    for figure in run(int(sys.argv[1]) if len(sys.argv) > 1 else CANDIDATES):
        print(figure)
