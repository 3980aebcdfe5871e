"""Live config when Redis loses its data: rebuilt from the audit, versions keep growing, no defaults in between.

A 2-process gateway on a test-owned redis-server and the test PostgreSQL. The redis-server is
restarted empty (no persistence); the audit in PostgreSQL is the config's source of truth.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db
from gateway.configstore import CONFIG_KEY
from loadtest.processes import Process, RedisServer, start_gateway, start_redis
from tests.conftest import TEST_PG_SERVER
from tests.gateway.seat_stack import (
    bearer,
    enable_queue,
    exam_ready,
    healthz_versions,
    make_candidates,
    make_registrations,
    make_sessions,
    set_live,
)
from tests.gateway.test_app import assert_error_shape

CONVERGE_WITHIN_S = 5.0
# A throttle beside the waiting room: it must survive the loss as well.
SITES_RULE = {"id": "sites-ip", "routes": ["sites.list"], "key": "ip", "rate": 1000, "period_s": 60,
              "burst": 1000, "mode": "enforce", "on_redis_error": "open"}


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, own_redis: RedisServer) -> Iterator[Process]:
    process = start_gateway(pg_dsn, own_redis.url, workers=2)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request, so the kernel spreads them over both processes.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


class Seat:
    """One candidate's draft registration for an exam whose waiting room is on."""

    def __init__(self, exam_id: int, site_id: int, candidate_id: int, registration_id: int) -> None:
        self.exam_id, self.site_id = exam_id, site_id
        self.candidate_id, self.registration_id = candidate_id, registration_id

    async def put(self, http: aiohttp.ClientSession, gateway: Process, token: str) -> tuple[int, str | None, Any]:
        """PUT the seat: (status, error code or None, Retry-After)."""
        async with http.put(f"{gateway.url}/api/v1/registrations/{self.registration_id}/seat",
                            json={"site_id": self.site_id}, headers=bearer(token)) as resp:
            body = await resp.json()
            return resp.status, body["error"]["code"] if "error" in body else None, resp.headers.get("Retry-After")


async def queued_seat(pg: asyncpg.Connection, gateway: Process) -> tuple[Seat, int]:
    """A registration for a new exam with the waiting room on; (it, the config version that enabled the room)."""
    exam_id, site_ids = await exam_ready(pg, gateway, [("11", 50)])
    [candidate] = await make_candidates(pg, 1)
    [registration] = await make_registrations(pg, exam_id, [candidate])
    version = await enable_queue(gateway, exam_id)
    return Seat(exam_id, site_ids[0], candidate, registration), version


async def stored_version(store: aioredis.Redis) -> int | None:
    raw = await store.hget(CONFIG_KEY, "version")
    return None if raw is None else int(raw)


async def audited_versions(pg_dsn: str) -> list[int]:
    conn = await db.connect(pg_dsn)
    try:
        return [row["version"] for row in await conn.fetch("SELECT version FROM config_audit ORDER BY id")]
    finally:
        await conn.close()


async def wait_stored(store: aioredis.Redis, version: int, seconds: float = CONVERGE_WITHIN_S) -> None:
    deadline = time.monotonic() + seconds
    while (found := await stored_version(store)) != version:
        assert time.monotonic() < deadline, f"Redis holds config version {found}, not the audited {version}"
        await asyncio.sleep(0.05)


async def wait_versions(gateway: Process, version: int, seconds: float = CONVERGE_WITHIN_S) -> None:
    deadline = time.monotonic() + seconds
    while (found := await asyncio.to_thread(healthz_versions, gateway)) != {version}:
        assert time.monotonic() < deadline, f"the processes report config versions {found}, not {version}"
        await asyncio.sleep(0.05)


