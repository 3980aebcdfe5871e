"""The seat-hold path and the waiting-room poll vs the framework's floor, and Redis holds vs PostgreSQL row locks.

**Set-up.** A scratch database with one exam open for registration, two sites in province 11
with 6,000 seats each (ample: nobody is ever refused) and 5,000 candidates, each with a draft
registration (SQL), a session (``core.sessions.create``), a place in the exam's waiting room
(``queueing.waiting_room.join``, first come first served: the room opened an hour ago) and an
admission token (``queueing.admission.issue`` under the key the gateway derives from its
``EXAMGATE_SECRET_KEY``, set explicitly here). One gateway process pinned to core 0, live config:
the exam's queue on (``admit_per_s`` 1; no worker runs, so the serving counter stays at 0 and no
poll is admitted during the run), one generous candidate-keyed rate-limit rule on the seat route
(so the limiter runs on every hold), loop-lag shedding off. The gateway loads the seat counts itself
(``GET /api/v1/exams/{id}/sites``). No worker: the hold events pile up in the exam's stream
(a few hundred thousand entries, flushed afterwards) and PostgreSQL is not written during the run.

**Figures 1 and 2** are measured in interleaved rounds (the order of the four loads alternates)
beside the bare aiohttp app's ``GET /noop`` (``benchmarks.bare_app``, pinned to core 0 too: the
floor the targets are ratios to) and examgate's own ``/_bench/noop`` (the secondary ``*_vs_noop``
figures), wrk on core 1 with 64 connections, each ratio the median of the per-round ratios:

1. ``PUT /api/v1/registrations/{id}/seat`` (session, admission token, rate limit, hold script):
   a wrk Lua script rotates through the 5,000 (registration, session, admission token) tuples and
   sends each registration alternately to site A and site B, so nearly every request *moves* a hold
   (the first pass takes them; a handful refresh at the seams between runs). Target ≥ 0.4 × the bare GET.
2. ``GET /api/v1/exams/{id}/queue/{ticket}`` with the candidate's session, rotating through the
   5,000 places. Target ≥ 0.6 × the bare GET.

Every answer's status is counted by the Lua script; any status but 200 fails the figure.

**Figure 3** (no target) is the 2,000-candidate race for a 100-seat site done twice, in the
benchmark's own process with the gateway stopped: the naive design, one PostgreSQL transaction per
request through an asyncpg pool (``SELECT … FOR UPDATE`` on the site row, count its registrations,
``UPDATE`` the registration when a seat is left), and the Redis design, 2,000 concurrent
``queueing.holds.hold_seat`` through one ``AutoPipeline``. Both must hand out exactly 100 seats; each
is run ``RACE_RUNS`` times, alternately, and the median wall time reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import redis

from benchmarks import costs
from benchmarks.common import bare_app, scrape_metrics, scratch_stores, wait_config_version
from benchmarks.wrk import LUA_STATUS_COUNTER, WrkResult, run_wrk, statuses
from core import redis_cluster, sessions
from core.redis import AutoPipeline
from core.scripts import preload
from core.timeutil import utcnow
from loadtest.processes import Process, start_gateway
from queueing import admission, holds, waiting_room
from queueing import keys as qkeys

CANDIDATES = 5_000
SITE_CAPACITY = 6_000  # per site, two sites: every hold and move succeeds
RACE_CANDIDATES = 2_000
RACE_SEATS = 100
RACE_RUNS = 3
RACE_PG_POOL = 20
ROUNDS = 7
ROUND_S = 3
CONNECTIONS = 64
TARGET_SEAT = 0.4
TARGET_POLL = 0.6
SEAT_ROUTE = "registrations.seat.put"
GENEROUS = {"rate": 10_000_000, "period_s": 60, "burst": 10_000_000, "mode": "enforce", "on_redis_error": "open"}
QUEUE = {"enabled": True, "admit_per_s": 1, "place_ttl_s": 600, "admission_ttl_s": 3600}
SECRET_KEY = secrets.token_urlsafe(32)
_REQUESTS = re.compile(r"(\d+) requests in")


def admission_key(secret_key: str) -> bytes:
    """The admission secret the gateway derives: ``Settings.derived_key("admission")`` (HMAC-SHA256 of the purpose)."""
    return hmac.new(secret_key.encode(), b"admission", hashlib.sha256).digest()


# -- the stores ---------------------------------------------------------------------------------


async def make_exam(conn: asyncpg.Connection, capacities: list[int]) -> tuple[int, list[int]]:
    """An exam open for registration (one level, specialty and subject) with sites in province 11; (exam, sites)."""
    now = utcnow()
    code = f"B-{secrets.token_hex(4)}"
    exam_id = await conn.fetchval(
        """INSERT INTO exams (code, name, registration_opens_at, registration_closes_at,
               ticket_print_opens_at, ticket_print_closes_at, exam_starts_at, score_release_at, fee_per_subject_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 5600) RETURNING id""",
        code, f"基准考试 {code}", now - timedelta(hours=1), now + timedelta(days=10), now + timedelta(days=20),
        now + timedelta(days=30), now + timedelta(days=30), now + timedelta(days=60),
    )  # fmt: skip
    await conn.execute("INSERT INTO exam_levels (exam_id, code, name) VALUES ($1, 'mid', '中级')", exam_id)
    await conn.execute(
        "INSERT INTO exam_specialties (exam_id, level_code, code, name) VALUES ($1, 'mid', 'fin', '金融')", exam_id)
    starts = now + timedelta(days=30)
    await conn.execute("""INSERT INTO exam_subjects (exam_id, code, name, starts_at, ends_at, position)
                          VALUES ($1, '101', '经济基础知识', $2, $3, 0)""",
                       exam_id, starts, starts + timedelta(hours=2))
    await conn.execute("""INSERT INTO exam_specialty_subjects (exam_id, level_code, specialty_code, subject_code)
                          VALUES ($1, 'mid', 'fin', '101')""", exam_id)
    sites = []
    for index, capacity in enumerate(capacities):
        sites.append(await conn.fetchval(
            """INSERT INTO exam_sites (exam_id, province, city, name, address, capacity, rooms)
               VALUES ($1, '11', '测试市', $2, '测试路 1 号', $3, $4) RETURNING id""",
            exam_id, f"第{index + 1}考点", capacity, max(1, -(-capacity // 30))))
    return int(exam_id), [int(s) for s in sites]


async def make_registrations(conn: asyncpg.Connection, exam_id: int, count: int) -> list[tuple[int, int]]:
    """``count`` candidates, each with a draft registration for the exam: [(candidate, registration)]."""
    tag = secrets.token_hex(4)
    rows = await conn.fetch(
        """WITH c AS (
               INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               SELECT 'b' || $1 || '-' || g, 'x', '考生' || g, 'passport', 'P' || $1 || g,
                      '13' || lpad(($2 + g)::text, 9, '0'), 'b' || $1 || g || '@example.com', 'q', 'x'
                 FROM generate_series(1, $3::int) AS g
               RETURNING id)
           INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                      subjects, work_years, status)
           SELECT id, $4, '11', '测试市', 'mid', 'fin', '{101}', 5, 'approved' FROM c
           RETURNING candidate_id, id""",
        tag, secrets.randbelow(900_000_000), count, exam_id,
    )  # fmt: skip
    return sorted((row["candidate_id"], row["id"]) for row in rows)


async def prepare(pg_dsn: str, redis_url: str, *, cluster: bool = False) -> dict[str, Any]:
    """Both exams, the candidates, their sessions, queue places and admission tokens (in a Redis Cluster with
    ``cluster``)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        exam_id, sites = await make_exam(conn, [SITE_CAPACITY, SITE_CAPACITY])
        people = await make_registrations(conn, exam_id, CANDIDATES)
        race_exam, (race_site,) = await make_exam(conn, [RACE_SEATS])
        race_registrations = [r for _, r in await make_registrations(conn, race_exam, RACE_CANDIDATES)]
        opens_at_s = (await conn.fetchval("SELECT registration_opens_at FROM exams WHERE id = $1", exam_id)).timestamp()
    finally:
        await conn.close()
    client = redis_cluster.pipeline(redis_url, cluster=cluster, connections=2, timeout_ms=30_000)
    try:
        now = utcnow()
        made = await asyncio.gather(*(sessions.create(client, c, now=now) for c, _ in people))
        # Approved registrations hold their seat right from the approval (version 1 here, inserted approved).
        await asyncio.gather(*(holds.grant_seat_right(client, exam_id, r, 1) for _, r in people))
        places = await asyncio.gather(*(waiting_room.join(client, exam_id, c, opens_at_s=opens_at_s,
                                                          place_ttl_s=QUEUE["place_ttl_s"],
                                                          admit_per_s=QUEUE["admit_per_s"])
                                        for c, _ in people))
    finally:
        await client.close()
    key, now_s = admission_key(SECRET_KEY), time.time()
    tuples = [{"candidate": c, "registration": r, "session": s.token, "ticket": p.ticket,
               "admission": admission.issue(key, c, exam_id, ttl_s=QUEUE["admission_ttl_s"], now_s=now_s)}
              for (c, r), s, p in zip(people, made, places, strict=True)]
    return {"exam_id": exam_id, "sites": sites, "people": tuples, "race_exam": race_exam, "race_site": race_site,
            "race_registrations": race_registrations,
            "positions": [min(p.position for p in places), max(p.position for p in places)]}


