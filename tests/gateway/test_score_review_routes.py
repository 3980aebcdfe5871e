"""Score review requests over HTTP, in-process: a candidate asks within the window (closed, not open, no score,
twice, bad input, throttled), operators answer once within their provinces (two racing: one 200, one 409), a
correction changes the score in PostgreSQL and in the lookup, and the candidate reads the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from benchmarks.import_data import ScoredExam, id_number, make_exam_with_tickets
from core.timeutil import utcnow
from gateway import keys
from gateway.app import create_app
from gateway.imports import import_hooks
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import make_sessions
from tests.gateway.test_app import assert_error_shape

MINE = "/api/v1/score-reviews"
ADMIN = "/admin/api/v1/score-reviews"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    made = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    await h.set_live(made, {"captcha": {"routes": {"scores.lookup": "off"}}})
    try:
        yield made
    finally:
        await redis.flushdb()  # the relaxed live config must not outlive these tests


async def call(client: TestClient, method: str, path: str, status: int, token: str | None = None,
               **kw: Any) -> Any:
    headers = h.bearer(token) if token is not None and not token.startswith("Bearer ") else {}
    if token is not None and token.startswith("Bearer "):
        headers = {"Authorization": token}
    resp = await client.request(method, path, headers=headers, **kw)
    assert resp.status == status, (method, path, resp.status, await resp.text())
    return await resp.json() if resp.content_type == "application/json" else None


async def refused(client: TestClient, method: str, path: str, status: int, code: str, token: str | None = None,
                  **kw: Any) -> dict[str, Any]:
    body = await call(client, method, path, status, token, **kw)
    assert_error_shape(body, code)
    return dict(body["error"])


ADMIN_AUTH = f"Bearer {h.ADMIN_TOKEN}"


async def operator(client: TestClient, name: str, role: str, provinces: list[str] | None = None) -> str:
    """A stored operator's token, as an Authorization value."""
    body: dict[str, Any] = {"name": name, "role": role}
    if provinces is not None:
        body["provinces"] = provinces
    await call(client, "POST", "/admin/api/v1/operators", 201, ADMIN_AUTH, json=body)
    issued = await call(client, "POST", f"/admin/api/v1/operators/{name}/tokens", 201, ADMIN_AUTH, json={})
    return f"Bearer {issued['token']}"


async def scored(client: TestClient, pg: asyncpg.Connection, redis_url: str,
                 people: int = 2) -> tuple[ScoredExam, list[str]]:
    """A released exam, each ticket holder scored 71.5 in 101 and 58 in 102, its review window open; tokens."""
    exam = await make_exam_with_tickets(pg, people)
    await pg.execute("""INSERT INTO scores (registration_id, exam_id, subject_code, score)
                        SELECT r.id, r.exam_id, s.code, CASE s.code WHEN '101' THEN 71.5 ELSE 58 END
                          FROM registrations r CROSS JOIN (VALUES ('101'), ('102')) AS s(code)
                         WHERE r.exam_id = $1""", exam.exam_id)
    await pg.execute("UPDATE exams SET score_release_at = now() - interval '1 hour' WHERE id = $1", exam.exam_id)
    await client.app[keys.CATALOGUE].refresh()
    await put_window(client, exam.exam_id, "open")
    candidates = [r[0] for r in await pg.fetch(
        "SELECT candidate_id FROM registrations WHERE exam_id = $1 ORDER BY id", exam.exam_id)]
    return exam, await make_sessions(redis_url, candidates)


def window(state: str) -> dict[str, str | None]:
    now = utcnow()
    opens, closes = {"open": (now - timedelta(days=1), now + timedelta(days=1)),
                     "not_open": (now + timedelta(days=1), now + timedelta(days=2)),
                     "closed": (now - timedelta(days=2), now - timedelta(days=1))}[state]
    return {"opens_at": opens.isoformat(), "closes_at": closes.isoformat()}


async def put_window(client: TestClient, exam_id: int, state: str) -> dict[str, Any]:
    body = {"opens_at": None, "closes_at": None} if state == "none" else window(state)
    answer: dict[str, Any] = await call(client, "PUT", f"/admin/api/v1/exams/{exam_id}/score-review-window", 200,
                                        ADMIN_AUTH, json=body)
    return answer


