"""Enrolment and seat routes over HTTP against a running gateway (2 processes) and worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from core.timeutil import utcnow
from loadtest.processes import Process
from tests.conftest import TEST_REDIS_URL
from tests.gateway.seat_stack import (
    ENROLMENT,
    bearer,
    exam_ready,
    make_candidates,
    make_sessions,
    pg_holds,
    running_stack,
    seats_left,
    set_live,
    wait_drained,
    wait_inventory,
)
from tests.gateway.test_app import assert_error_shape


@pytest.fixture(scope="module")
def stack(pg_dsn: str) -> Iterator[tuple[Process, Process]]:
    with running_stack(pg_dsn, TEST_REDIS_URL) as processes:
        yield processes


@pytest.fixture
def gateway(stack: tuple[Process, Process]) -> Process:
    return stack[0]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def enrol(http: aiohttp.ClientSession, gateway: Process, token: str, exam_id: int, **changes: object) -> int:
    resp = await http.post(f"{gateway.url}/api/v1/registrations", json={**ENROLMENT, "exam_id": exam_id, **changes},
                           headers=bearer(token))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["status"] == "draft"
    return int(body["registration_id"])


async def test_enrol_read_and_errors(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                     http: aiohttp.ClientSession) -> None:
    exam_id, _ = await exam_ready(pg, gateway, [("11", 10), ("37", 10)])
    alice, bob = await make_candidates(pg, 2)
    alice_token, bob_token = await make_sessions(redis_url, [alice, bob])
    url = f"{gateway.url}/api/v1/registrations"

    anonymous = await http.post(url, json={**ENROLMENT, "exam_id": exam_id})
    assert anonymous.status == 401
    assert_error_shape(await anonymous.json(), "unauthorized")

    registration_id = await enrol(http, gateway, alice_token, exam_id)
    again = await http.post(url, json={**ENROLMENT, "exam_id": exam_id}, headers=bearer(alice_token))
    assert again.status == 409
    assert_error_shape(await again.json(), "already_registered")

    invalid = await http.post(url, json={**ENROLMENT, "exam_id": exam_id, "subjects": ["999"], "extra": 1},
                              headers=bearer(bob_token))
    assert invalid.status == 422
    body = await invalid.json()
    assert_error_shape(body, "validation_failed")
    assert body["error"]["details"]["fields"] == {"subjects.0": "invalid_choice", "extra": "unknown_field"}

    malformed = await http.post(url, data=b"{", headers=bearer(bob_token, **{"Content-Type": "application/json"}))
    assert malformed.status == 400

    await pg.execute("UPDATE exams SET registration_closes_at = now() - interval '1 minute' WHERE id = $1", exam_id)
    try:
        await gateway_sees_closed(http, gateway, bob_token, exam_id)
    finally:
        await pg.execute("UPDATE exams SET registration_closes_at = now() + interval '10 days' WHERE id = $1", exam_id)

    own = await http.get(f"{url}/{registration_id}", headers=bearer(alice_token))
    assert own.status == 200
    record = await own.json()
    assert record["registration_id"] == registration_id and record["exam_id"] == exam_id
    assert record["status"] == "draft" and record["site_id"] is None and record["hold_expires_at"] is None
    assert record["order_no"] is None and record["ticket_no"] is None
    for path, token in [(f"{url}/{registration_id}", bob_token), (f"{url}/99999999", alice_token),
                        (f"{url}/abc", alice_token)]:
        resp = await http.get(path, headers=bearer(token))
        assert resp.status == 404, path
        assert_error_shape(await resp.json(), "registration_not_found")


async def gateway_sees_closed(http: aiohttp.ClientSession, gateway: Process, token: str, exam_id: int) -> None:
    """Every process answers 403 registration_closed once its catalogue has the new window."""
    import asyncio
    import time

    deadline = time.monotonic() + 5
    closed = 0
    while closed < 6:
        assert time.monotonic() < deadline, "the catalogue refresh did not close registration"
        resp = await http.post(f"{gateway.url}/api/v1/registrations", json={**ENROLMENT, "exam_id": exam_id},
                               headers=bearer(token, Connection="close"))
        if resp.status == 403:
            assert_error_shape(await resp.json(), "registration_closed")
            closed += 1
        else:
            assert resp.status in (201, 409), await resp.text()
            await asyncio.sleep(0.1)


async def test_seat_hold_move_release_confirm(gateway: Process, pg: asyncpg.Connection, redis_url: str,
                                              store: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    exam_id, (beijing_1, shandong, beijing_2) = await exam_ready(pg, gateway, [("11", 5), ("37", 5), ("11", 5)])
    await wait_inventory(store, exam_id, [beijing_1, shandong, beijing_2])
    await set_live(gateway, {"seats": {"hold_ttl_s": 600}})
    alice, bob = await make_candidates(pg, 2)
    alice_token, bob_token = await make_sessions(redis_url, [alice, bob])
    registration_id = await enrol(http, gateway, alice_token, exam_id)
    base = f"{gateway.url}/api/v1/registrations/{registration_id}"

    draft = await http.put(f"{base}/seat", json={"site_id": beijing_1}, headers=bearer(alice_token))
    assert draft.status == 409  # a draft is not approved: no seat
    assert_error_shape(await draft.json(), "not_approved")
    confirmed = await http.post(f"{base}/confirm", headers=bearer(alice_token))
    assert confirmed.status == 200, await confirmed.text()
    assert await confirmed.json() == {"registration_id": registration_id, "status": "approved", "reasons": [],
                                      "version": 2}
    again = await http.post(f"{base}/confirm", headers=bearer(alice_token))  # asked again: the same answer
    assert again.status == 200 and (await again.json())["status"] == "approved"

    before = utcnow()
    held = await http.put(f"{base}/seat", json={"site_id": beijing_1}, headers=bearer(alice_token))
    assert held.status == 200, await held.text()
    body = await held.json()
    assert body["site_id"] == beijing_1
    assert body["hold_expires_at"].endswith("+08:00")
    expires = datetime.fromisoformat(body["hold_expires_at"])
    assert before + timedelta(seconds=598) <= expires <= utcnow() + timedelta(seconds=601)
    assert await seats_left(store, exam_id, beijing_1) == 4

    for site_id, status, code in [(shandong, 422, "validation_failed"), (10**9, 404, "site_not_found"),
                                  ("1", 422, "validation_failed"), (None, 422, "validation_failed")]:
        resp = await http.put(f"{base}/seat", json={"site_id": site_id}, headers=bearer(alice_token))
        assert resp.status == status, (site_id, await resp.text())
        assert_error_shape(await resp.json(), code)
    someone_else = await http.put(f"{base}/seat", json={"site_id": beijing_1}, headers=bearer(bob_token))
    assert someone_else.status == 404
    assert (await http.put(f"{base}/seat", json={"site_id": beijing_1})).status == 401

    moved = await http.put(f"{base}/seat", json={"site_id": beijing_2}, headers=bearer(alice_token))
    assert moved.status == 200 and (await moved.json())["site_id"] == beijing_2
    assert await seats_left(store, exam_id, beijing_1) == 5
    assert await seats_left(store, exam_id, beijing_2) == 4
    record = await (await http.get(base, headers=bearer(alice_token))).json()
    assert record["site_id"] == beijing_2 and record["hold_expires_at"].endswith("+08:00")

    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == {registration_id: beijing_2}

    released = await http.delete(f"{base}/seat", headers=bearer(alice_token))
    assert released.status == 204
    assert (await http.delete(f"{base}/seat", headers=bearer(alice_token))).status == 204  # nothing held: fine
    assert await seats_left(store, exam_id, beijing_2) == 5
    record = await (await http.get(base, headers=bearer(alice_token))).json()
    assert record["status"] == "approved" and record["site_id"] is None
    await wait_drained(store, exam_id)
    assert await pg_holds(pg, exam_id) == {}

    await pg.execute("UPDATE registrations SET status = 'cancelled' WHERE id = $1", registration_id)
    cancelled_id = registration_id
    bob_registration = await enrol(http, gateway, bob_token, exam_id)
    assert (await http.post(f"{gateway.url}/api/v1/registrations/{bob_registration}/confirm",
                            headers=bearer(bob_token))).status == 200
    assert (await http.put(f"{gateway.url}/api/v1/registrations/{bob_registration}/seat",
                           json={"site_id": beijing_1}, headers=bearer(bob_token))).status == 200
    assert cancelled_id != bob_registration


async def test_stats_and_openapi_show_the_new_paths(gateway: Process, pg: asyncpg.Connection,
                                                     http: aiohttp.ClientSession) -> None:
    exam_id, site_ids = await exam_ready(pg, gateway, [("11", 7)])
    admin = {"Authorization": f"Bearer {gateway.admin_token()}"}
    stats = await (await http.get(f"{gateway.url}/admin/api/v1/stats", headers=admin)).json()
    assert str(exam_id) in stats["seats"], stats["seats"]
    seats = stats["seats"][str(exam_id)]
    assert seats["sites"][str(site_ids[0])]["capacity"] == 7
    assert "queues" in stats and "hold_streams" in stats
    doc = await (await http.get(f"{gateway.url}/api/v1/openapi.json")).json()
    assert {"/api/v1/registrations/{registration_id}/seat", "/api/v1/exams/{exam_id}/queue/{ticket}",
            "/admin/api/v1/reconcile"} <= set(doc["paths"])
