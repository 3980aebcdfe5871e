"""Ticket and score lookups in-process: both query modes, identical 404s, 425 without PostgreSQL,
prewarm counts, single-flight on a cold key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from core.timeutil import utcnow
from gateway import keys
from gateway.app import create_app
from lookups import prewarm, records
from tests.factories import make_exam, settled_reads
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import make_candidates, make_registrations

SCORES = "/api/v1/scores/lookup"
TICKETS = "/api/v1/tickets/lookup"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    await redis.flushdb()  # start clean: a PDF or record cached by an earlier module's exam of the same id
    client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    # no captcha and no throttles: what is measured here is the lookup itself
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={
        "captcha": {"routes": {"tickets.lookup": "off", "scores.lookup": "off"}}, "ratelimit": {"rules": []}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    try:
        yield client
    finally:
        await redis.flushdb()  # the relaxed live config must not outlive these tests


async def make_results(
    pg: asyncpg.Connection, count: int, *, released: bool = True
) -> tuple[int, list[dict[str, Any]]]:
    """An exam inside its ticket print window (scores released or not) with ``count`` ticketed, scored candidates."""
    exam_id = await make_exam(pg, sites=[("11", max(count, 30))])
    now = utcnow()
    await pg.execute("UPDATE exams SET ticket_print_opens_at = $2, ticket_print_closes_at = $3, score_release_at = $4 "
                     "WHERE id = $1", exam_id, now - timedelta(hours=1), now + timedelta(days=1),
                     now - timedelta(minutes=1) if released else now + timedelta(hours=2))
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    candidates = await make_candidates(pg, count)
    registrations = await make_registrations(pg, exam_id, candidates)
    await pg.execute("UPDATE registrations SET status = 'paid', site_id = $2, subjects = '{101,102}' "
                     "WHERE id = ANY($1::bigint[])", registrations, site_id)
    people = []
    for index, (candidate, registration) in enumerate(zip(candidates, registrations, strict=True)):
        ticket_no = f"{exam_id:04d}11{site_id:06d}{index + 1:05d}"
        await pg.execute("INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no) "
                         "VALUES ($1, $2, $3, $4, $5, $6)", ticket_no, registration, exam_id, site_id,
                         index // 30 + 1, index % 30 + 1)
        await pg.execute("INSERT INTO scores (registration_id, exam_id, subject_code, score) "
                         "VALUES ($1, $2, '101', $3), ($1, $2, '102', $4)",
                         registration, exam_id, 55 + index % 40, 72.5)
        row = await pg.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", candidate)
        people.append({"name": row["name"], "id_number": row["id_number"], "ticket_no": ticket_no,
                       "room": index // 30 + 1, "seat_no": index % 30 + 1, "score_101": 55 + index % 40})
    return exam_id, people


async def _refresh(client: TestClient) -> None:
    await client.app[keys.CATALOGUE].refresh()


async def test_scores_by_id_number_and_by_ticket_number(client: TestClient, pg: asyncpg.Connection) -> None:
    exam_id, people = await make_results(pg, 3)
    await _refresh(client)
    person = people[1]
    by_id = await client.post(SCORES, json={"exam_id": exam_id, "name": person["name"],
                                            "id_number": person["id_number"]})
    assert by_id.status == 200, await by_id.text()
    body = await by_id.json()
    assert body["ticket_no"] == person["ticket_no"] and body["name"] == person["name"]
    assert [(s["code"], s["score"], s["pass_mark"]) for s in body["subjects"]] == [
        ("101", person["score_101"], 60.0), ("102", 72.5, 60.0)]
    assert body["passed_all"] is (person["score_101"] >= 60)
    by_ticket = await client.post(SCORES, json={"exam_id": exam_id, "name": person["name"],
                                                "ticket_no": person["ticket_no"]})
    assert await by_ticket.json() == body


async def test_ticket_lookup_answers_the_seat_and_a_signed_pdf_link(client: TestClient, pg: asyncpg.Connection) -> None:
    exam_id, people = await make_results(pg, 2)
    await _refresh(client)
    person = people[0]
    resp = await client.post(TICKETS, json={"exam_id": exam_id, "name": person["name"],
                                            "id_number": person["id_number"]})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["ticket_no"], body["room"], body["seat_no"]) == (person["ticket_no"], 1, 1)
    assert body["site"]["name"] == "第1考点" and [s["code"] for s in body["subjects"]] == ["101", "102"]
    assert body["pdf_url"].startswith(f"/api/v1/tickets/{person['ticket_no']}.pdf?exam={exam_id}&exp=")


async def test_a_wrong_name_and_a_wrong_id_get_the_same_404(client: TestClient, pg: asyncpg.Connection) -> None:
    exam_id, people = await make_results(pg, 1)
    await _refresh(client)
    person = people[0]
    wrong_name = await client.post(SCORES, json={"exam_id": exam_id, "name": "李四", "id_number": person["id_number"]})
    wrong_id = await client.post(SCORES, json={"exam_id": exam_id, "name": person["name"], "id_number": "P000000000"})
    assert wrong_name.status == wrong_id.status == 404
    assert await wrong_name.json() == await wrong_id.json()
    assert (await wrong_name.json())["error"]["code"] == "not_found"


async def test_before_the_release_the_answer_is_425_and_postgresql_is_not_asked(
        client: TestClient, pg: asyncpg.Connection) -> None:
    exam_id, people = await make_results(pg, 1, released=False)
    await _refresh(client)
    person = people[0]
    reads = await settled_reads(pg, "admission_tickets")
    resp = await client.post(SCORES, json={"exam_id": exam_id, "name": person["name"],
                                           "id_number": person["id_number"]})
    assert resp.status == 425
    body = await resp.json()
    assert body["error"]["code"] == "not_yet_released" and "release_at" in body["error"]["details"]
    assert int(resp.headers["Retry-After"]) > 0
    assert await settled_reads(pg, "admission_tickets") == reads
    assert client.app[keys.LOOKUPS].pg_queries == 0


async def test_prewarm_loads_what_postgresql_has(client: TestClient, pg: asyncpg.Connection,
                                                 redis: aioredis.Redis) -> None:
    exam_id, people = await make_results(pg, 40)
    # one record without scores, one with a whole-number score: both kept as the single-record query writes them
    await pg.execute("DELETE FROM scores WHERE registration_id = (SELECT registration_id FROM admission_tickets "
                     "WHERE ticket_no = $1)", people[0]["ticket_no"])
    await pg.execute("UPDATE scores SET score = 80.0 WHERE subject_code = '101' AND registration_id = "
                     "(SELECT registration_id FROM admission_tickets WHERE ticket_no = $1)", people[1]["ticket_no"])
    resp = await client.post(f"/admin/api/v1/exams/{exam_id}/prewarm", headers=h.admin())
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    expected = await pg.fetchval("SELECT count(*) FROM admission_tickets WHERE exam_id = $1", exam_id)
    assert (report["tickets"], report["scores"]) == (expected, expected - 1) == (40, 39)
    for person in people:
        one = records.decode(await pg.fetchval(records.ONE_BY_ID_SQL, exam_id, person["id_number"]))
        for mode in ("id_number", "ticket_no"):
            field = records.field_name(mode, person[mode])
            record = records.decode(await redis.hget(records.bucket_key(exam_id, field), field))
            assert record == one
            assert (record.name, record.ticket_no, record.subjects) == (person["name"], person["ticket_no"],
                                                                        ("101", "102"))
    first, second = [records.decode(await pg.fetchval(records.ONE_BY_TICKET_SQL, exam_id, p["ticket_no"]))
                     for p in people[:2]]
    assert first.scores == {} and second.scores == {"101": "80", "102": "72.5"}
    await _refresh(client)
    resp = await client.post(SCORES, json={"exam_id": exam_id, "name": people[3]["name"],
                                           "id_number": people[3]["id_number"]})
    assert resp.status == 200
    assert client.app[keys.LOOKUPS].pg_queries == 0  # served from Redis
    assert await prewarm.drop(redis, exam_id) > 0


async def test_two_hundred_lookups_of_one_cold_key_ask_postgresql_once(client: TestClient,
                                                                       pg: asyncpg.Connection) -> None:
    exam_id, people = await make_results(pg, 1)
    await _refresh(client)
    person = people[0]
    body = {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}
    answers = await asyncio.gather(*(client.post(SCORES, json=body) for _ in range(200)))
    assert [a.status for a in answers] == [200] * 200
    assert client.app[keys.LOOKUPS].pg_queries == 1


async def test_the_ticket_pdf_behind_its_signed_link(client: TestClient, pg: asyncpg.Connection,
                                                     tmp_path: Path) -> None:
    import shutil
    import subprocess
    import time

    from lookups import links

    exam_id, people = await make_results(pg, 1)
    await _refresh(client)
    person = people[0]
    resp = await client.post(TICKETS, json={"exam_id": exam_id, "name": person["name"],
                                            "id_number": person["id_number"]})
    url = (await resp.json())["pdf_url"]
    pdf = await client.get(url)
    assert pdf.status == 200 and pdf.content_type == "application/pdf", await pdf.text()
    again = await client.get(url)
    content = await pdf.read()
    assert await again.read() == content  # rendered once, then served from the cache
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (scripts/system-deps.sh installs it)")
    path = tmp_path / "ticket.pdf"
    path.write_bytes(content)
    converted = await asyncio.to_thread(
        subprocess.run, ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    text = converted.stdout
    assert person["name"] in text and person["ticket_no"] in text

    tampered = url.replace("sig=", "sig=A")
    key = client.app[keys.TICKET_PDF_KEY]
    expired = links.sign_link(key, person["ticket_no"], exam_id=exam_id, ttl_s=10, now=time.time() - 60)
    other = url.replace(person["ticket_no"], person["ticket_no"][:-1] + "9")
    answers = [await client.get(u) for u in (tampered, expired, other)]
    assert [a.status for a in answers] == [403, 403, 403]
    assert {(await a.json())["error"]["code"] for a in answers} == {"link_invalid"}


async def test_throttle_captcha_and_record_read_leave_in_one_batch(client: TestClient, pg: asyncpg.Connection,
                                                                   redis: aioredis.Redis) -> None:
    import secrets

    from captcha import keys as captcha_keys

    exam_id, people = await make_results(pg, 1)
    await _refresh(client)
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={
        "captcha": {"routes": {"scores.lookup": "image"}},
        "ratelimit": {"rules": [{"id": "lookup-ip", "routes": ["scores.lookup"], "key": "ip", "rate": 2,
                                 "period_s": 3600, "burst": 2, "mode": "enforce", "on_redis_error": "open"}]}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    person = people[0]
    body = {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}
    await prewarm.prewarm(client.app[keys.PG], redis, exam_id)  # the record is read from Redis
    pipelines = (client.app[keys.REDIS], client.app[keys.LIMITER].client)  # the limiter has its own connection

    async def lookup() -> tuple[int, dict[str, Any], list[tuple[int, int]]]:
        image_id = secrets.token_urlsafe(16)
        await redis.set(captcha_keys.answer_key(image_id), "12345", ex=60)
        before = [(p.batches_sent, p.commands_sent) for p in pipelines]
        resp = await client.post(SCORES, json={**body, "captcha": {"kind": "image", "id": image_id, "answer": "12345"}})
        sent = [(p.batches_sent - b, p.commands_sent - c) for p, (b, c) in zip(pipelines, before, strict=True)]
        return resp.status, await resp.json(), sent

    for _ in range(2):
        status, answer, sent = await lookup()
        assert status == 200, answer
        # GETDEL of the captcha answer and HGET of the record in one batch; the GCRA script beside it
        assert sent == [(1, 2), (1, 1)]
    status, answer, sent = await lookup()
    assert status == 429 and answer["error"]["code"] == "too_many_requests"
    assert sent == [(1, 2), (1, 1)]


async def test_the_naive_postgresql_lookup_answers_like_the_real_one(aiohttp_client: Any, pg_dsn: str, redis_url: str,
                                                                      pg: asyncpg.Connection, tmp_path: Path,
                                                                      client: TestClient) -> None:
    """The benchmarks' baseline (``/_bench/scores-lookup-pg``) must answer what the real route does."""
    exam_id, people = await make_results(pg, 2)
    await _refresh(client)
    bench = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path, EXAMGATE_BENCH_ROUTES="true")))
    for person in people:
        body = {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}
        real, naive = await client.post(SCORES, json=body), await bench.post("/_bench/scores-lookup-pg", json=body)
        assert real.status == naive.status == 200, await naive.text()
        assert await real.json() == await naive.json()
    wrong = await bench.post("/_bench/scores-lookup-pg", json={"exam_id": exam_id, "name": "李四",
                                                               "id_number": people[0]["id_number"]})
    assert wrong.status == 404