async def lookup(client: TestClient, exam: ScoredExam, i: int) -> dict[str, float]:
    body = await call(client, "POST", "/api/v1/scores/lookup", 200,
                      json={"exam_id": exam.exam_id, "name": f"考生{i}", "id_number": id_number(exam.tag, i)})
    return {s["code"]: s["score"] for s in body["subjects"]}


async def test_asking_within_the_window_for_scored_subjects_once(client: TestClient, pg: asyncpg.Connection,
                                                                  redis_url: str) -> None:
    exam, (alice, bob) = await scored(client, pg, redis_url)
    ask = {"exam_id": exam.exam_id, "subjects": ["101"]}
    await refused(client, "POST", MINE, 401, "unauthorized", json=ask)
    await put_window(client, exam.exam_id, "none")
    error = await refused(client, "POST", MINE, 409, "not_open", alice, json=ask)
    assert error["details"] == {"opens_at": None, "closes_at": None}
    await put_window(client, exam.exam_id, "not_open")
    error = await refused(client, "POST", MINE, 409, "not_open", alice, json=ask)
    assert error["details"]["opens_at"].endswith("+08:00")
    await put_window(client, exam.exam_id, "closed")
    await refused(client, "POST", MINE, 409, "closed", alice, json=ask)
    await put_window(client, exam.exam_id, "open")

    for bad, field in (({"exam_id": exam.exam_id, "subjects": []}, "subjects"),
                       ({"exam_id": exam.exam_id, "subjects": ["101", "101"]}, "subjects.1"),
                       ({"exam_id": exam.exam_id}, "subjects"),
                       ({"exam_id": "x", "subjects": ["101"]}, "exam_id"),
                       ({**ask, "extra": 1}, "extra")):
        error = await refused(client, "POST", MINE, 422, "validation_failed", alice, json=bad)
        assert field in error["details"]["fields"], error
    await refused(client, "POST", MINE, 404, "exam_not_found", alice, json={**ask, "exam_id": 999_999_999})
    error = await refused(client, "POST", MINE, 409, "no_score", alice, json={**ask, "subjects": ["103", "101"]})
    assert error["details"]["subjects"] == ["103"]

    made = await call(client, "POST", MINE, 201, alice, json={**ask, "subjects": ["101", "102"]})
    assert [(r["subject"], r["status"], r["score_before"], r["score_after"]) for r in made["reviews"]] == [
        ("101", "pending", 71.5, None), ("102", "pending", 58.0, None)]
    error = await refused(client, "POST", MINE, 409, "already_requested", alice, json=ask)
    assert error["details"]["subjects"] == ["101"]
    mine = await call(client, "GET", MINE, 200, alice)
    assert [r["review_id"] for r in mine["reviews"]] == [r["review_id"] for r in made["reviews"]]
    [seen] = [e for e in mine["exams"] if e["exam_id"] == exam.exam_id]
    assert seen["window"] == "open" and [s["requested"] for s in seen["subjects"]] == [True, True]
    assert (await call(client, "GET", MINE, 200, bob))["reviews"] == []


async def test_asking_is_throttled_per_candidate(client: TestClient, pg: asyncpg.Connection, redis_url: str) -> None:
    exam, (alice, bob) = await scored(client, pg, redis_url)
    await h.set_live(client, {"ratelimit": {"rules": [
        {"id": "score-reviews-candidate", "routes": ["score_reviews.create"], "key": "candidate", "rate": 1,
         "period_s": 3600, "burst": 1, "mode": "enforce", "on_redis_error": "local"}]}})
    await call(client, "POST", MINE, 201, alice, json={"exam_id": exam.exam_id, "subjects": ["101"]})
    await refused(client, "POST", MINE, 429, "too_many_requests", alice,
                  json={"exam_id": exam.exam_id, "subjects": ["102"]})
    await call(client, "POST", MINE, 201, bob, json={"exam_id": exam.exam_id, "subjects": ["102"]})


