"""Score release: prewarming a million records, and a score lookup beside the framework's floor.

**Set-up.** ``seed.seed`` writes 1,000,000 candidates into a scratch database (each with an
exam-A registration, an admission ticket and two scores); exam A's score release is moved an
hour into the past.

**Figure 1**: ``lookups.prewarm.prewarm`` of exam A into the benchmarks' Redis database, timed
(1,000,000 records with their 2,000,000 scores, each record under its id number and its ticket
number), and the counts checked against PostgreSQL. Target ≤ 30 s.

**The lookup figures**: one gateway process pinned to core 0, and the bare aiohttp app
(``benchmarks.bare_app``) pinned to core 0 too; wrk on core 1 with 64 connections, a wrk Lua
script posting score lookups by id number, rotating through ``KEYS`` seeded candidates
(regenerated from their index with ``seed.lookup_keys``). Every scripted answer's status is
counted; anything but 200 fails the figure. Two phases, each measured in interleaved rounds beside
the bare app's ``GET /noop`` (the floor the targets are ratios to) and examgate's own
``/_bench/noop`` (the secondary ``*_vs_noop`` figures), each ratio the median of the per-round
ratios:

- *captcha and throttles off* (``scores.lookup`` captcha ``off``, no rate-limit rules): the
  lookup served from Redis (target ≥ 0.6 × the bare GET), and beside it the naive design,
  ``POST /_bench/scores-lookup-pg``: the same parsing and answer, the record read straight
  from PostgreSQL (no target: the baseline); ``POST /_bench/post-json``, which reads the same
  body and answers a fixed one (what a POST with a JSON body costs examgate before any lookup
  work); and the bare app's ``POST /post-json`` with the same bodies through the same kind of
  script (what the body costs aiohttp itself: ``bare_post_json_vs_bare_get``);
- *captcha and throttles on*: captcha ``either`` passed with an operator-issued load-test token
  (``X-Loadtest-Token``), and the production ``lookup-ip`` rule plus an ``id_number`` rule,
  both generous so that no lookup is refused: every lookup runs the rate-limit script
  (target ≥ 0.45 × the bare GET).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from benchmarks import costs
from benchmarks.common import bare_app, scratch_stores, wait_config_version
from benchmarks.wrk import LUA_STATUS_COUNTER, run_wrk, statuses
from loadtest.processes import Process, start_gateway
from lookups import prewarm
from seed import EXAM_A_CODE, lookup_keys, seed

CANDIDATES = 1_000_000
KEYS = 20_000
ROUNDS = 5
ROUND_S = 3
CONNECTIONS = 64
TARGET_PREWARM_S = 30.0
TARGET_OFF = 0.6  # over the bare app's GET
TARGET_ON = 0.45
SCORES = "/api/v1/scores/lookup"
NAIVE = "/_bench/scores-lookup-pg"
POST_JSON = "/_bench/post-json"
NOOP = "/_bench/noop"
BARE_GET = "/noop"
BARE_POST_JSON = "/post-json"
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
            if key.rpartition(b":")[2].isdigit():  # a bucket (not the meta hash or the generation)
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


# -- the lookup figures ------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Load:
    """One wrk load: a whole URL, plain (a GET) or with the status-counting script that POSTs the lookup bodies."""

    url: str
    script: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseLoads:
    """One phase's live config and loads by name, and a lookup body to check the scripted ones with by hand."""

    label: str
    config: dict[str, object]
    loads: dict[str, Load]
    body: str


def phases(gateway: Process, bare_url: str | None, exam_id: int, candidates: int,
           directory: Path) -> list[PhaseLoads]:
    """Both phases' loads; the bare app's (its GET, and its POST in the first phase) only with ``bare_url``."""
    bodies = _bodies(exam_id, KEYS, candidates)
    token = _loadtest_token(gateway)

    def scripted(label: str, name: str, base_url: str, path: str, headers: dict[str, str]) -> Load:
        return Load(base_url + path, write_script(directory, f"{label}-{name}", path, bodies, headers), headers)

    off: dict[str, Load] = {"noop": Load(gateway.url + NOOP)}
    on: dict[str, Load] = {"noop": Load(gateway.url + NOOP)}
    if bare_url is not None:
        off["bare"] = on["bare"] = Load(bare_url + BARE_GET)
        off["bare_post_json"] = scripted("off", "bare_post_json", bare_url, BARE_POST_JSON, {})
    off["lookup_redis"] = scripted("off", "lookup_redis", gateway.url, SCORES, {})
    off["lookup_postgresql"] = scripted("off", "lookup_postgresql", gateway.url, NAIVE, {})
    off["post_json"] = scripted("off", "post_json", gateway.url, POST_JSON, {})
    on["lookup_redis"] = scripted("on", "lookup_redis", gateway.url, SCORES, {"X-Loadtest-Token": token})
    return [PhaseLoads("off", OFF, off, bodies[0]), PhaseLoads("on", ON, on, bodies[0])]


