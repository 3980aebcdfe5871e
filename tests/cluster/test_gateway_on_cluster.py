"""Lookups, rate limits and the live config through a gateway on a Redis Cluster (three masters, a replica each).

One 2-process gateway runs with ``EXAMGATE_REDIS_CLUSTER=true`` against the module's own cluster, with the
settings ``tests/gateway/test_throttle.py`` measures under (bench routes, a limiter budget for arithmetic):

- **lookups**: an exam prewarmed through the admin route (each node's buckets written to that node), then
  scores and tickets by id number and by ticket number answered from Redis with PostgreSQL's tables not read,
  an unknown candidate answered the very 404 a single Redis gives, a score correction imported through the
  admin route answered at once, certificates verified from Redis alone;
- **rate accuracy**: ``test_throttle``'s sustained rate (within 5 % over both processes) and burst, the
  limiter's state on the one master of its ``{rl}`` tag;
- **live config**: ``test_live_propagation``'s ``ctl`` change in force in both processes within a second,
  and the watcher following the changes by sharded pub/sub alone, before and after the failover of the
  config's master (last: it kills that master).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster

from core.db import PoolSettings, create_pool
from gateway import keys
from gateway.configstore import CONFIG_KEY, ConfigStore, LiveConfigWatcher, shard_channel
from loadtest.cluster_servers import RedisClusterServers
from loadtest.processes import Process, start_gateway
from lookups import certificates, records
from ratelimit.keys import PREFIX as LIMITER_PREFIX
from tests.factories import settled_reads
from tests.gateway import test_live_propagation as live
from tests.gateway import test_throttle as throttle
from tests.gateway.seat_stack import bearer, set_live
from tests.gateway.test_lookup_routes import SCORES, TICKETS, client, make_results  # noqa: F401  (fixture)
from tests.lookups.test_certificates_store import add_certificates
from tests.lookups.test_corrections import _csv

ON_CLUSTER = {"EXAMGATE_REDIS_CLUSTER": "true"}
# tests/gateway/test_throttle.py's gateway settings: its checks are reused as they are.
THROTTLE_ENV = {"EXAMGATE_BENCH_ROUTES": "true", "EXAMGATE_METRICS_CACHE_S": "0",
                "EXAMGATE_RATELIMIT_BUDGET_MS": "1000"}
VERIFY = "/api/v1/certificates/verify"
# Headers that differ between any two answers, or between two servers whatever they answer.
PER_ANSWER = {"Date", "X-Request-ID", "Server", "Connection", "Keep-Alive"}


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, redis_cluster: RedisClusterServers) -> Iterator[Process]:
    process = start_gateway(pg_dsn, redis_cluster.url, workers=2, **ON_CLUSTER, **THROTTLE_ENV)
    process.extra["workers"] = "2"
    try:
        # The processes' pids, as tests/gateway/test_live_propagation.py's gateway records them.
        pids: set[int] = set()
        deadline = time.monotonic() + 15
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"only saw processes {pids}"
            pids.add(live.healthz(process)["pid"])
        process.extra["pids"] = ",".join(map(str, sorted(pids)))
        yield process
    finally:
        assert process.stop() == 0, process.log()[-3000:]



@pytest.fixture
async def open_lookups(gateway: Process) -> None:
    """No captcha and no throttles on the lookups in either process: what is checked is the answers."""
    await set_live(gateway, {"captcha": {"routes": {"tickets.lookup": "off", "scores.lookup": "off",
                                                    "certificates.verify": "off"}},
                             "ratelimit": {"rules": []}})


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(url, json=body, headers=headers) as resp:
        kept = {name: value for name, value in resp.headers.items() if name not in PER_ANSWER}
        return resp.status, await resp.json(), kept


async def _prewarm(session: aiohttp.ClientSession, gateway: Process, exam_id: int) -> dict[str, Any]:
    async with session.post(f"{gateway.url}/admin/api/v1/exams/{exam_id}/prewarm",
                            headers=bearer(gateway.admin_token())) as resp:
        assert resp.status == 200, await resp.text()
        report: dict[str, Any] = await resp.json()
        return report


async def _known_everywhere(session: aiohttp.ClientSession, gateway: Process, body: dict[str, Any]) -> None:
    """Wait until both processes' catalogues have the exam as it is now (its windows open): ``body``'s lookup
    answers 200 eight times in a row on new connections, then one more catalogue refresh."""
    deadline = time.monotonic() + 10
    seen = 0
    while seen < 8:
        assert time.monotonic() < deadline, "the gateway did not load the exam"
        status, _, _ = await _post(session, gateway.url + SCORES, body, Connection="close")
        seen = seen + 1 if status == 200 else 0
        if seen == 0:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)  # EXAMGATE_CATALOGUE_REFRESH_S is 0.5 s in tests


def _subjects(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(s["code"], s["score"]) for s in answer["subjects"]]


# --- lookups -------------------------------------------------------------------------------------------------


async def test_prewarmed_lookups_answer_from_the_cluster_and_postgresql_is_not_read(
        gateway: Process, pg: asyncpg.Connection, store: aioredis.Redis,
        http: aiohttp.ClientSession, redis_cluster: RedisClusterServers, open_lookups: None) -> None:
    exam_id, people = await make_results(pg, 40)
    report = await _prewarm(http, gateway, exam_id)
    assert (report["tickets"], report["scores"]) == (40, 40)
    # Every record under both its fields, as PostgreSQL writes it; the buckets spread over every master.
    placed = [(records.bucket_key(exam_id, name), name) for person in people
              for name in (records.field_name(mode, person[mode]) for mode in records.MODES)]
    for person in people:
        one = records.decode(await pg.fetchval(records.ONE_BY_ID_SQL, exam_id, person["id_number"]))
        for mode in records.MODES:
            name = records.field_name(mode, person[mode])
            assert records.decode(await store.hget(records.bucket_key(exam_id, name), name)) == one
    assert {redis_cluster.master_for_key(key) for key, _ in placed} == set(redis_cluster.masters())
    await _known_everywhere(http, gateway, {"exam_id": exam_id, "name": people[0]["name"],
                                            "id_number": people[0]["id_number"]})

    reads = {table: await settled_reads(pg, table) for table in ("admission_tickets", "scores")}

    async def lookups(person: dict[str, Any]) -> None:
        by_id, by_ticket, ticket = await asyncio.gather(
            _post(http, gateway.url + SCORES, {"exam_id": exam_id, "name": person["name"],
                                               "id_number": person["id_number"]}),
            _post(http, gateway.url + SCORES, {"exam_id": exam_id, "name": person["name"],
                                               "ticket_no": person["ticket_no"]}),
            _post(http, gateway.url + TICKETS, {"exam_id": exam_id, "name": person["name"],
                                                "id_number": person["id_number"]}))
        assert by_id[0] == by_ticket[0] == ticket[0] == 200, (by_id, by_ticket, ticket)
        assert by_id[1] == by_ticket[1]
        assert (by_id[1]["name"], by_id[1]["ticket_no"]) == (person["name"], person["ticket_no"])
        assert _subjects(by_id[1]) == [("101", person["score_101"]), ("102", 72.5)]
        assert (ticket[1]["ticket_no"], ticket[1]["room"], ticket[1]["seat_no"]) == (
            person["ticket_no"], person["room"], person["seat_no"])

    for _ in range(2):  # each person looked up in both modes, twice over, the processes taking turns at random
        await asyncio.gather(*(lookups(person) for person in people))
    assert {table: await settled_reads(pg, table) for table in reads} == reads


async def test_an_unknown_candidate_gets_the_404_a_single_redis_gives(
        gateway: Process, pg: asyncpg.Connection, http: aiohttp.ClientSession,
        client: TestClient, open_lookups: None) -> None:  # noqa: F811
    """``client`` is the gateway in-process on a single Redis (tests/gateway/test_lookup_routes.py)."""
    exam_id, people = await make_results(pg, 2)
    await _prewarm(http, gateway, exam_id)
    person = people[0]
    await _known_everywhere(http, gateway, {"exam_id": exam_id, "name": person["name"],
                                            "id_number": person["id_number"]})
    await client.app[keys.CATALOGUE].refresh()
    wrong = [(SCORES, {"exam_id": exam_id, "name": "李四", "id_number": person["id_number"]}),
             (SCORES, {"exam_id": exam_id, "name": person["name"], "id_number": "P000000000"}),
             (SCORES, {"exam_id": exam_id, "name": person["name"], "ticket_no": person["ticket_no"][:-1] + "9"}),
             (TICKETS, {"exam_id": exam_id, "name": person["name"], "id_number": "P000000000"}),
             (TICKETS, {"exam_id": exam_id, "name": "李四", "id_number": people[1]["id_number"]})]
    on_cluster = [await _post(http, gateway.url + path, body) for path, body in wrong]
    single = []
    for path, body in wrong:
        resp = await client.post(path, json=body)
        single.append((resp.status, await resp.json(),
                       {name: value for name, value in resp.headers.items() if name not in PER_ANSWER}))
    assert on_cluster == single
    assert {status for status, _, _ in on_cluster} == {404}
    assert len({str(body) for _, body, _ in on_cluster}) == 1
    assert on_cluster[0][1]["error"]["code"] == "not_found"


async def test_a_score_correction_import_is_answered_at_once_on_the_cluster(
        gateway: Process, pg: asyncpg.Connection, store: aioredis.Redis,
        http: aiohttp.ClientSession, open_lookups: None) -> None:
    exam_id, people = await make_results(pg, 4)
    code = await pg.fetchval("SELECT code FROM exams WHERE id = $1", exam_id)
    await _prewarm(http, gateway, exam_id)
    await _known_everywhere(http, gateway, {"exam_id": exam_id, "name": people[0]["name"],
                                            "id_number": people[0]["id_number"]})
    generation = await store.get(records.generation_key(exam_id))
    corrected, other = people[1], people[2]  # a score each changed; the third row is as stored
    data = _csv(code, [(corrected, "101", "99.5"), (other, "102", "33"), (people[3], "102", "72.5")])
    async with http.post(gateway.url + "/admin/api/v1/imports/scores", data=data, headers={
            "Content-Type": "text/csv", "Idempotency-Key": f"cluster-fix-{exam_id}",
            **bearer(gateway.admin_token())}) as resp:
        result = await resp.json()
        assert resp.status == 200 and (result["rows"], result["applied"]) == (3, 2), result

    async def scores(person: dict[str, Any], mode: str) -> list[tuple[str, float]]:
        status, body, _ = await _post(http, gateway.url + SCORES, {"exam_id": exam_id, "name": person["name"],
                                                                   mode: person[mode]}, Connection="close")
        assert status == 200, body
        return _subjects(body)

    # Answered after the COMMIT: every lookup, in either process, by either field, sees the correction.
    for _ in range(4):
        for mode in records.MODES:
            assert await scores(corrected, mode) == [("101", 99.5), ("102", 72.5)]
            assert await scores(other, mode) == [("101", other["score_101"]), ("102", 33.0)]
    # The settle step gave the exam a new generation (WATCH/MULTI on the one key, through RedisCluster).
    deadline = time.monotonic() + 5
    while (now := await store.get(records.generation_key(exam_id))) in (generation, None) or now.startswith(
            b"pending:"):
        assert time.monotonic() < deadline, f"the correction never settled: {now!r}"
        await asyncio.sleep(0.05)
    assert "settling failed" not in gateway.log()
    # The corrected records are in Redis: looking them up reads no table.
    reads = await settled_reads(pg, "admission_tickets")
    for mode in records.MODES:
        assert await scores(corrected, mode) == [("101", 99.5), ("102", 72.5)]
    assert await settled_reads(pg, "admission_tickets") == reads


async def test_prewarmed_certificates_are_verified_without_postgresql(
        gateway: Process, pg: asyncpg.Connection, http: aiohttp.ClientSession,
        open_lookups: None) -> None:
    names = [f"持证人{i}" for i in range(30)]
    numbers = await add_certificates(pg, 30, names=names)
    async with http.post(gateway.url + "/admin/api/v1/certificates/prewarm",
                         headers=bearer(gateway.admin_token())) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["certificates"] == await pg.fetchval("SELECT count(*) FROM certificates")
    reads = await settled_reads(pg, "certificates")

    async def verify(bodies: list[dict[str, str]]) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        return list(await asyncio.gather(*(_post(http, gateway.url + VERIFY, body) for body in bodies)))

    right = await verify([{"cert_no": number, "name": name} for number, name in zip(numbers, names, strict=True)])
    wrong = await verify([{"cert_no": number, "name": "某人"} for number in numbers])
    unknown = await verify([{"cert_no": "ZZ" + number, "name": names[0]} for number in numbers])
    assert [status for status, _, _ in right] == [200] * 30
    assert [body["cert_no"] for _, body, _ in right] == numbers
    assert len({str(answer) for answer in wrong + unknown}) == 1  # one 404, whatever was wrong
    assert wrong[0][0] == 404 and wrong[0][1]["error"]["message"] == certificates.NO_CERTIFICATE
    assert await settled_reads(pg, "certificates") == reads


# --- rate accuracy -------------------------------------------------------------------------------------------


async def test_sustained_rate_within_5_percent_across_both_processes(
        gateway: Process, redis_cluster: RedisClusterServers) -> None:
    await throttle.test_sustained_rate_within_5_percent_across_both_processes(gateway)
    # The limiter's state is on the master of its tag, and on no other.
    tagged = redis_cluster.master_for_key(LIMITER_PREFIX)
    found: dict[int, list[bytes]] = {}
    for port in redis_cluster.masters():
        with redis.Redis(port=port) as node:
            found[port] = list(node.scan_iter(match=LIMITER_PREFIX + "*"))
    assert b"eg:{rl}:sustained:" in b" ".join(found[tagged])
    assert not any(found[port] for port in found if port != tagged), found


async def test_burst_is_honoured(gateway: Process) -> None:
    await throttle.test_burst_is_honoured(gateway)


# --- live config ---------------------------------------------------------------------------------------------


@pytest.fixture
def sync_store(redis_cluster: RedisClusterServers) -> Iterator[redis.Redis]:
    with SyncRedisCluster.from_url(redis_cluster.url) as cluster:
        yield cast("redis.Redis", cluster)


def test_ctl_change_is_in_force_in_both_processes_within_a_second(
        gateway: Process, sync_store: redis.Redis, redis_cluster: RedisClusterServers) -> None:
    live.test_ctl_change_is_in_force_in_both_processes_within_a_second(gateway, sync_store)
    # Both processes follow by sharded pub/sub, on the master holding the config.
    with redis.Redis(port=redis_cluster.master_for_key(CONFIG_KEY)) as node:
        assert node.execute_command("PUBSUB", "SHARDNUMSUB", shard_channel(CONFIG_KEY)) == [
            shard_channel(CONFIG_KEY).encode(), 2]
    assert "subscription failed" not in gateway.log()


async def test_the_watcher_follows_changes_by_pub_sub_alone_through_a_failover(
        pg_dsn: str, redis_cluster: RedisClusterServers, caplog: pytest.LogCaptureFixture) -> None:
    """Its version poll runs once, at start: every later change reaches it by pub/sub or not at all."""
    watched = cast("aioredis.Redis", RedisCluster.from_url(redis_cluster.url, socket_timeout=2,
                                                           socket_connect_timeout=1))
    changing = cast("aioredis.Redis", RedisCluster.from_url(redis_cluster.url))
    pool = await create_pool(PoolSettings(pg_dsn, 1, 2))
    watcher = LiveConfigWatcher(watched, poll_interval_s=3600)
    task = asyncio.create_task(watcher.run())
    try:
        configs = ConfigStore(changing, pool)

        async def change(rate: int, within_s: float) -> None:
            applied = await configs.patch({"queue": {"exams": {"3": {"admit_per_s": rate}}}}, "tester")
            await live.wait_for_version(watcher, applied.version, within_s)

        await live.wait_for_version(watcher, (await configs.get())[0])
        await change(41, 1.0)
        await change(42, 1.0)
        master = redis_cluster.master_for_key(CONFIG_KEY)
        redis_cluster.kill(master)
        await asyncio.to_thread(redis_cluster.wait_for_failover, master)
        # Once the watcher is subscribed again (it reads the config then: this change, at the latest) …
        await change(43, 15.0)
        # … a change reaches it within a second, as before the failover.
        await change(44, 1.0)
        assert not [r for r in caplog.records if r.name == "examgate.liveconfig" and r.levelname == "ERROR"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await watched.aclose()
        await changing.aclose()