async def test_operators_answer_once_within_their_provinces(client: TestClient, pg: asyncpg.Connection,
                                                            redis_url: str) -> None:
    exam, (alice, _) = await scored(client, pg, redis_url)
    [review] = (await call(client, "POST", MINE, 201, alice,
                           json={"exam_id": exam.exam_id, "subjects": ["102"]}))["reviews"]
    path = f"{ADMIN}/{review['review_id']}/decision"
    tag = str(exam.exam_id)
    beijing = await operator(client, f"bj{tag}", "reviewer", ["11"])
    shandong = await operator(client, f"sd{tag}", "reviewer", ["37"])
    ops = await operator(client, f"op{tag}", "operator")
    keep = {"outcome": "unchanged", "reason": "经复核，成绩无误"}

    await refused(client, "GET", ADMIN, 401, "unauthorized")
    await refused(client, "GET", ADMIN, 403, "forbidden", ops)
    await refused(client, "POST", path, 403, "forbidden", ops, json=keep)
    assert (await call(client, "GET", f"{ADMIN}?exam_id={exam.exam_id}", 200, shandong))["reviews"] == []
    await refused(client, "POST", path, 404, "score_review_not_found", shandong, json=keep)
    page = await call(client, "GET", f"{ADMIN}?exam_id={exam.exam_id}&status=pending", 200, beijing)
    assert [(r["review_id"], r["score_now"], r["full_mark"]) for r in page["reviews"]] == [
        (review["review_id"], 58.0, 100.0)]
    for bad in ({"outcome": "unchanged"}, {"outcome": "maybe", "reason": "x"}, {**keep, "score": 60},
                {"outcome": "corrected", "reason": "x"}, {"outcome": "corrected", "reason": "x", "score": 60.25},
                {"outcome": "corrected", "reason": "x", "score": 100.5}, {"outcome": "corrected", "reason": "x",
                                                                         "score": 58}, {**keep, "reason": "   "}):
        await refused(client, "POST", path, 422, "validation_failed", beijing, json=bad)
    await refused(client, "GET", f"{ADMIN}?status=done", 422, "validation_failed", beijing)
    await refused(client, "POST", f"{ADMIN}/999999999/decision", 404, "score_review_not_found", beijing, json=keep)

    # Two operators answering at once: one answer is stored, the other is told it was already answered.
    first, second = await asyncio.gather(
        client.post(path, json=keep, headers={"Authorization": beijing}),
        client.post(path, json={"outcome": "corrected", "score": 66, "reason": "漏评"},
                    headers={"Authorization": ADMIN_AUTH}))
    statuses = sorted([first.status, second.status])
    assert statuses == [200, 409], (await first.text(), await second.text())
    loser = first if first.status == 409 else second
    assert_error_shape(await loser.json(), "already_decided")
    winner = await (first if first.status == 200 else second).json()
    [answer] = (await call(client, "GET", MINE, 200, alice))["reviews"]
    assert answer["status"] == winner["status"] and answer["reason"] == winner["reason"]
    assert answer["decided_at"] is not None
    assert (await call(client, "GET", f"{ADMIN}?exam_id={exam.exam_id}", 200, beijing))["reviews"] == []
    assert len((await call(client, "GET", f"{ADMIN}?exam_id={exam.exam_id}&status=all", 200,
                           beijing))["reviews"]) == 1


