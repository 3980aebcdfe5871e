"""Lookups with their Redis stopped: a two-process gateway keeps answering from PostgreSQL within
the fallback cap and answers 503 beyond it, then goes back to Redis when it returns."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from benchmarks.common import wait_config_version
from loadtest.processes import Process, RedisServer, start_gateway, start_redis
from tests.gateway.test_lookup_routes import SCORES, make_results

PEOPLE = 40
CAP = 2  # PostgreSQL fallbacks in flight per gateway process
PROCESSES = 2


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                headers: dict[str, str]) -> tuple[int, dict[str, Any], str | None]:
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


def _by_id(person: dict[str, Any], exam_id: int) -> dict[str, Any]:
    return {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}


def _score(answer: dict[str, Any]) -> float:
    return next(s["score"] for s in answer["subjects"] if s["code"] == "101")


async def test_lookups_answer_from_postgresql_while_redis_is_stopped(
        pg: asyncpg.Connection, pg_dsn: str, own_redis: RedisServer) -> None:
    exam_id, people = await make_results(pg, PEOPLE)  # before the start: the catalogue knows the exam
    gateway: Process = start_gateway(pg_dsn, own_redis.url, workers=PROCESSES, EXAMGATE_REDIS_TIMEOUT_MS="200",
                                     EXAMGATE_RATELIMIT_BUDGET_MS="100",
                                     EXAMGATE_LOOKUP_PG_MAX_IN_FLIGHT=str(CAP))
    url = gateway.url + SCORES
    try:
        # Captcha stays on (a load-test token passes it without Redis); the ip throttle stays on, open on error.
        version = gateway.patch_config({"ratelimit": {"rules": [
            {"id": "lookup-ip", "routes": ["tickets.lookup", "scores.lookup"], "key": "ip", "rate": 1_000_000,
             "period_s": 60, "burst": 1_000_000, "mode": "enforce", "on_redis_error": "open"}]}})
        wait_config_version(gateway.url, version)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
            async with session.post(gateway.url + "/admin/api/v1/loadtest-tokens", json={"ttl_s": 300},
                                    headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
                assert resp.status == 201, await resp.text()
                headers = {"X-Loadtest-Token": (await resp.json())["token"]}
            status, answer, _ = await _post(session, url, _by_id(people[0], exam_id), headers)
            assert status == 200, answer

            own_redis.stop()

            # Within the cap (one lookup at a time): every candidate gets the right record.
            for person in people:
                status, answer, _ = await _post(session, url, _by_id(person, exam_id), headers)
                assert status == 200, answer
                assert answer["ticket_no"] == person["ticket_no"] and _score(answer) == person["score_101"]
            wrong_name = await _post(session, url, {**_by_id(people[1], exam_id), "name": "不是本人"}, headers)
            wrong_id = await _post(session, url, {**_by_id(people[1], exam_id), "id_number": "P0000000000"},
                                   headers)
            assert wrong_name[0] == wrong_id[0] == 404
            assert {**wrong_name[1]["error"], "request_id": ""} == {**wrong_id[1]["error"], "request_id": ""}

            # Beyond the cap: PostgreSQL is held (the scores table locked), so the first CAP fallbacks of
            # each process wait and every other lookup is refused with 503 at once.
            blocker = await asyncpg.connect(pg_dsn)
            try:
                transaction = blocker.transaction()
                await transaction.start()
                await blocker.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
                burst = [asyncio.ensure_future(_post(session, url, {"exam_id": exam_id, "name": p["name"],
                                                                    "ticket_no": p["ticket_no"]}, headers))
                         for p in people]
                await asyncio.sleep(1.0)
                refused = [task.result() for task in burst if task.done()]
                await transaction.rollback()
            finally:
                await blocker.close()
            answers = await asyncio.gather(*burst)
        counted = Counter(status for status, _, _ in answers)
        assert set(counted) <= {200, 503}, counted
        assert 1 <= counted[200] <= CAP * PROCESSES, counted
        assert counted[503] >= PEOPLE - CAP * PROCESSES
        assert all(status == 503 for status, _, _ in refused) and len(refused) == counted[503]
        for status, answer, retry_after in answers:
            if status == 503:
                assert answer["error"]["code"] == "overloaded" and retry_after == "1"
                assert answer["error"]["details"]["reason"] == "lookup_fallback_full"
        by_ticket = {p["ticket_no"]: p for p in people}
        for status, answer, _ in answers:
            if status == 200:
                assert _score(answer) == by_ticket[answer["ticket_no"]]["score_101"]

        # Redis back: lookups are answered again (and written back to it).
        own_redis.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _attempt in range(50):
                status, answer, _ = await _post(session, url, _by_id(people[-1], exam_id), headers)
                if status == 200:
                    break
                await asyncio.sleep(0.2)
            assert status == 200, answer
    finally:
        gateway.stop()
