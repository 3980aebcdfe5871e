"""Overload shedding and maintenance switches, with real concurrent requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.app import create_app
from gateway.clientip import ClientIp
from gateway.routes import modules
from gateway.shedding import ADDRESS_EXEMPT, LAG_MIN_IN_FLIGHT, Shedder
from tests.gateway.test_app import assert_error_shape, in_pieces, make_settings

TOKEN = "shed-admin-token-0123456789abcdef"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    settings = make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_BENCH_ROUTES="true",
                             EXAMGATE_ADMIN_TOKENS=f"ops:{TOKEN}")
    return await aiohttp_client(create_app(settings))


async def configure(client: TestClient, patch: dict[str, Any]) -> None:
    await client.app[keys.CONFIG_STORE].patch(patch, actor="test")
    await client.app[keys.LIVE].refresh()


async def post_in_pieces(client: TestClient, *parts: bytes, pause_s: float) -> Any:
    """POST /_bench/post-json with a body sent a part at a time."""
    return await client.post("/_bench/post-json", data=in_pieces(*parts, pause_s=pause_s),
                             headers={"Content-Type": "application/json"})


def test_route_classes() -> None:
    declared = {op.name: op.shedding_class for module in modules(bench=True) for op in module.routes.operations}
    assert declared["health.ready"] is None and declared["metrics"] is None
    assert declared["admin.config.patch"] == "admin"
    assert declared["payments.notify.alipay"] == "payment_notify"
    assert declared["sessions.create"] == "login" and declared["password_resets.sms.confirm"] == "login"
    assert declared["sites.list"] == "candidate_read"
    assert declared["registrations.seat.put"] == "candidate_write"


async def test_k_plus_n_slow_requests_give_exactly_n_immediate_503s(client: TestClient) -> None:
    k, n = 5, 7
    await configure(client, {"shedding": {"candidate_read": k}})

    finished: list[int] = []  # statuses in the order their answers came in

    async def get() -> tuple[int, Any]:
        resp = await client.get("/_bench/sleep?ms=800")
        body = await resp.json()
        finished.append(resp.status)
        return resp.status, (resp.headers.get("Retry-After"), body)

    results = await asyncio.gather(*(get() for _ in range(k + n)))
    assert sorted(status for status, _ in results) == [200] * k + [503] * n
    # A shed request is answered at once, not after the slow ones: every 503 came in before any 200.
    assert finished == [503] * n + [200] * k
    for status, (retry_after, body) in results:
        if status == 503:
            assert retry_after == "1"
            assert_error_shape(body, "overloaded")
            assert body["error"]["details"]["reason"] == "in_flight"


async def test_admin_passes_while_candidate_reads_are_shed(client: TestClient) -> None:
    await configure(client, {"shedding": {"candidate_read": 1}})
    slow = asyncio.ensure_future(client.get("/_bench/sleep?ms=800"))
    await asyncio.sleep(0.2)
    shed = await client.get("/_bench/noop")
    assert shed.status == 503
    admin = await client.get("/admin/api/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert admin.status == 200
    assert (await slow).status == 200


async def test_loop_lag_sheds_candidates_but_not_admin(client: TestClient) -> None:
    await configure(client, {"shedding": {"max_loop_lag_ms": 50, "candidate_read": 4096}})
    client.app[keys.LOOP_LAG].lag_s = 0.2  # as if the loop had just been blocked for 200 ms
    client.app[keys.LOOP_LAG].interval_s = 3600  # and keep that reading for the test
    await asyncio.sleep(0.1)
    client.app[keys.LOOP_LAG].lag_s = 0.2
    # A late loop with few requests in flight is the machine's, not this process's: nothing is shed.
    assert (await client.get("/_bench/noop")).status == 200
    busy = [asyncio.ensure_future(client.get("/_bench/sleep?ms=800")) for _ in range(LAG_MIN_IN_FLIGHT)]
    await asyncio.sleep(0.3)
    resp = await client.get("/_bench/noop")
    assert resp.status == 503
    assert (await resp.json())["error"]["details"]["reason"] == "loop_lag"
    admin = await client.get("/admin/api/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert admin.status == 200
    assert (await client.get("/healthz")).status == 200
    assert [(await answer).status for answer in busy] == [200] * LAG_MIN_IN_FLIGHT


async def test_maintenance_switch_answers_503_with_the_message(client: TestClient) -> None:
    await configure(client, {"maintenance": {"sites.list": "考点查询维护中，预计 10 分钟后恢复"}})
    resp = await client.get("/api/v1/exams/999999999/sites")
    assert resp.status == 503
    body = await resp.json()
    assert_error_shape(body, "maintenance")
    assert body["error"]["message"] == "考点查询维护中，预计 10 分钟后恢复"
    assert resp.headers["Retry-After"]
    assert (await client.get("/api/v1/exams")).status == 200
    await configure(client, {"maintenance": {"sites.list": None}})
    assert (await client.get("/api/v1/exams/999999999/sites")).status == 404


async def test_a_request_counts_against_its_class_once_its_body_is_in(client: TestClient) -> None:
    await configure(client, {"shedding": {"candidate_write": 1}})
    slow = asyncio.ensure_future(post_in_pieces(client, b'{"a"', b": 1}", pause_s=0.6))
    await asyncio.sleep(0.2)
    resp = await client.post("/_bench/post-json", json={"a": 1})
    assert resp.status == 200, await resp.text()
    assert (await slow).status == 200


async def test_a_body_not_in_within_the_timeout_gets_408(aiohttp_client: Any, pg_dsn: str, redis_url: str,
                                                          redis: aioredis.Redis, tmp_path: Path) -> None:
    settings = make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_BENCH_ROUTES="true", EXAMGATE_BODY_TIMEOUT_S="0.3")
    client = await aiohttp_client(create_app(settings))
    resp = await post_in_pieces(client, b"{", b"}", pause_s=1.0)
    assert resp.status == 408  # before the second piece, which would have completed the body
    body = await resp.json()
    assert_error_shape(body, "request_timeout")
    assert body["error"]["details"] == {"timeout_s": 0.3}
    assert resp.headers["Connection"] == "close" and resp.headers["X-Request-Id"]


def test_in_flight_per_address() -> None:
    shedder = Shedder(ClientIp(()), max_in_flight_per_address=2)
    assert shedder.enter("198.51.100.1") and shedder.enter("198.51.100.1")
    assert not shedder.enter("198.51.100.1")
    assert shedder.enter("198.51.100.2")
    shedder.leave("198.51.100.1")
    assert shedder.enter("198.51.100.1")
    for address in ("198.51.100.1", "198.51.100.1", "198.51.100.2"):
        shedder.leave(address)
    assert shedder.by_address == {}  # nothing kept for addresses with nothing in flight
    assert "payment_notify" in ADDRESS_EXEMPT  # providers send many from few addresses
