"""Slow clients against a 2-process gateway: they must not take the places of real ones.

Attackers connect from 127.0.0.2 (Linux routes all of 127/8 to lo) and send their headers or
their bodies a byte at a time. Real clients come through 127.0.0.1, a trusted proxy, each with
its own X-Forwarded-For address. Timeouts are set small so that the test takes seconds.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis

from loadtest.processes import Process, start_gateway
from payments import keys as payment_keys
from tests.conftest import TEST_REDIS_URL
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import bearer, exam_ready, make_candidates, make_registrations, make_sessions, set_live

ATTACKER = "127.0.0.2"
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
CONNECTIONS_PER_ADDRESS = 300  # per process: of 700 connections over two processes, 100 or more are refused
IN_FLIGHT_PER_ADDRESS = 4
STEP_S = 0.5  # an attacker's pause between two bytes
GIVE_UP_S = 8.0  # an attacker the server has not closed by then has kept its connection
MARGIN_S = 3.0  # a loaded 2-core machine is slow to schedule
SLOW_BODY = 100


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    keys_dir = Path(tempfile.mkdtemp(prefix="examgate-slow-keys-")) / "keys"
    payment_keys.ensure(keys_dir)
    process = start_gateway(
        pg_dsn, TEST_REDIS_URL, workers=2,
        EXAMGATE_TRUSTED_PROXIES="127.0.0.1",
        EXAMGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        EXAMGATE_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        EXAMGATE_MAX_CONNECTIONS_PER_ADDRESS=str(CONNECTIONS_PER_ADDRESS),
        EXAMGATE_MAX_IN_FLIGHT_PER_ADDRESS=str(IN_FLIGHT_PER_ADDRESS),
        EXAMGATE_KEYS_DIR=str(keys_dir),
        EXAMGATE_PAYSIM_URL="http://127.0.0.1:9",
        EXAMGATE_BENCH_ROUTES="true",
        **h.FAST_ARGON,
    )
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()
        with redis.Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()


@dataclass
class Slow:
    """What one slow connection saw: when it opened, when the server closed it, what it answered."""

    kind: str
    opened_s: float = 0.0
    closed_after_s: float | None = None  # None: still open when the attacker gave up
    answer: bytes = b""


class SlowConnection(asyncio.Protocol):
    """The attacker's end: keeps what the server sends as it comes, notes when the server closes."""

    def __init__(self) -> None:
        self.answer = bytearray()
        self.closed: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answer += data

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(time.monotonic())


async def slow_client(port: int, kind: str, head: bytes, rest: bytes, opened: list[Slow]) -> Slow:
    """Send ``head`` at once, then ``rest`` a byte every STEP_S until the server answers or closes the connection."""
    seen = Slow(kind)
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(SlowConnection, "127.0.0.1", port, local_addr=(ATTACKER, 0))
    seen.opened_s = time.monotonic()
    opened.append(seen)
    try:
        transport.write(head)
        for index in range(len(rest)):
            done, _ = await asyncio.wait({conn.closed}, timeout=STEP_S)
            if done or conn.answer or time.monotonic() - seen.opened_s > GIVE_UP_S:
                break  # once answered, writing on would only earn a reset
            transport.write(rest[index:index + 1])
        await asyncio.wait({conn.closed}, timeout=max(0.0, GIVE_UP_S - (time.monotonic() - seen.opened_s)))
        if conn.closed.done():
            seen.closed_after_s = conn.closed.result() - seen.opened_s
        seen.answer = bytes(conn.answer)
    finally:
        transport.close()
    return seen


