"""Helpers for the enrolment, waiting-room and seat tests against real processes (gateway + worker).

Candidates, registrations and sessions are written straight to the stores (fast); everything
under test goes through HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import redis
import redis.asyncio as aioredis

from core import redis_cluster, sessions
from core.timeutil import utcnow
from loadtest.processes import Process, start_gateway, start_worker
from queueing import keys as qkeys
from queueing.writebehind import GROUP
from tests.factories import give_approved_photos, make_exam, phone_block

# Worker settings that make its loops quick enough for tests.
FAST_WORKER = {
    "EXAMGATE_WRITEBEHIND_CLAIM_MIN_IDLE_MS": "1000",
    "EXAMGATE_SWEEPER_INTERVAL_S": "0.2",
    "EXAMGATE_INVENTORY_CHECK_S": "0.5",
    "EXAMGATE_WORKER_EXAMS_REFRESH_S": "0.5",
    "EXAMGATE_QUEUE_ADVANCE_INTERVAL_MS": "100",
}
ENROLMENT = {"province": "11", "city": "测试市", "level": "mid", "specialty": "fin", "subjects": ["101"],
             "work_years": 5, "commitment": True}


@contextlib.contextmanager
def running_stack(pg_dsn: str, redis_url: str, **env: str) -> Iterator[tuple[Process, Process]]:
    """A 2-process gateway (``env`` added to its settings) and a fast worker on an emptied Redis database."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    gateway = start_gateway(pg_dsn, redis_url, workers=2, **env)
    try:
        worker = start_worker(pg_dsn, redis_url, **FAST_WORKER)
        try:
            yield gateway, worker
        finally:
            assert worker.stop() == 0, worker.log()
    finally:
        assert gateway.stop() == 0, gateway.log()


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def make_candidates(conn: asyncpg.Connection, count: int, *, photo: bool = True) -> list[int]:
    """``count`` candidates in one statement, each with an approved photo unless ``photo`` is false; ids in order."""
    tag = secrets.token_hex(4)
    rows = await conn.fetch(
        """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                   security_question, security_answer_hash)
           SELECT 'u' || $1 || '-' || g, 'x', '考生' || g, 'passport', 'P' || upper($1) || g,
                  '19' || lpad(($2 + g)::text, 9, '0'), 'c' || $1 || g || '@example.com', 'q', 'x'
             FROM generate_series(1, $3::int) AS g
           RETURNING id""",
        tag, await phone_block(conn, count), count,
    )
    ids = sorted(row["id"] for row in rows)
    if photo:
        await give_approved_photos(conn, ids)
    return ids


async def make_registrations(conn: asyncpg.Connection, exam_id: int, candidate_ids: list[int],
                             province: str = "11", status: str = "approved") -> list[int]:
    """A registration per candidate, in the candidates' order: approved (the seat right is granted
    from PostgreSQL at the first hold), or ``status``."""
    rows = await conn.fetch(
        """INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                      subjects, work_years, status)
           SELECT c, $2, $3, '测试市', 'mid', 'fin', '{101}', 5, $4 FROM unnest($1::bigint[]) AS c
           RETURNING id, candidate_id""",
        candidate_ids, exam_id, province, status,
    )
    by_candidate = {row["candidate_id"]: row["id"] for row in rows}
    return [by_candidate[c] for c in candidate_ids]


async def make_sessions(redis_url: str, candidate_ids: list[int], *, cluster: bool = False) -> list[str]:
    """A session token per candidate (created together through one auto-pipelined client)."""
    client = redis_cluster.pipeline(redis_url, cluster=cluster, connections=2, timeout_ms=10_000)
    try:
        now = utcnow()
        made = await asyncio.gather(*(sessions.create(client, c, now=now) for c in candidate_ids))
    finally:
        await client.close()
    return [session.token for session in made]


