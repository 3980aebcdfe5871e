"""The waiting room over HTTP (gateway with 2 processes + worker advancing): places, the draw, admission tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from loadtest.processes import Process, start_gateway, start_worker
from queueing import admission
from queueing import keys as qkeys
from tests.conftest import TEST_REDIS_URL
from tests.gateway.seat_stack import (
    FAST_WORKER,
    bearer,
    enable_queue,
    exam_ready,
    make_candidates,
    make_registrations,
    make_sessions,
    wait_inventory,
)
from tests.gateway.test_app import assert_error_shape


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2)
    try:
        worker = start_worker(pg_dsn, TEST_REDIS_URL, **FAST_WORKER)
        try:
            yield process
        finally:
            assert worker.stop() == 0, worker.log()
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def admission_secret(gateway: Process) -> bytes:
    secret_key = json.loads((Path(gateway.extra["run_dir"]) / "secrets.json").read_text())["secret_key"]
    return hmac.new(secret_key.encode(), b"admission", hashlib.sha256).digest()


async def join(http: aiohttp.ClientSession, gateway: Process, exam_id: int, token: str) -> dict[str, Any]:
    resp = await http.post(f"{gateway.url}/api/v1/exams/{exam_id}/queue", headers=bearer(token))
    assert resp.status == 202, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


async def poll(http: aiohttp.ClientSession, gateway: Process, exam_id: int, ticket: str,
               token: str) -> tuple[int, dict[str, Any]]:
    resp = await http.get(f"{gateway.url}/api/v1/exams/{exam_id}/queue/{ticket}", headers=bearer(token))
    return resp.status, await resp.json()


async def test_queue_off_unknown_and_foreign_tickets(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                                     store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, _ = await exam_ready(pg, gateway, [("11", 10)])
    alice, bob = await make_candidates(pg, 2)
    alice_token, bob_token = await make_sessions(redis_url, [alice, bob])
    off = await http.post(f"{gateway.url}/api/v1/exams/{exam_id}/queue", headers=bearer(alice_token))
    assert off.status == 404
    assert_error_shape(await off.json(), "queue_not_enabled")

    await enable_queue(gateway, exam_id, admit_per_s=0.001)  # nobody is admitted during this test
    assert (await http.post(f"{gateway.url}/api/v1/exams/{exam_id}/queue")).status == 401
    first = await join(http, gateway, exam_id, alice_token)
    assert set(first) >= {"ticket", "position", "serving", "ahead", "eta_s", "poll_after_s"}
    assert first["position"] == 1 and first["serving"] == 0 and first["ahead"] == 0
    again = await join(http, gateway, exam_id, alice_token)
    assert (again["ticket"], again["position"]) == (first["ticket"], first["position"])

    status, body = await poll(http, gateway, exam_id, first["ticket"], alice_token)
    assert status == 200 and body["admitted"] is False and body["position"] == 1
    for ticket, token in [(first["ticket"], bob_token), ("A" * 22, alice_token), ("short", alice_token)]:
        status, body = await poll(http, gateway, exam_id, ticket, token)
        assert status == 404, body
        assert_error_shape(body, "queue_ticket_not_found")
    status, body = await poll(http, gateway, exam_id, first["ticket"], "not-a-session")
    assert status == 401
    status, body = await poll(http, gateway, exam_id, "A" * 22, "A" * 43)  # well formed, but no session
    assert status == 401
    anonymous = await http.get(f"{gateway.url}/api/v1/exams/{exam_id}/queue/{first['ticket']}")
    assert anonymous.status == 401
    # Not signed in wins over an unknown exam or a room that is not enabled.
    status, body = await poll(http, gateway, exam_id + 1000, first["ticket"], "not-a-session")
    assert status == 401, body
    status, body = await poll(http, gateway, exam_id + 1000, first["ticket"], alice_token)
    assert status == 404
    assert_error_shape(body, "exam_not_found")

    # Not polled within the place TTL (time moved on by making the last sighting old): 410, then a new place.
    record = (await store.hget(qkeys.room_tickets(exam_id), first["ticket"])).decode()
    candidate, position, _ = record.split(":")
    await store.hset(qkeys.room_tickets(exam_id), first["ticket"], f"{candidate}:{position}:1000")
    status, body = await poll(http, gateway, exam_id, first["ticket"], alice_token)
    assert status == 410
    assert_error_shape(body, "queue_place_expired")
    rejoined = await join(http, gateway, exam_id, alice_token)
    assert rejoined["ticket"] != first["ticket"] and rejoined["position"] == 2


async def test_admission_token_gates_the_seat_route(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                                    store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 10)])
    other_exam, _ = await exam_ready(pg, gateway, [("11", 10)])
    await wait_inventory(store, exam_id, [site_id])
    alice, bob = await make_candidates(pg, 2)
    alice_reg, bob_reg = await make_registrations(pg, exam_id, [alice, bob])
    alice_token, bob_token = await make_sessions(redis_url, [alice, bob])
    seat = f"{gateway.url}/api/v1/registrations/{alice_reg}/seat"

    # Queue off for the exam: no token needed.
    assert (await http.put(seat, json={"site_id": site_id}, headers=bearer(alice_token))).status == 200

    await enable_queue(gateway, exam_id, admit_per_s=1000, admission_ttl_s=300)
    place = await join(http, gateway, exam_id, alice_token)
    deadline = time.monotonic() + 5
    while True:
        status, body = await poll(http, gateway, exam_id, place["ticket"], alice_token)
        assert status == 200, body
        if body["admitted"]:
            break
        assert time.monotonic() < deadline, "not admitted at 1000/s"
        await asyncio.sleep(0.05)
    assert body["expires_in"] == 300 and set(body) == {"admitted", "admission_token", "expires_in"}
    token = body["admission_token"]

    secret = admission_secret(gateway)
    now = time.time()
    refused = {
        "missing": None,
        "forged": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "expired": admission.issue(secret, alice, exam_id, ttl_s=60, now_s=now - 120),
        "other candidate": admission.issue(secret, bob, exam_id, ttl_s=60, now_s=now),
        "other exam": admission.issue(secret, alice, other_exam, ttl_s=60, now_s=now),
        "garbage": "x" * 500,
    }
    for why, bad in refused.items():
        headers = bearer(alice_token, **({} if bad is None else {"X-Admission-Token": bad}))
        resp = await http.put(seat, json={"site_id": site_id}, headers=headers)
        assert resp.status == 403, why
        assert_error_shape(await resp.json(), "admission_required")
    ok = await http.put(seat, json={"site_id": site_id}, headers=bearer(alice_token, **{"X-Admission-Token": token}))
    assert ok.status == 200, await ok.text()
    # Bob's registration with Alice's token: refused too.
    resp = await http.put(f"{gateway.url}/api/v1/registrations/{bob_reg}/seat", json={"site_id": site_id},
                          headers=bearer(bob_token, **{"X-Admission-Token": token}))
    assert resp.status == 403


async def test_polling_again_never_renews_an_admission(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                                       store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (site_id,) = await exam_ready(pg, gateway, [("11", 10)])
    await wait_inventory(store, exam_id, [site_id])
    (alice,) = await make_candidates(pg, 1)
    (alice_reg,) = await make_registrations(pg, exam_id, [alice])
    (alice_token,) = await make_sessions(redis_url, [alice])
    await enable_queue(gateway, exam_id, admit_per_s=1000, admission_ttl_s=300)
    place = await join(http, gateway, exam_id, alice_token)
    deadline = time.monotonic() + 5
    while True:
        status, body = await poll(http, gateway, exam_id, place["ticket"], alice_token)
        assert status == 200, body
        if body["admitted"]:
            break
        assert time.monotonic() < deadline, "not admitted at 1000/s"
        await asyncio.sleep(0.05)
    admitted_at_ms = int(await store.hget(qkeys.room_admitted(exam_id), place["ticket"]))
    first = body["admission_token"]
    assert int(first.split(".")[2]) == admitted_at_ms // 1000 + 300  # expiry = admitted_at + admission_ttl_s
    assert 299 <= body["expires_in"] <= 300

    await asyncio.sleep(1.1)
    status, again = await poll(http, gateway, exam_id, place["ticket"], alice_token)
    assert status == 200 and again["admission_token"] == first  # the same token: same expiry
    assert again["expires_in"] < body["expires_in"]
    rejoined = await join(http, gateway, exam_id, alice_token)  # joining again does not renew it either
    assert rejoined["ticket"] == place["ticket"] and rejoined["admitted"] is True
    status, again = await poll(http, gateway, exam_id, place["ticket"], alice_token)
    assert status == 200 and again["admission_token"] == first

    # 300 s later (time moved on by making the admission old): 410, the place given up, join again.
    await store.hset(qkeys.room_admitted(exam_id), place["ticket"], admitted_at_ms - 300_000)
    status, body = await poll(http, gateway, exam_id, place["ticket"], alice_token)
    assert status == 410, body
    assert_error_shape(body, "queue_place_expired")
    assert body["error"]["details"] == {"exam_id": exam_id, "reason": "admission_expired"}
    status, body = await poll(http, gateway, exam_id, place["ticket"], alice_token)
    assert status == 410 and body["error"]["details"]["reason"] == "admission_expired"
    fresh = await join(http, gateway, exam_id, alice_token)
    assert fresh["ticket"] != place["ticket"] and fresh["position"] > place["position"]
    # The token handed out before still works until its own expiry (it is stateless).
    seat = f"{gateway.url}/api/v1/registrations/{alice_reg}/seat"
    ok = await http.put(seat, json={"site_id": site_id}, headers=bearer(alice_token, **{"X-Admission-Token": first}))
    assert ok.status == 200, await ok.text()


async def test_early_joiners_are_drawn_later_ones_first_come(gateway: Process, pg: asyncpg.Connection,
                                                             redis_url: str, http: aiohttp.ClientSession) -> None:
    # Everything up to the last early join must happen before the opening: 3 s was too short once on a
    # busy CI machine (the draw had already happened, position 1 where 0 was expected).
    exam_id, _ = await exam_ready(pg, gateway, [("11", 10)], opens_in_s=6)
    early_ids = await make_candidates(pg, 30)
    late_ids = await make_candidates(pg, 10)
    early_tokens = await make_sessions(redis_url, early_ids)
    late_tokens = await make_sessions(redis_url, late_ids)
    await enable_queue(gateway, exam_id, admit_per_s=0.001)  # read every position before anyone is admitted

    early = []
    for token in early_tokens:  # one after the other: a known arrival order
        place = await join(http, gateway, exam_id, token)
        assert place["position"] == 0 and place["admitted"] is False
        early.append(place["ticket"])
    status, body = await poll(http, gateway, exam_id, early[0], early_tokens[0])
    assert status == 200 and body["position"] == 0 and body["eta_s"] >= 1

    opened = await pg.fetchval("SELECT registration_opens_at FROM exams WHERE id = $1", exam_id)
    await asyncio.sleep(max(0.0, opened.timestamp() - time.time()) + 0.2)
    late = [await join(http, gateway, exam_id, token) for token in late_tokens]
    assert [place["position"] for place in late] == list(range(31, 41))  # first come, first served

    positions = []
    for ticket, token in zip(early, early_tokens, strict=True):
        status, body = await poll(http, gateway, exam_id, ticket, token)
        assert status == 200 and body["admitted"] is False
        positions.append(body["position"])
    assert sorted(positions) == list(range(1, 31))
    assert positions != list(range(1, 31)), "the draw kept the arrival order"

    await enable_queue(gateway, exam_id, admit_per_s=1000)
    admitted: set[str] = set()
    deadline = time.monotonic() + 10
    while len(admitted) < 40:
        assert time.monotonic() < deadline, f"only {len(admitted)} admitted"
        for ticket, token in zip(early + [p["ticket"] for p in late], early_tokens + late_tokens, strict=True):
            if ticket not in admitted:
                status, body = await poll(http, gateway, exam_id, ticket, token)
                assert status == 200, body
                if body["admitted"]:
                    admitted.add(ticket)
        await asyncio.sleep(0.1)