def slow_requests(registration_id: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, sent at once, sent a byte at a time) for each way of being slow."""

    def body_head(method: str, path: str, content_type: str) -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {SLOW_BODY}\r\n\r\n").encode()

    body = b"{" + b" " * (SLOW_BODY - 1)
    sign_in = body_head("POST", "/api/v1/sessions", "application/json")
    seat = body_head("PUT", f"/api/v1/registrations/{registration_id}/seat", "application/json")
    notify = body_head("POST", "/api/v1/payments/notify/alipay", "application/x-www-form-urlencoded")
    headers = b"POST /api/v1/sessions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\r\n"
    return ([("sign_in", sign_in + body[:1], body[1:])] * 200 + [("seat", seat + body[:1], body[1:])] * 200
            + [("notify", notify + b"a", b"=" * (SLOW_BODY - 1))] * 200 + [("headers", b"", headers)] * 100)


async def admin_post(http: aiohttp.ClientSession, gateway: Process, path: str, body: Any = None) -> Any:
    async with http.post(gateway.url + path, json=body,
                         headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


def forwarded(n: int, **extra: str) -> dict[str, str]:
    """Headers of a real client behind the trusted proxy, at address 198.51.100.n."""
    return {"X-Forwarded-For": f"198.51.100.{n}", **extra}


async def test_seven_hundred_slow_connections_leave_real_clients_answered(gateway: Process,
                                                                          pg: asyncpg.Connection) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        token = (await admin_post(http, gateway, "/admin/api/v1/loadtest-tokens", {"ttl_s": 600}))["token"]
        account = h.registration()
        account["sms_code"] = await h.code_over_http(http, gateway.url, pg, account["phone"],
                                                     headers=forwarded(1, **{"X-Loadtest-Token": token}))
        async with http.post(gateway.url + "/api/v1/accounts", json=account,
                             headers=forwarded(1, **{"X-Loadtest-Token": token})) as resp:
            assert resp.status == 201, await resp.text()
        exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 50)])
        await admin_post(http, gateway, f"/admin/api/v1/reconcile?exam_id={exam_id}")
        candidates = await make_candidates(pg, 3)
        registrations = await make_registrations(pg, exam_id, candidates)
        sessions = await make_sessions(TEST_REDIS_URL, candidates)
        # Limits small enough that the slow requests alone would fill every class in both processes.
        await set_live(gateway, {"shedding": {"login": 20, "candidate_write": 20, "payment_notify": 20}})

        opened: list[Slow] = []
        attack = [asyncio.ensure_future(slow_client(port, kind, head, rest, opened))
                  for kind, head, rest in slow_requests(registrations[0])]
        deadline = time.monotonic() + 10
        # Each attack task appends its connection once open (or fails first): polled with a deadline,
        # so one that never opens bounds the wait instead of hanging it.
        while len(opened) < len(attack) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # their headers and first body bytes are in

        async def timed(call: Any) -> tuple[int, Any, float]:
            started = time.monotonic()
            async with call as resp:
                body = await (resp.json() if resp.content_type == "application/json" else resp.text())
                return resp.status, body, time.monotonic() - started

        real = [
            *(timed(http.post(gateway.url + "/api/v1/sessions",
                              json={"username": account["username"], "password": h.PASSWORD},
                              headers=forwarded(10 + i, **{"X-Loadtest-Token": token}))) for i in range(3)),
            *(timed(http.put(f"{gateway.url}/api/v1/registrations/{r}/seat", json={"site_id": site_id},
                             headers=forwarded(20 + i, **bearer(t))))
              for i, (r, t) in enumerate(zip(registrations, sessions, strict=True))),
            *(timed(http.post(gateway.url + "/api/v1/payments/notify/alipay", data=b"out_trade_no=1&sign=forged",
                              headers=forwarded(30 + i, **{"Content-Type": "application/x-www-form-urlencoded"})))
              for i in range(3)),
        ]
        answers = await asyncio.gather(*real)
        attackers = await asyncio.gather(*attack)

    statuses = [status for status, _, _ in answers]
    assert statuses == [201] * 3 + [200] * 3 + [400] * 3, answers
    assert [body for _, body, _ in answers[6:]] == ["fail"] * 3
    assert max(elapsed for _, _, elapsed in answers) < 3.0, answers

    assert len(attackers) == 700
    kept = [a for a in attackers if a.closed_after_s is None]
    assert not kept, f"{len(kept)} slow connections kept open: {Counter(a.kind for a in kept)}"
    refused = {id(a) for a in attackers if not a.answer and a.closed_after_s is not None and a.closed_after_s < 1.0}
    assert len(refused) >= 700 - 2 * CONNECTIONS_PER_ADDRESS, len(refused)
    for seen in attackers:
        limit_s = (HEADER_TIMEOUT_S if seen.kind == "headers" else BODY_TIMEOUT_S) + MARGIN_S
        assert seen.closed_after_s is not None and seen.closed_after_s < limit_s, seen
        if seen.kind == "headers" or id(seen) in refused:
            assert seen.answer == b"", seen  # closed without a word: there was no request to answer
        else:
            head, _, body = seen.answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), seen
            assert b"X-Request-Id" in head and b"Connection: close" in head, seen
            assert b'"code":"request_timeout"' in body, seen


async def test_one_address_gets_at_most_its_share_of_requests_in_flight(gateway: Process) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def sleep(address: str) -> tuple[int, Any, dict[str, str]]:
            async with http.get(gateway.url + "/_bench/sleep?ms=1500",
                                headers={"X-Forwarded-For": address}) as resp:
                return resp.status, await resp.json(), dict(resp.headers)

        crowd = [sleep("203.0.113.9") for _ in range(3 * IN_FLIGHT_PER_ADDRESS)]
        others = [sleep(f"203.0.113.{20 + i}") for i in range(2)]
        replies = await asyncio.gather(*crowd, *others)

    crowd_statuses = Counter(status for status, _, _ in replies[:-2])
    # At most IN_FLIGHT_PER_ADDRESS in each of the two processes; the kernel decides how they spread.
    assert set(crowd_statuses) == {200, 429} and crowd_statuses[200] <= 2 * IN_FLIGHT_PER_ADDRESS, crowd_statuses
    assert [status for status, _, _ in replies[-2:]] == [200, 200]
    for status, body, headers in replies:
        if status == 429:
            assert headers["Retry-After"] == "1"
            assert body["error"]["code"] == "too_many_requests"
            assert body["error"]["details"]["reason"] == "address_in_flight"
            assert body["error"]["details"]["rules"] == []
