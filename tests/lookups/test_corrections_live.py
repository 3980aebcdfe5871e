"""A score correction on a running gateway: 50 clients look scores up in a loop while a scores import (the admin
route) changes them; no answer to a lookup that started after the import's COMMIT shows the old score.

A 2-process gateway on real Redis and PostgreSQL, the exam prewarmed. Two candidates are corrected: A's
record stays in Redis; B's fields are deleted from Redis over and over for the whole run (as a key lost
would be), so B's lookups keep falling back to PostgreSQL and the processes keep B's answers in memory and
write them back — the paths where an old answer could outlive the commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from loadtest.processes import Process, start_gateway
from lookups import prewarm, records
from tests.gateway.seat_stack import set_live
from tests.gateway.test_lookup_routes import SCORES, make_results

CLIENTS = 50
BEFORE = 300  # answers before the correction is applied
AFTER = 200  # answers per corrected candidate to requests started after the commit
MAX_REQUESTS = 20_000  # the loop's bound, whatever happens
NEW_SCORE = 93.5


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=4) as made:
        yield made


async def _answer(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float | None:
    """The subject 101 score of one lookup (an answer no cache keeps); None when the gateway shed it (503)."""
    async with http.post(url, json=body) as resp:
        payload = await resp.json()
        if resp.status == 503:
            return None
        assert resp.status == 200, payload
        assert resp.headers["Cache-Control"] == "no-store"  # no browser or proxy keeps an old answer
        return float(next(s["score"] for s in payload["subjects"] if s["code"] == "101"))


async def test_no_lookup_started_after_the_commit_answers_the_old_score(
        pg: asyncpg.Connection, pg_dsn: str, pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str) -> None:
    exam_id, people = await make_results(pg, 20)
    code = await pg.fetchval("SELECT code FROM exams WHERE id = $1", exam_id)
    await prewarm.prewarm(pool, redis, exam_id)
    a, b = people[3], people[4]
    assert NEW_SCORE not in (a["score_101"], b["score_101"])
    gateway: Process = start_gateway(pg_dsn, redis_url, workers=2)
    try:
        # No captcha and no throttles in either process: what is measured is the answers.
        await set_live(gateway, {"captcha": {"routes": {"scores.lookup": "off"}}, "ratelimit": {"rules": []}})
        await _run(gateway, redis, exam_id, code, a, b)
    finally:
        gateway.stop()


async def _run(gateway: Process, redis: aioredis.Redis, exam_id: int, code: str,
               a: dict[str, Any], b: dict[str, Any]) -> None:
    url = gateway.url + SCORES
    # (candidate, started, score) of every answer; times on this process's monotonic clock
    answers: list[tuple[str, float, float]] = []
    committed_at: list[float] = []
    stop = asyncio.Event()
    enough_before = asyncio.Event()  # BEFORE answers in: time to correct
    b_fields = [(records.bucket_key(exam_id, f), f) for f in (records.field_name("id_number", b["id_number"]),
                                                              records.field_name("ticket_no", b["ticket_no"]))]

    def after(who: str) -> int:
        return sum(1 for w, started, _ in answers if w == who and committed_at and started > committed_at[0])

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        person, who = (a, "a") if index % 2 == 0 else (b, "b")
        mode = "id_number" if index % 4 < 2 else "ticket_no"
        body = {"exam_id": exam_id, "name": person["name"], mode: person[mode]}
        while not stop.is_set() and len(answers) < MAX_REQUESTS:
            started = time.monotonic()
            score = await _answer(http, url, body)
            if score is not None:
                answers.append((who, started, score))
            if len(answers) >= BEFORE:
                enough_before.set()
            if after("a") >= AFTER and after("b") >= AFTER:
                stop.set()

    async def churn() -> None:  # B's record keeps vanishing from Redis
        while not stop.is_set():
            for key, name in b_fields:
                await redis.hdel(key, name)
            await asyncio.sleep(0.005)

    async def correct(http: aiohttp.ClientSession) -> None:
        await enough_before.wait()
        data = ("exam_code,ticket_no,id_number,subject_code,score\n"
                f"{code},{a['ticket_no']},{a['id_number']},101,{NEW_SCORE}\n"
                f"{code},{b['ticket_no']},{b['id_number']},101,{NEW_SCORE}\n").encode()
        async with http.post(gateway.url + "/admin/api/v1/imports/scores", data=data, headers={
                "Content-Type": "text/csv", "Idempotency-Key": "live-fix",
                "Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
            result = await resp.json()
        committed_at.append(time.monotonic())  # the answer comes after the COMMIT: no earlier than it
        assert resp.status == 200 and result["applied"] == 2, result

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS + 1)) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(CLIENTS)]
        churning = asyncio.create_task(churn())
        try:
            await asyncio.wait_for(correct(http), 60)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, churning, return_exceptions=True)

    assert len(answers) < MAX_REQUESTS, "the loop ended on its bound, not on enough answers after the commit"
    commit = committed_at[0]
    for who, person in (("a", a), ("b", b)):
        before = [score for w, started, score in answers if w == who and started <= commit]
        later = [score for w, started, score in answers if w == who and started > commit]
        assert float(person["score_101"]) in before  # the old score was being answered
        stale = [score for score in later if score != NEW_SCORE]
        assert not stale, f"{who}: {len(stale)} of {len(later)} answers after the commit show the old score"
        assert len(later) >= AFTER
