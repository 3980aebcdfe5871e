"""Two gateway hosts behind HAProxy (deploy/haproxy/examgate.cfg): one stopped mid-load, no request fails.

Each "host" is its own ``examgate serve`` on its own loopback address (127.0.0.2, 127.0.0.3);
HAProxy listens on 127.0.0.1 and connects to them from 127.0.0.10, the one address the gateways
trust for ``X-Forwarded-For``. Everything runs on loopback; the load is bounded by count.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import redis

from core.passwords import PasswordHasher
from gateway.liveconfig import DEFAULT
from loadtest import haproxy
from loadtest.processes import Process, free_port, start_gateway
from tests.conftest import TEST_REDIS_URL
from tests.gateway.seat_stack import bearer, exam_ready, healthz_versions, make_candidates, make_sessions
from tests.gateway.test_app import assert_error_shape

pytestmark = pytest.mark.skipif(haproxy.binary() is None,
                                reason="haproxy is not installed (scripts/system-deps.sh installs Debian's haproxy)")

PROXY_SOURCE = "127.0.0.10"
HOSTS = ("127.0.0.2", "127.0.0.3")
# The check takes a host out after 2 failed checks 100 ms apart; a stopping host keeps answering for
# 3 s first (EXAMGATE_DRAIN_S): far longer than the check needs, even on a busy machine.
CHECK = {"inter_ms": 100, "fall": 2, "rise": 1}
DRAIN_S = "3"
PASSWORD = "Qiu#2026pass"


def loopback_addresses_usable() -> bool:
    for address in (*HOSTS, PROXY_SOURCE):
        with socket.socket() as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                return False
    return True


@dataclass
class Stack:
    hosts: list[Process]
    proxy: Process
    stats_socket: Path

    @property
    def url(self) -> str:
        return self.proxy.url.removesuffix("/healthz")


def start_host(pg_dsn: str, host: str, secrets_file: str | None) -> Process:
    extra = {"EXAMGATE_TRUSTED_PROXIES": PROXY_SOURCE, "EXAMGATE_DRAIN_S": DRAIN_S}
    if secrets_file is not None:  # every host the same secrets (operator tokens, signing keys)
        extra["EXAMGATE_SECRETS_FILE"] = secrets_file
    return start_gateway(pg_dsn, TEST_REDIS_URL, workers=1, host=host, **extra)


@pytest.fixture(scope="module")
def stack(pg_dsn: str) -> Iterator[Stack]:
    if not loopback_addresses_usable():
        pytest.skip(f"cannot bind the loopback addresses {HOSTS} and {PROXY_SOURCE}")
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    started: list[Process] = []
    try:
        first = start_host(pg_dsn, HOSTS[0], None)
        started.append(first)
        started.append(start_host(pg_dsn, HOSTS[1], str(Path(first.extra["run_dir"]) / "secrets.json")))
        port = free_port()
        stats_socket = Path(tempfile.mkdtemp(prefix="examgate-haproxy-stats-")) / "stats.sock"
        config = haproxy.render([(h, int(p.url.rsplit(":", 1)[1])) for h, p in zip(HOSTS, started, strict=True)],
                                bind=("127.0.0.1", port), source=PROXY_SOURCE, threads=1, maxconn=2000,
                                stats_socket=stats_socket, **CHECK)
        proxy = haproxy.start_haproxy(config, url=f"http://127.0.0.1:{port}/healthz")
        started.append(proxy)
        wait_states(stats_socket, {"gateway-1": "UP", "gateway-2": "UP"})
        yield Stack(started[:2], proxy, stats_socket)
    finally:
        for process in reversed(started):
            process.stop()


def wait_states(stats_socket: Path, expected: dict[str, str], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (states := haproxy.server_states(stats_socket)) != expected:
        assert time.monotonic() < deadline, f"HAProxy sees {states}, not {expected}"
        time.sleep(0.05)


async def set_live(stack: Stack, patch: dict[str, object]) -> None:
    """PATCH the live config through one host and wait until every host applies it (one process each)."""
    version = await asyncio.to_thread(stack.hosts[0].patch_config, patch)
    deadline = time.monotonic() + 5
    for host in stack.hosts:
        while min(await asyncio.to_thread(healthz_versions, host, 2)) < version:
            assert time.monotonic() < deadline, f"{host.url} did not apply the live config"
            await asyncio.sleep(0.05)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections come from ``address`` (any 127.x address is this machine)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def signed_in_candidate(pg: asyncpg.Connection) -> tuple[int, str]:
    (candidate,) = await make_candidates(pg, 1)
    hasher = PasswordHasher()
    try:
        password_hash = await hasher.hash(PASSWORD)
    finally:
        hasher.close()
    username = await pg.fetchval(
        "UPDATE candidates SET username = 'lbuser' || id, password_hash = $2 WHERE id = $1 RETURNING username",
        candidate, password_hash)
    return candidate, str(username)


async def test_a_session_and_a_waiting_room_place_made_on_one_host_work_on_the_other(
        stack: Stack, pg: asyncpg.Connection, http: aiohttp.ClientSession) -> None:
    one, other = stack.hosts
    await set_live(stack, {"captcha": {"routes": {"sessions.create": "off"}}})
    candidate, username = await signed_in_candidate(pg)
    async with http.post(f"{one.url}/api/v1/sessions", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 201, await resp.text()
        token = (await resp.json())["token"]
    async with http.get(f"{other.url}/api/v1/me", headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["candidate_id"] == candidate

    exam_id, _ = await exam_ready(pg, one, [("11", 10)])
    await exam_ready_on(other, exam_id)
    await set_live(stack, {"queue": {"exams": {str(exam_id): {"enabled": True, "admit_per_s": 0.001}}}})
    async with http.post(f"{one.url}/api/v1/exams/{exam_id}/queue", headers=bearer(token)) as resp:
        assert resp.status == 202, await resp.text()
        place = await resp.json()
    async with http.get(f"{other.url}/api/v1/exams/{exam_id}/queue/{place['ticket']}", headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        polled = await resp.json()
    assert polled["admitted"] is False and polled["position"] == place["position"]
    async with http.post(f"{other.url}/api/v1/exams/{exam_id}/queue", headers=bearer(token)) as resp:
        assert resp.status == 202
        assert (await resp.json())["ticket"] == place["ticket"]  # the same place, not a second one

    async with http.delete(f"{other.url}/api/v1/sessions/current", headers=bearer(token)) as resp:
        assert resp.status == 204
    async with http.get(f"{one.url}/api/v1/me", headers=bearer(token)) as resp:
        assert resp.status == 401  # signed out on one host is signed out on all


async def exam_ready_on(gateway: Process, exam_id: int) -> None:
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{gateway.url}/api/v1/exams/{exam_id}/sites") as resp:
                if resp.status == 200:
                    return
            assert time.monotonic() < deadline, f"{gateway.url} did not load exam {exam_id}"
            await asyncio.sleep(0.1)


async def test_the_client_address_is_the_one_haproxy_saw_and_a_forged_header_is_ignored(
        stack: Stack, pg: asyncpg.Connection, redis_url: str) -> None:
    one, _ = stack.hosts
    (candidate,) = await make_candidates(pg, 1)
    (token,) = await make_sessions(redis_url, [candidate])
    # Two profile reads per client address, then 429 (the rate limiter keys on the client's address).
    rule = {"id": "me-ip", "routes": ["me.get"], "key": "ip", "rate": 1, "period_s": 3600, "burst": 2,
            "mode": "enforce", "on_redis_error": "local"}
    await set_live(stack, {"ratelimit": {"rules": [rule]}})
    try:
        async def reads(address: str, url: str, forged: str | None = None) -> list[int]:
            headers = bearer(token) | ({"X-Forwarded-For": forged} if forged else {})
            statuses = []
            async with client_from(address) as client:
                for _ in range(3):
                    async with client.get(f"{url}/api/v1/me", headers=headers) as resp:
                        statuses.append(resp.status)
                        if resp.status == 429:
                            assert_error_shape(await resp.json(), "too_many_requests")
            return statuses

        # Through HAProxy: each client its own budget, whichever host answers (HAProxy says who it saw).
        assert await reads("127.0.1.1", stack.url) == [200, 200, 429]
        # A client claiming to be someone else: HAProxy appends what it saw, the gateway believes that hop.
        assert await reads("127.0.1.2", stack.url, forged="127.0.1.1") == [200, 200, 429]
        assert await reads("127.0.1.3", stack.url, forged="127.0.1.2, 127.0.0.10") == [200, 200, 429]
        # Straight to a gateway, the header is nobody's word: the socket's peer is the client.
        assert await reads("127.0.1.4", one.url, forged="127.0.1.99") == [200, 200, 429]
        assert await reads("127.0.1.1", one.url, forged="127.0.1.98") == [429, 429, 429]
    finally:
        await set_live(stack, {"ratelimit": DEFAULT["ratelimit"]})


# In turn, by 64 clients at once: the signed-in candidate's profile, a poll of their waiting-room place,
# and joining the waiting room again (a POST, which HAProxy never sends twice: it must not be lost).
REQUESTS = [("GET", "/api/v1/me", 200), ("GET", "/api/v1/exams/{exam}/queue/{ticket}", 200),
            ("POST", "/api/v1/exams/{exam}/queue", 202)]
CLIENTS = 64
CANDIDATES = 200
AFTER_STOP = 500  # requests still sent once the stopped host has exited


async def test_one_host_stopped_mid_load_fails_no_request(stack: Stack, pg: asyncpg.Connection,
                                                          redis_url: str) -> None:
    one, other = stack.hosts
    exam_id, _ = await exam_ready(pg, one, [("11", 10)])
    await exam_ready_on(other, exam_id)
    await set_live(stack, {"queue": {"exams": {str(exam_id): {"enabled": True, "admit_per_s": 0.001}}}})
    candidates = await make_candidates(pg, CANDIDATES)
    tokens = await make_sessions(redis_url, candidates)
    places: list[str] = []
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            async with http.post(f"{stack.url}/api/v1/exams/{exam_id}/queue", headers=bearer(token)) as resp:
                assert resp.status == 202, await resp.text()
                places.append((await resp.json())["ticket"])
    before = served(stack.stats_socket)
    assert before["gateway-1"] > 0 and before["gateway-2"] > 0, before  # round robin: both hosts in use

    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    sent = 0
    stopped_at: int | None = None
    exited_at: int | None = None

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent, stopped_at, exited_at
        turn = index
        while exited_at is None or sent < exited_at + AFTER_STOP:
            slot = turn % CANDIDATES
            turn += CLIENTS
            token = tokens[slot]
            kind = turn // CLIENTS % 3
            sent += 1
            if stopped_at is None and sent >= 1000:
                stopped_at = sent
                other.proc.send_signal(signal.SIGTERM)
            if exited_at is None and stopped_at is not None and other.proc.poll() is not None:
                exited_at = sent
            method, path, expected = REQUESTS[kind]
            path = path.format(exam=exam_id, ticket=places[slot])
            try:
                async with session.request(method, stack.url + path, headers=bearer(token)) as resp:
                    body = await resp.read()
                    outcomes[str(resp.status)] += 1
                    if resp.status != expected:
                        failures.append(f"{method} {path}: {resp.status} {body[:200]!r}")
                    elif method == "POST" and orjson.loads(body)["ticket"] != places[slot]:
                        failures.append(f"{method} {path}: another place than {places[slot]}: {body!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
                failures.append(f"{path}: {exc!r}")

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.wait_for(asyncio.gather(*(client(i, session) for i in range(CLIENTS))), 50)

    assert not failures, f"{len(failures)} failed of {sum(outcomes.values())} ({dict(outcomes)}): {failures[:10]}"
    assert sum(outcomes.values()) == sent >= 1000 + AFTER_STOP
    assert other.proc.returncode == 0, other.log()
    assert "leaving the rotation" in other.log()
    # The stopped host left through its health check (503 from /readyz), before its socket closed.
    assert haproxy.server_states(stack.stats_socket)["gateway-2"] == "DOWN"
    log = stack.proxy.log()
    assert "gateway-2 is DOWN, reason: Layer7 wrong status, code: 503" in log, log[-3000:]
    assert "gateway-1 is DOWN" not in log, log[-3000:]
    after = served(stack.stats_socket)
    assert after["gateway-1"] > before["gateway-1"] and after["gateway-2"] > before["gateway-2"]
    rows = {row["svname"]: row for row in haproxy.stat_rows(stack.stats_socket)}
    assert int(rows["BACKEND"]["hrsp_5xx"] or 0) == 0, rows["BACKEND"]


def served(stats_socket: Path) -> dict[str, int]:
    """Requests each gateway host has answered, per HAProxy."""
    return {row["svname"]: int(row["stot"] or 0) for row in haproxy.stat_rows(stats_socket)
            if row["svname"] not in ("FRONTEND", "BACKEND")}