# -- wrk Lua scripts ----------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    assert re.fullmatch(r"[A-Za-z0-9_./ -]*", text), text  # tokens and paths: nothing to escape
    return f'"{text}"'




def write_seat_script(directory: Path, data: dict[str, Any], start: int) -> str:
    """A Lua script PUTting each registration alternately to site A and B, continuing from request ``start``."""
    rows = ",\n".join(
        "{" + ", ".join([_lua_string(f"/api/v1/registrations/{p['registration']}/seat"),
                         _lua_string(f"Bearer {p['session']}"), _lua_string(p["admission"])]) + "}"
        for p in data["people"])
    site_a, site_b = data["sites"]
    path = directory / f"seat-{start}.lua"
    path.write_text(f"""local items = {{
{rows}
}}
local count = #items
local n = {start}
local moves = {{}}  -- formatted once: request() only picks (to site A on even passes, B on odd ones)
function init(args)
  for i, item in ipairs(items) do
    local headers = {{["Authorization"] = item[2], ["X-Admission-Token"] = item[3],
                      ["Content-Type"] = "application/json"}}
    moves[i] = wrk.format("PUT", item[1], headers, '{{"site_id":{site_a}}}')
    moves[count + i] = wrk.format("PUT", item[1], headers, '{{"site_id":{site_b}}}')
  end
end
function request()
  local pick = n % count + 1 + (math.floor(n / count) % 2) * count
  n = n + 1
  return moves[pick]
end
{LUA_STATUS_COUNTER}""")
    return str(path)