STORED_ID, STORED_NAME = "11010519491231002X", "阿依古丽·买买提"
# How candidates type what registration stored: each must find the record (the one normalisation, core.identity).
ID_SPELLINGS = ["11010519491231002x", "１１０１０５１９４９１２３１００２Ｘ", "１１０１０５１９４９１２３１００２ｘ",
                "  11010519491231002X  ", "\t11010519491231002x "]
NAME_SPELLINGS = ["阿依古丽•买买提", "阿依古丽・买买提", "阿依古丽‧买买提", " 阿依古丽·买买提 "]


@pytest.mark.parametrize("path", [SCORES, TICKETS])
async def test_lookups_find_the_record_however_the_id_and_name_are_typed(
        client: TestClient, pg: asyncpg.Connection, path: str) -> None:
    exam_id, _ = await make_results(pg, 1)
    # the other path's candidate keeps its record under another id number
    await pg.execute("UPDATE candidates SET id_number = 'P' || lpad(id::text, 9, '0') WHERE id_number = $1", STORED_ID)
    await pg.execute("UPDATE candidates SET id_number = $1, name = $2 WHERE id = "
                     "(SELECT candidate_id FROM registrations WHERE exam_id = $3)", STORED_ID, STORED_NAME, exam_id)
    await _refresh(client)
    for id_number in ID_SPELLINGS:
        resp = await client.post(path, json={"exam_id": exam_id, "name": STORED_NAME, "id_number": id_number})
        assert resp.status == 200, (id_number, await resp.text())
        assert (await resp.json())["name"] == STORED_NAME
    for name in NAME_SPELLINGS:
        resp = await client.post(path, json={"exam_id": exam_id, "name": name, "id_number": STORED_ID.lower()})
        assert resp.status == 200, (name, await resp.text())
    wrong = await client.post(path, json={"exam_id": exam_id, "name": "阿依古丽买买提", "id_number": STORED_ID})
    assert wrong.status == 404  # the dot is part of the name: dropping it is another name