async def test_a_correction_changes_the_score_everywhere(client: TestClient, pg: asyncpg.Connection,
                                                         redis_url: str) -> None:
    exam, (alice, bob) = await scored(client, pg, redis_url)
    [review] = (await call(client, "POST", MINE, 201, alice,
                           json={"exam_id": exam.exam_id, "subjects": ["102"]}))["reviews"]
    path = f"{ADMIN}/{review['review_id']}/decision"
    answered = await call(client, "POST", path, 200, ADMIN_AUTH,
                          json={"outcome": "corrected", "score": 61.5, "reason": "第 3 题漏评，加 3.5 分"})
    batch = f"review-{review['review_id']}"
    assert (answered["status"], answered["score_after"], answered["batch_id"], answered["already_applied"]) == (
        "corrected", 61.5, batch, False)
    assert await pg.fetchval("""SELECT s.score FROM scores s JOIN admission_tickets t USING (registration_id)
                                WHERE t.ticket_no = $1 AND s.subject_code = '102'""",
                             f"T{exam.tag}{1:09d}") == Decimal("61.5")
    change = await pg.fetchrow("SELECT old_score, new_score FROM score_changes WHERE batch_id = $1", batch)
    assert (change["old_score"], change["new_score"]) == (Decimal("58.0"), Decimal("61.5"))
    await refused(client, "POST", path, 409, "already_decided", ADMIN_AUTH,
                  json={"outcome": "corrected", "score": 61.5, "reason": "再次"})

    [seen] = (await call(client, "GET", MINE, 200, alice))["reviews"]
    assert (seen["status"], seen["score_before"], seen["score_after"], seen["reason"]) == (
        "corrected", 58.0, 61.5, "第 3 题漏评，加 3.5 分")
    assert seen["requested_at"].endswith("+08:00") and seen["decided_at"].endswith("+08:00")
    # The registration's history tells it too, its reasons strings as every event's.
    history = await call(client, "GET", f"/api/v1/registrations/{answered['registration_id']}/history", 200, alice)
    events = [e for e in history if e["action"].startswith("score_review.")]
    assert [e["action"] for e in events] == ["score_review.requested", "score_review.corrected"]
    assert events[1]["reasons"][0]["message"] == "科目 102：第 3 题漏评，加 3.5 分（58.0 → 61.5）"
    assert all(isinstance(v, str) for e in events for r in e["reasons"] for v in r.values())
    assert (await call(client, "GET", MINE, 200, bob))["reviews"] == []


async def test_the_window_is_set_by_admins_and_audited(client: TestClient, pg: asyncpg.Connection,
                                                       redis_url: str) -> None:
    exam, _ = await scored(client, pg, redis_url, people=1)
    path = f"/admin/api/v1/exams/{exam.exam_id}/score-review-window"
    reviewer = await operator(client, f"w{exam.exam_id}", "reviewer", ["11"])
    await refused(client, "PUT", path, 403, "forbidden", reviewer, json=window("open"))
    opens = window("open")
    for bad in ({"opens_at": opens["closes_at"], "closes_at": opens["opens_at"]},
                {"opens_at": opens["opens_at"], "closes_at": None},
                {"opens_at": "2026-01-01T00:00:00", "closes_at": opens["closes_at"]},
                {"opens_at": "1739-03-19T21:41:01Z", "closes_at": opens["closes_at"]},
                {"opens_at": opens["opens_at"]}):
        await refused(client, "PUT", path, 422, "validation_failed", ADMIN_AUTH, json=bad)
    await refused(client, "PUT", "/admin/api/v1/exams/999999999/score-review-window", 404, "exam_not_found",
                  ADMIN_AUTH, json=opens)
    stored = await call(client, "PUT", path, 200, ADMIN_AUTH, json=opens)
    assert stored["opens_at"].endswith("+08:00")
    audit = await call(client, "GET", "/admin/api/v1/audit", 200, ADMIN_AUTH)
    entries = [(e["actor"], d) for e in audit["changes"] for d in e["diff"]
               if d["path"] == f"exams.{exam.exam_id}.score_review_window"]
    assert entries and entries[0][0] == "ops" and entries[0][1]["new"] == {
        "opens_at": stored["opens_at"], "closes_at": stored["closes_at"]}


async def test_the_lookup_answers_the_corrected_score(client: TestClient, pg: asyncpg.Connection,
                                                      redis_url: str) -> None:
    if "scores" not in import_hooks(client.app):
        pytest.skip("the scores import has no hook refreshing the lookups in this gateway")
    exam, (alice, _) = await scored(client, pg, redis_url)
    assert await lookup(client, exam, 1) == {"101": 71.5, "102": 58.0}  # in Redis from here on
    [review] = (await call(client, "POST", MINE, 201, alice,
                           json={"exam_id": exam.exam_id, "subjects": ["102"]}))["reviews"]
    await call(client, "POST", f"{ADMIN}/{review['review_id']}/decision", 200, ADMIN_AUTH,
               json={"outcome": "corrected", "score": 61.5, "reason": "第 3 题漏评，加 3.5 分"})
    assert await lookup(client, exam, 1) == {"101": 71.5, "102": 61.5}
    assert await lookup(client, exam, 2) == {"101": 71.5, "102": 58.0}