async def exam_ready(conn: asyncpg.Connection, gateway: Process, sites: list[tuple[str, int]],
                     *, opens_in_s: float | None = None) -> tuple[int, list[int]]:
    """A new exam with these (province, capacity) sites, once every gateway process knows it; (exam, site ids)."""
    exam_id = await make_exam(conn, sites=sites)
    if opens_in_s is not None:
        await conn.execute("UPDATE exams SET registration_opens_at = $2 WHERE id = $1",
                           exam_id, utcnow() + timedelta(seconds=opens_in_s))
    site_ids = [row["id"] for row in await conn.fetch("SELECT id FROM exam_sites WHERE exam_id = $1 ORDER BY id",
                                                      exam_id)]
    deadline = time.monotonic() + 10
    seen = 0
    async with aiohttp.ClientSession() as http:
        while seen < 8:  # new connections, so both processes are asked
            assert time.monotonic() < deadline, "the gateway did not load the new exam"
            async with http.get(f"{gateway.url}/api/v1/exams/{exam_id}/sites",
                                headers={"Connection": "close"}) as resp:
                seen = seen + 1 if resp.status == 200 else 0
            if seen == 0:
                await asyncio.sleep(0.1)
    # Eight answers in a row can all come from one process (SO_REUSEPORT picks at random); one more
    # catalogue refresh (EXAMGATE_CATALOGUE_REFRESH_S, 0.5 s in tests) and every process has the exam.
    await asyncio.sleep(0.6)
    return exam_id, site_ids


async def wait_inventory(redis: aioredis.Redis, exam_id: int, site_ids: list[int], timeout_s: float = 10,
                         *, worker: bool = True) -> None:
    """Until every site of the exam has its seat count in Redis (and the worker has checked the exam)."""
    from examgate.worker import inventory_marker

    deadline = time.monotonic() + timeout_s
    while (await redis.exists(*(qkeys.site_left(exam_id, s) for s in site_ids)) < len(site_ids)
           or (worker and not await redis.exists(inventory_marker(exam_id)))):
        assert time.monotonic() < deadline, "seat inventory was not loaded"
        await asyncio.sleep(0.05)


async def wait_drained(redis: aioredis.Redis, exam_id: int, timeout_s: float = 20) -> None:
    """Until the write-behind group has read and acknowledged every event of the exam's hold stream."""
    stream = qkeys.holds_stream(exam_id)
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        if not await redis.exists(stream):
            last = "no stream"
        else:
            groups = [g for g in await redis.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())]
            if groups:
                last = groups[0]
                if groups[0]["lag"] == 0 and groups[0]["pending"] == 0:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the hold stream of exam {exam_id} was not drained: {last}")


async def redis_holds(redis: aioredis.Redis, exam_id: int) -> dict[int, int]:
    """registration → site of every hold, per Redis."""
    return {int(k): int(v) for k, v in (await redis.hgetall(qkeys.holds(exam_id))).items()}


async def pg_holds(conn: asyncpg.Connection, exam_id: int) -> dict[int, int]:
    """registration → site of every registration with a seat, per PostgreSQL."""
    rows = await conn.fetch("SELECT id, site_id FROM registrations WHERE exam_id = $1 AND site_id IS NOT NULL",
                            exam_id)
    return {row["id"]: row["site_id"] for row in rows}


async def seats_left(redis: aioredis.Redis, exam_id: int, site_id: int) -> int:
    value = await redis.get(qkeys.site_left(exam_id, site_id))
    assert value is not None
    return int(value)


def healthz_versions(gateway: Process, rounds: int = 12) -> set[int]:
    """The config versions the processes report (new connection per request)."""
    found = set()
    for _ in range(rounds):
        with urllib.request.urlopen(gateway.url + "/healthz", timeout=2) as resp:
            found.add(int(json.loads(resp.read())["config_version"]))
    return found


async def set_live(gateway: Process, patch: dict[str, Any]) -> int:
    """PATCH the live config and wait until every gateway process applies it."""
    version = await asyncio.to_thread(gateway.patch_config, patch)
    deadline = time.monotonic() + 3
    while min(await asyncio.to_thread(healthz_versions, gateway)) < version:
        assert time.monotonic() < deadline, "the live config was not applied everywhere"
        await asyncio.sleep(0.05)
    return version


async def enable_queue(gateway: Process, exam_id: int, **settings: Any) -> int:
    return await set_live(gateway, {"queue": {"exams": {str(exam_id): {"enabled": True, **settings}}}})