def gateway_config(gateway: Process) -> dict[str, Any]:
    """The stored config as the admin API reads it."""
    request = urllib.request.Request(gateway.url + "/admin/api/v1/config",
                                     headers={"Authorization": f"Bearer {gateway.admin_token()}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body["config"]


async def restart_empty(own_redis: RedisServer) -> None:
    """Kill the redis-server and start a new one on the same port, with nothing in it."""
    await asyncio.to_thread(own_redis.stop)
    await asyncio.to_thread(own_redis.start)


async def test_config_is_rebuilt_after_redis_restarts_empty(gateway: Process, own_redis: RedisServer,
                                                            store: aioredis.Redis, pg: asyncpg.Connection,
                                                            pg_dsn: str, http: aiohttp.ClientSession) -> None:
    seat, _ = await queued_seat(pg, gateway)
    rules = (await asyncio.to_thread(gateway_config, gateway))["ratelimit"]["rules"]
    version = await set_live(gateway, {"ratelimit": {"rules": [r for r in rules if r["id"] != "sites-ip"]
                                                     + [SITES_RULE]}})
    [token] = await make_sessions(own_redis.url, [seat.candidate_id])
    assert (await seat.put(http, gateway, token))[:2] == (403, "admission_required")

    answers: list[tuple[int, str | None, Any]] = []
    probing = True

    async def probe() -> None:
        while probing:
            try:
                answers.append(await seat.put(http, gateway, token))
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe())
    try:
        await restart_empty(own_redis)
        await wait_stored(store, version)
        await wait_versions(gateway, version)
        await asyncio.sleep(0.3)
    finally:
        probing = False
        await prober
    assert answers, "the seat route was never asked during the restart"
    assert all(status != 200 for status, _, _ in answers), "a seat was held without admission during the loss"
    assert all(retry_after for status, _, retry_after in answers if status == 503)
    assert {code for _, code, _ in answers} <= {"admission_required", "config_unavailable",
                                                "service_unavailable", "unauthorized"}

    # The same config in force: the waiting room still guards the seat, the throttle still counts.
    [token] = await make_sessions(own_redis.url, [seat.candidate_id])
    async with http.get(f"{gateway.url}/api/v1/exams/{seat.exam_id}/sites") as resp:
        assert resp.status == 200 and "RateLimit-Policy" in resp.headers
    for _ in range(6):
        assert (await seat.put(http, gateway, token))[:2] == (403, "admission_required")

    # The next change continues the audited versions, in Redis and in the audit.
    changed = await asyncio.to_thread(gateway.patch_config, {"seats": {"hold_ttl_s": 900}})
    assert changed == version + 1
    assert await stored_version(store) == version + 1
    audited = await audited_versions(pg_dsn)
    assert audited[-1] == version + 1
    assert all(later >= earlier for earlier, later in itertools.pairwise(audited)), audited
    await wait_versions(gateway, version + 1)
    assert (await asyncio.to_thread(gateway_config, gateway))["queue"]["exams"][str(seat.exam_id)]["enabled"] is True


async def set_connections(pg_dsn: str, allowed: bool) -> None:
    """Let the test database take connections or not; refusing also ends every open one."""
    name = db.database_name(pg_dsn)
    conn = await asyncpg.connect(TEST_PG_SERVER)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()


async def ask(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """(status, JSON body or None, Retry-After) of one request."""
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body, resp.headers.get("Retry-After")


async def test_guarded_routes_refuse_while_the_config_is_unknown(gateway: Process, own_redis: RedisServer,
                                                                 store: aioredis.Redis, pg_dsn: str,
                                                                 http: aiohttp.ClientSession) -> None:
    conn = await db.connect(pg_dsn)
    try:
        seat, _ = await queued_seat(conn, gateway)
    finally:
        await conn.close()
    version = max(await audited_versions(pg_dsn))
    url = gateway.url
    guarded = [
        ("PUT", f"{url}/api/v1/registrations/{seat.registration_id}/seat", {"json": {"site_id": seat.site_id}}),
        ("POST", f"{url}/api/v1/sessions", {"json": {"username": "nobody", "password": "x"}}),
        ("POST", f"{url}/api/v1/tickets/lookup", {"json": {}}),
        ("GET", f"{url}/api/v1/exams/{seat.exam_id}/sites", {}),
    ]
    await set_connections(pg_dsn, False)
    try:
        await restart_empty(own_redis)
        # Redis empty and PostgreSQL not answering: the config is unknown in both processes.
        deadline = time.monotonic() + CONVERGE_WITHIN_S
        streak = 0
        while streak < 16:
            assert time.monotonic() < deadline, "the guarded routes did not refuse while the config was unknown"
            status, body, _ = await ask(http, *guarded[0][:2], **guarded[0][2])
            streak = streak + 1 if body and body["error"]["code"] == "config_unavailable" else 0
            await asyncio.sleep(0.01)
        for method, route_url, kwargs in guarded * 4:
            status, body, retry_after = await ask(http, method, route_url, **kwargs)
            assert status == 503, (method, route_url, status, body)
            assert_error_shape(body, "config_unavailable")
            assert retry_after is not None and int(retry_after) >= 1
            assert any("\u4e00" <= char <= "\u9fff" for char in body["error"]["message"])
        for _ in range(4):  # health, metrics, pages, admin and payment notifications are not held back
            assert (await ask(http, "GET", f"{url}/healthz"))[0] == 200
            assert (await ask(http, "GET", f"{url}/"))[0] == 200
            for method, path in [("GET", "/metrics"), ("GET", "/admin/api/v1/config"),
                                 ("POST", "/api/v1/payments/notify/alipay")]:
                status, body, _ = await ask(http, method, url + path, headers=bearer(gateway.admin_token()))
                assert not (body and body.get("error", {}).get("code") == "config_unavailable"), (path, status)
    finally:
        await set_connections(pg_dsn, True)

    await wait_stored(store, version)
    await wait_versions(gateway, version)
    [token] = await make_sessions(own_redis.url, [seat.candidate_id])
    assert (await seat.put(http, gateway, token))[:2] == (403, "admission_required")


async def test_gateway_started_on_an_empty_redis_takes_the_audited_config(gateway: Process, pg: asyncpg.Connection,
                                                                         pg_dsn: str,
                                                                         http: aiohttp.ClientSession) -> None:
    seat, version = await queued_seat(pg, gateway)
    empty = start_redis()
    try:
        other = await asyncio.to_thread(start_gateway, pg_dsn, empty.url, workers=2)
        try:
            assert await asyncio.to_thread(healthz_versions, other) == {version}
            assert max(await audited_versions(pg_dsn)) == version
            client = aioredis.Redis.from_url(empty.url)
            try:
                assert await stored_version(client) == version
            finally:
                await client.aclose()
            [token] = await make_sessions(empty.url, [seat.candidate_id])
            for _ in range(6):
                assert (await seat.put(http, other, token))[:2] == (403, "admission_required")
        finally:
            assert other.stop() == 0, other.log()
    finally:
        empty.stop()