def write_poll_script(directory: Path, data: dict[str, Any]) -> str:
    """A Lua script polling each candidate's own place in turn."""
    rows = ",\n".join(
        "{" + _lua_string(f"/api/v1/exams/{data['exam_id']}/queue/{p['ticket']}") + ", "
        + _lua_string(f"Bearer {p['session']}") + "}" for p in data["people"])
    path = directory / "poll.lua"
    path.write_text(f"""local items = {{
{rows}
}}
local count = #items
local n = 0
local polls = {{}}
function init(args)
  for i, item in ipairs(items) do polls[i] = wrk.format("GET", item[1], {{["Authorization"] = item[2]}}) end
end
function request()
  local poll = polls[n % count + 1]
  n = n + 1
  return poll
end
{LUA_STATUS_COUNTER}""")
    return str(path)


# -- figures 1 and 2 ----------------------------------------------------------------------------


def _metric_sum(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name.startswith(prefix)}


class Loads:
    """The three loads of the interleaved rounds, with what each wrk run answered."""

    def __init__(self, url: str, metrics_token: str, data: dict[str, Any], directory: Path) -> None:
        self.url = url
        self.metrics_token = metrics_token
        self.data = data
        self.directory = directory
        self.seat_requests = 0  # requests sent so far: the next seat run continues the A/B alternation
        self.poll_script = write_poll_script(directory, data)
        self.statuses: dict[str, dict[str, int]] = {"seat": {}, "poll": {}}
        self.redis_per_seat: list[dict[str, float]] = []
        self.socket_errors: list[str] = []
        self.meter: costs.Meter | None = None

    def _count(self, name: str, result: WrkResult) -> None:
        counted = statuses(result.output)
        if not counted:
            raise RuntimeError(f"the wrk script of {name} reported no statuses:\n{result.output}")
        if result.non_2xx != sum(n for status, n in counted.items() if not 200 <= int(status) < 400):
            raise RuntimeError(f"wrk and its script disagree on the non-2xx answers of {name}:\n{result.output}")
        for status, count in counted.items():
            self.statuses[name][status] = self.statuses[name].get(status, 0) + count
        if result.socket_errors:
            self.socket_errors.append(f"{name}: {result.socket_errors}")

    def noop(self, duration_s: int) -> float:
        return run_wrk(self.url + "/_bench/noop", duration_s=duration_s, connections=CONNECTIONS).requests_per_s

    def seat(self, duration_s: int, *, measured: bool = True) -> float:
        script = write_seat_script(self.directory, self.data, self.seat_requests)
        before = scrape_metrics(self.url, self.metrics_token)
        with costs.metered(self.meter if measured else None, "seat_hold") as metered:
            result = run_wrk(self.url + "/", duration_s=duration_s, connections=CONNECTIONS, script=script)
            metered.requests = costs.wrk_requests(result.output)
        after = scrape_metrics(self.url, self.metrics_token)
        done = _REQUESTS.search(result.output)
        answered = int(done[1]) if done else 0
        self.seat_requests += answered
        if measured:
            self._count("seat", result)
            counted = {*_metric_sum(after, "examgate_redis_"), *_metric_sum(after, "examgate_ratelimit_events")}
            delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in counted if "in_flight" not in name}
            self.redis_per_seat.append({name: round(value / max(1, answered), 3) for name, value in delta.items()})
        return result.requests_per_s

    def poll(self, duration_s: int, *, measured: bool = True) -> float:
        with costs.metered(self.meter if measured else None, "queue_poll") as metered:
            result = run_wrk(self.url + "/", duration_s=duration_s, connections=CONNECTIONS, script=self.poll_script)
            metered.requests = costs.wrk_requests(result.output)
        if measured:
            self._count("poll", result)
        return result.requests_per_s