def apply_phase(gateway: Process, phase: PhaseLoads) -> None:
    """Apply the phase's live config, then post one lookup body to each scripted load by hand.

    A broken route fails here with its answer, rather than later as a count of statuses.
    """
    wait_config_version(gateway.url, gateway.patch_config(phase.config))
    for load in phase.loads.values():
        if load.script is not None:
            answer = _post(load.url, phase.body, load.headers)
            print(f"  {phase.label} {load.url}: {json.dumps(answer, ensure_ascii=False)[:100]}…", flush=True)


class Phase:
    """The loads of one phase, with every status their scripts counted."""

    def __init__(self, loads: dict[str, Load], meter: costs.Meter | None = None,
                 metered: dict[str, str] | None = None) -> None:
        self.loads = loads
        self.meter = meter
        self.metered = metered or {}  # load name → the peak path its costs are recorded under
        self.statuses: dict[str, dict[str, int]] = {name: {} for name, load in loads.items() if load.script}

    def run(self, name: str, duration_s: int, *, measured: bool = True) -> float:
        """One wrk run of the load ``name``: its requests/s (a plain GET must answer 2xx only)."""
        load = self.loads[name]
        path = self.metered.get(name) if measured else None
        with costs.metered(self.meter if path else None, path or name) as round_:
            result = run_wrk(load.url, duration_s=duration_s, connections=CONNECTIONS, script=load.script)
            round_.requests = costs.wrk_requests(result.output)
        if load.script is None:
            if result.non_2xx:
                raise RuntimeError(f"{load.url}: {result.non_2xx} non-2xx responses")
            return result.requests_per_s
        counted = statuses(result.output)
        if not counted:
            raise RuntimeError(f"the wrk script of {name} reported no statuses:\n{result.output}")
        if measured:
            for status, count in counted.items():
                self.statuses[name][status] = self.statuses[name].get(status, 0) + count
        return result.requests_per_s

    def measure(self, label: str) -> dict[str, list[float]]:
        """Interleaved rounds (order reversed every other round) after a warm-up of each load."""
        names = list(self.loads)
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
        """The statuses other than 200 the script of ``name`` counted (none for a plain GET: it raises)."""
        return {status: count for status, count in self.statuses.get(name, {}).items() if status != "200"}


def _per_round(samples: dict[str, list[float]], name: str, baseline: str) -> list[float]:
    return [round(a / b, 4) for a, b in zip(samples[name], samples[baseline], strict=True)]


def measure_lookups(gateway: Process, bare_url: str, exam_id: int, candidates: int,
                    directory: Path, meter: costs.Meter | None = None) -> dict[str, Any]:
    """Both phases; the samples, per-round ratios (to the bare GET and to noop) and statuses of each."""
    results: dict[str, Any] = {}
    for spec in phases(gateway, bare_url, exam_id, candidates, directory):
        apply_phase(gateway, spec)
        phase = Phase(spec.loads, meter, {"lookup_redis": "score_lookup" if spec.label == "off"
                                          else "score_lookup_protected"})
        samples = phase.measure(spec.label)
        measured = [name for name in spec.loads if name not in ("bare", "noop")]
        results[spec.label] = {
            "samples": samples,
            "vs_bare": {name: _per_round(samples, name, "bare") for name in [*measured, "noop"]},
            "vs_noop": {name: _per_round(samples, name, "noop") for name in measured if not name.startswith("bare")},
            "statuses": phase.statuses, "unexpected": {name: phase.unexpected(name) for name in phase.statuses},
            "requests_per_s": {name: round(statistics.median(v)) for name, v in samples.items()}}
    return results