def measure(loads: Loads, bare_url: str) -> dict[str, list[float]]:
    """Interleaved rounds of the four loads (order reversed every other round) after a warm-up of each."""

    def bare(duration_s: int) -> float:
        result = run_wrk(bare_url + "/noop", duration_s=duration_s, connections=CONNECTIONS)
        if result.non_2xx:
            raise RuntimeError(f"{result.url}: {result.non_2xx} non-2xx responses")
        return result.requests_per_s

    bare(2)
    loads.noop(2)
    loads.seat(3, measured=False)  # one pass over the registrations: the gateway caches their refs
    loads.poll(2, measured=False)
    runs = {"bare": bare, "noop": loads.noop, "seat_hold": loads.seat, "queue_poll": loads.poll}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs.items())
    for round_no in range(ROUNDS):
        for name, run in (order if round_no % 2 == 0 else order[::-1]):
            rps = run(ROUND_S)
            samples[name].append(rps)
            print(f"  round {round_no + 1}/{ROUNDS} {name}: {rps:,.0f} req/s", flush=True)
    return samples


def _per_round(samples: dict[str, list[float]], name: str, baseline: str) -> list[float]:
    return [round(a / b, 4) for a, b in zip(samples[name], samples[baseline], strict=True)]


# -- figure 3: the 2,000-to-100 race ------------------------------------------------------------


async def _naive_take(pool: asyncpg.Pool, exam_id: int, site_id: int, registration_id: int) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        capacity = await conn.fetchval("SELECT capacity FROM exam_sites WHERE id = $1 FOR UPDATE", site_id)
        taken = await conn.fetchval("SELECT count(*) FROM registrations WHERE exam_id = $1 AND site_id = $2",
                                    exam_id, site_id)
        if taken >= capacity:
            return False
        await conn.execute("""UPDATE registrations SET site_id = $1, hold_expires_at = now() + interval '30 minutes',
                                                      updated_at = now() WHERE id = $2""", site_id, registration_id)
        return True


async def _naive_race(pool: asyncpg.Pool, exam_id: int, site_id: int, registrations: list[int]) -> dict[str, Any]:
    await pool.execute("UPDATE registrations SET site_id = NULL, hold_expires_at = NULL WHERE exam_id = $1", exam_id)
    started = time.perf_counter()
    won = await asyncio.gather(*(_naive_take(pool, exam_id, site_id, r) for r in registrations))
    wall_s = time.perf_counter() - started
    stored = await pool.fetchval("SELECT count(*) FROM registrations WHERE exam_id = $1 AND site_id = $2",
                                 exam_id, site_id)
    return {"wall_s": wall_s, "holds": sum(won), "stored": stored}


async def _redis_race(client: AutoPipeline, store: Any, exam_id: int, site_id: int,
                      registrations: list[int]) -> dict[str, Any]:
    await store.delete(*holds.event_keys(exam_id))
    await store.set(qkeys.site_left(exam_id, site_id), RACE_SEATS)

    async def take(registration_id: int) -> bool:
        try:
            await holds.hold_seat(client, exam_id, registration_id, site_id, ttl_s=1800)
        except holds.SiteFull:
            return False
        return True

    started = time.perf_counter()
    won = await asyncio.gather(*(take(r) for r in registrations))
    wall_s = time.perf_counter() - started
    stored = await store.hlen(qkeys.holds(exam_id))
    left = int(await store.get(qkeys.site_left(exam_id, site_id)))
    return {"wall_s": wall_s, "holds": sum(won), "stored": stored, "left": left}


async def race(pg_dsn: str, redis_url: str, exam_id: int, site_id: int, registrations: list[int]) -> dict[str, Any]:
    """The race ``RACE_RUNS`` times each way, alternately; median wall times and whether both gave exactly 100."""
    import redis.asyncio as aioredis

    pool = await asyncpg.create_pool(pg_dsn, min_size=RACE_PG_POOL, max_size=RACE_PG_POOL)
    client = AutoPipeline(redis_url, connections=1, timeout_ms=30_000)
    store = aioredis.Redis.from_url(redis_url)
    runs: dict[str, list[dict[str, Any]]] = {"postgresql_row_lock": [], "redis_hold_script": []}
    try:
        await preload(client, holds.hold_scripts())
        for run_no in range(RACE_RUNS):
            ways = [("postgresql_row_lock", lambda: _naive_race(pool, exam_id, site_id, registrations)),
                    ("redis_hold_script", lambda: _redis_race(client, store, exam_id, site_id, registrations))]
            for name, go in ways if run_no % 2 == 0 else ways[::-1]:
                result = await go()
                runs[name].append(result)
                print(f"  race {run_no + 1}/{RACE_RUNS} {name}: {result['wall_s'] * 1000:,.0f} ms, "
                      f"{result['holds']} holds", flush=True)
    finally:
        await pool.close()
        await client.close()
        await store.aclose()
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        wall_s = statistics.median(r["wall_s"] for r in results)
        summary[name] = {"wall_ms": round(wall_s * 1000, 1), "requests_per_s": round(len(registrations) / wall_s),
                         "holds_per_s": round(RACE_SEATS / wall_s),
                         "exactly_100": all(r["holds"] == r["stored"] == RACE_SEATS for r in results),
                         "runs": [{**r, "wall_s": round(r["wall_s"], 4)} for r in results]}
    return summary