def run(candidates: int = CANDIDATES) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    started = time.perf_counter()
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-lookups-") as tmp:
        warm = asyncio.run(seed_and_prewarm(pg_dsn, redis_url, candidates))
        with bare_app() as bare_url:
            gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")
            try:
                meter = costs.Meter("lookups", gateway.proc.pid, redis_url, pg_dsn)
                lookups = measure_lookups(gateway, bare_url, warm["exam_id"], candidates, Path(tmp), meter)
            finally:
                gateway.stop()
    report: prewarm.PrewarmReport = warm["report"]
    expected = warm["postgresql"]
    counts_match = (report.tickets == expected["tickets"] and report.scores == expected["scores"]
                    and warm["redis_fields"] == 2 * expected["tickets"])
    off, on = lookups["off"], lookups["on"]

    def median(phase: dict[str, Any], baseline: str, name: str) -> float:
        return statistics.median(phase[baseline][name])

    off_bare, on_bare = median(off, "vs_bare", "lookup_redis"), median(on, "vs_bare", "lookup_redis")
    body_bare, post_bare = median(off, "vs_bare", "bare_post_json"), median(off, "vs_bare", "post_json")
    off_noop, on_noop = median(off, "vs_noop", "lookup_redis"), median(on, "vs_noop", "lookup_redis")
    pg_noop, post_noop = median(off, "vs_noop", "lookup_postgresql"), median(off, "vs_noop", "post_json")
    off_ok, on_ok = not off["unexpected"]["lookup_redis"], not on["unexpected"]["lookup_redis"]
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "bare_app_cpus": "0", "wrk_cpus": "1",
             "connections": CONNECTIONS, "rounds": ROUNDS, "round_s": ROUND_S, "keys": KEYS, "candidates": candidates,
             "elapsed_s": round(time.perf_counter() - started, 1)}

    def figure(metric: str, value: float, target: str | None, passed: bool | None, **details: Any) -> dict[str, Any]:
        return {"benchmark": "lookups", "metric": metric, "value": round(value, 3), "unit": "×", "target": target,
                "passed": passed, "details": details}

    def unless_unexpected(name: str) -> bool | None:
        return None if not off["unexpected"][name] else False

    return [
        {"benchmark": "lookups", "metric": "prewarm_1m_score_records_s" if candidates == CANDIDATES
         else f"prewarm_{candidates}_score_records_s", "value": report.seconds, "unit": "s",
         "target": f"<= {TARGET_PREWARM_S:g}", "passed": report.seconds <= TARGET_PREWARM_S and counts_match,
         "details": {**report.as_dict(), "score_rows": expected["score_rows"], "postgresql": expected,
                     "redis_fields": warm["redis_fields"], "counts_match": counts_match, "seed_s": warm["seed_s"],
                     "records_per_s": round(report.tickets / report.seconds)}},
        figure("score_lookup_vs_bare_aiohttp_captcha_throttle_off", off_bare, f">= {TARGET_OFF}",
               off_bare >= TARGET_OFF and off_ok, requests_per_s=off["requests_per_s"], vs_bare=off["vs_bare"],
               vs_noop=off["vs_noop"], samples=off["samples"], statuses=off["statuses"], **setup),
        figure("score_lookup_vs_noop_captcha_throttle_off", off_noop, None, None if off_ok else False),
        figure("score_lookup_postgresql_direct_vs_noop", pg_noop, "naive baseline",
               unless_unexpected("lookup_postgresql"),
               redis_vs_postgresql=round(off_noop / pg_noop, 2) if pg_noop else None),
        figure("bare_post_json_vs_bare_get", body_bare, None, unless_unexpected("bare_post_json"),
               meaning="the bare app reading and parsing the same POST bodies, over its GET: what a small JSON "
                       "body costs aiohttp itself (calibration)"),
        figure("post_json_body_vs_bare_aiohttp", post_bare, None, unless_unexpected("post_json"),
               meaning="examgate's /_bench/post-json (the same bodies read and answered with a fixed body) over "
                       "the bare GET: the request's shape through the whole edge, before any lookup work"),
        figure("post_json_body_vs_noop", post_noop, None, unless_unexpected("post_json")),
        figure("score_lookup_vs_bare_aiohttp_captcha_throttle_on", on_bare, f">= {TARGET_ON}",
               on_bare >= TARGET_ON and on_ok, requests_per_s=on["requests_per_s"], vs_bare=on["vs_bare"],
               vs_noop=on["vs_noop"], samples=on["samples"], statuses=on["statuses"], config=ON),
        figure("score_lookup_vs_noop_captcha_throttle_on", on_noop, None, None if on_ok else False),
    ]


if __name__ == "__main__":
    import sys

    for figure in run(int(sys.argv[1]) if len(sys.argv) > 1 else CANDIDATES):
        print(figure)