# -- the benchmark ------------------------------------------------------------------------------


def _check_route(url: str, data: dict[str, Any]) -> None:
    """One seat request and one poll by hand, so a broken route fails with its answer rather than a count."""
    person, site = data["people"][0], data["sites"][0]
    for method, path, body, headers in [
        ("PUT", f"/api/v1/registrations/{person['registration']}/seat", f'{{"site_id":{site}}}'.encode(),
         {"X-Admission-Token": person["admission"], "Content-Type": "application/json"}),
        ("GET", f"/api/v1/exams/{data['exam_id']}/queue/{person['ticket']}", None, {}),
    ]:
        request = urllib.request.Request(url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {person['session']}", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from exc
        print(f"  {method} {path.split('/api/v1/')[1][:40]}…: {answer[:120].decode(errors='replace')}", flush=True)


def _load_inventory(url: str, data: dict[str, Any], redis_url: str, *, cluster: bool = False) -> None:
    """Have the gateway load the exam's seat counts (as a candidate's first site listing does)."""
    with urllib.request.urlopen(f"{url}/api/v1/exams/{data['exam_id']}/sites", timeout=10) as resp:
        resp.read()
    client: Any = redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    try:
        left = [client.get(qkeys.site_left(data["exam_id"], s)) for s in data["sites"]]
    finally:
        client.close()
    if None in left:
        raise RuntimeError(f"the gateway did not load the seat counts: {left}")


def start_seat_gateway(pg_dsn: str, redis_url: str, data: dict[str, Any], **env: str) -> Process:
    """One gateway process on core 0 set up for the seat loads, both routes checked by hand.

    Live config: the exam's queue on, the generous candidate rule on the seat route, loop-lag
    shedding off; the exam's seat counts loaded. ``env`` adds settings (a Redis Cluster's, say).
    """
    settings: dict[str, Any] = {"EXAMGATE_BENCH_ROUTES": "true", "EXAMGATE_SECRET_KEY": SECRET_KEY, **env}
    gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", **settings)
    try:
        version = gateway.patch_config({
            "ratelimit": {"rules": [{"id": "bench-seat-candidate", "routes": [SEAT_ROUTE], "key": "candidate",
                                     **GENEROUS}]},
            "queue": {"exams": {str(data["exam_id"]): QUEUE}},
            "shedding": {"max_loop_lag_ms": 0},
        })  # fmt: skip
        wait_config_version(gateway.url, version)
        _load_inventory(gateway.url, data, redis_url, cluster=env.get("EXAMGATE_REDIS_CLUSTER") == "true")
        _check_route(gateway.url, data)
    except Exception:
        gateway.stop()
        raise
    return gateway


def run() -> list[dict[str, Any]]:
    """Measure and return the figures with their targets."""
    started = time.perf_counter()
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-seats-") as tmp:
        data = asyncio.run(prepare(pg_dsn, redis_url))
        print(f"  prepared {CANDIDATES:,} candidates (sessions, registrations, queue places "
              f"{data['positions'][0]}..{data['positions'][1]}, admission tokens) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        race_summary = asyncio.run(race(pg_dsn, redis_url, data["race_exam"], data["race_site"],
                                        data["race_registrations"]))
        with bare_app() as bare_url:
            gateway = start_seat_gateway(pg_dsn, redis_url, data)
            try:
                loads = Loads(gateway.url, gateway.metrics_token(), data, Path(tmp))
                loads.meter = costs.Meter("seats", gateway.proc.pid, redis_url, pg_dsn)
                samples = measure(loads, bare_url)
            finally:
                gateway.stop()
    elapsed_s = round(time.perf_counter() - started, 1)
    seat_rounds, poll_rounds = _per_round(samples, "seat_hold", "bare"), _per_round(samples, "queue_poll", "bare")
    seat_ratio, poll_ratio = statistics.median(seat_rounds), statistics.median(poll_rounds)
    seat_noop_rounds = _per_round(samples, "seat_hold", "noop")
    poll_noop_rounds = _per_round(samples, "queue_poll", "noop")
    seat_noop, poll_noop = statistics.median(seat_noop_rounds), statistics.median(poll_noop_rounds)
    unexpected = {name: {s: n for s, n in counted.items() if s != "200"} for name, counted in loads.statuses.items()}
    median_rps = {name: round(statistics.median(values)) for name, values in samples.items()}
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "bare_app_cpus": "0", "wrk_cpus": "1",
             "connections": CONNECTIONS, "rounds": ROUNDS, "round_s": ROUND_S, "candidates": CANDIDATES,
             "elapsed_s": elapsed_s}
    naive, scripted = race_summary["postgresql_row_lock"], race_summary["redis_hold_script"]
    speedup = round(naive["wall_ms"] / scripted["wall_ms"], 1)
    return [
        {"benchmark": "seats", "metric": "seat_hold_vs_bare_aiohttp", "value": round(seat_ratio, 3), "unit": "×",
         "target": f">= {TARGET_SEAT}", "passed": seat_ratio >= TARGET_SEAT and not unexpected["seat"],
         "details": {"requests_per_s": median_rps, "per_round": seat_rounds, "samples": samples,
                     "statuses": loads.statuses["seat"], "unexpected_statuses": unexpected["seat"],
                     "per_request_counters": loads.redis_per_seat, "socket_errors": loads.socket_errors,
                     "path": "PUT /api/v1/registrations/{id}/seat moving between 2 sites; session + admission "
                             "token + 1 candidate rule + hold script", **setup}},
        {"benchmark": "seats", "metric": "queue_poll_vs_bare_aiohttp", "value": round(poll_ratio, 3), "unit": "×",
         "target": f">= {TARGET_POLL}", "passed": poll_ratio >= TARGET_POLL and not unexpected["poll"],
         "details": {"per_round": poll_rounds, "statuses": loads.statuses["poll"],
                     "unexpected_statuses": unexpected["poll"],
                     "admitted": "none: no worker advances the room, serving stays 0 (admit_per_s 1)"}},
        {"benchmark": "seats", "metric": "seat_hold_vs_noop", "value": round(seat_noop, 3), "unit": "×",
         "target": None, "passed": None if not unexpected["seat"] else False,
         "details": {"per_round": seat_noop_rounds}},
        {"benchmark": "seats", "metric": "queue_poll_vs_noop", "value": round(poll_noop, 3), "unit": "×",
         "target": None, "passed": None if not unexpected["poll"] else False,
         "details": {"per_round": poll_noop_rounds}},
        {"benchmark": "seats", "metric": "race_2000_for_100_pg_row_lock_vs_redis_script", "value": speedup,
         "unit": "× slower", "target": None,
         "passed": None if naive["exactly_100"] and scripted["exactly_100"] else False,
         "details": {**race_summary, "pg_pool": RACE_PG_POOL, "candidates": RACE_CANDIDATES, "seats": RACE_SEATS}},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
