"""Pass marks and rolling validity over HTTP: the public pass marks (ETag, empty before publication, 404), the
合格标准 page, an old candidate's carried subjects at enrolment (shown, refused, expired ones offered again), the
archive number, the score lookup by the level's pass mark with years, validity and the qualification, and the
admins' family validity route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.app import create_app
from tests.core.validity_data import THIS_YEAR, family_code, make_candidate, make_family_exam, set_validity, sit
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import make_sessions

SCORES = "/api/v1/scores/lookup"


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    await redis.flushdb()
    client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={
        "captcha": {"routes": {"scores.lookup": "off"}}, "ratelimit": {"rules": []}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    try:
        yield client
    finally:
        await redis.flushdb()


async def _signed_in(redis_url: str, candidate: int) -> dict[str, str]:
    [token] = await make_sessions(redis_url, [candidate])
    return {"Authorization": f"Bearer {token}"}


def _enrolment(exam_id: int, subjects: list[str]) -> dict[str, Any]:
    return {"exam_id": exam_id, "province": "11", "city": "测试市", "level": "mid", "specialty": "fin",
            "subjects": subjects, "work_years": 5}


async def test_pass_marks_are_public_cacheable_and_empty_before_publication(client: TestClient,
                                                                           pg: asyncpg.Connection) -> None:
    exam_id = await make_family_exam(pg, family_code(), THIS_YEAR)
    await client.app[keys.CATALOGUE].refresh()
    path = f"/api/v1/exams/{exam_id}/pass-marks"
    before = await client.get(path)
    assert before.status == 200 and await before.json() == []
    assert before.headers["Cache-Control"].startswith("public")

    await pg.execute("INSERT INTO pass_marks (exam_id, level_code, subject_code, pass_mark) "
                     "VALUES ($1, 'mid', '102', 66), ($1, 'mid', '101', 63.5)", exam_id)
    await client.app[keys.CATALOGUE].refresh()
    after = await client.get(path)
    assert after.status == 200 and after.headers["ETag"] != before.headers["ETag"]
    rows = await after.json()
    assert [(r["level"], r["level_name"], r["subject"], r["subject_name"], r["pass_mark"], r["full_mark"])
            for r in rows] == [("mid", "中级", "101", "经济基础知识", 63.5, 100.0),
                               ("mid", "中级", "102", "金融专业知识和实务", 66.0, 100.0)]
    again = await client.get(path, headers={"If-None-Match": after.headers["ETag"]})
    assert again.status == 304 and again.headers["ETag"] == after.headers["ETag"]

    for wrong in ("999999999", "abc"):
        missing = await client.get(f"/api/v1/exams/{wrong}/pass-marks")
        assert missing.status == 404 and (await missing.json())["error"]["code"] == "exam_not_found"
    exams = await (await client.get("/api/v1/exams")).json()
    [summary] = [e for e in exams if e["id"] == exam_id]
    assert (summary["year"], summary["validity_years"]) == (THIS_YEAR, 1)


async def test_the_pass_marks_page_is_served(client: TestClient) -> None:
    page = await client.get("/pass-marks")
    assert page.status == 200 and "合格标准" in await page.text()


async def test_an_old_candidate_sees_carried_subjects_cannot_retake_them_and_qualifies(
        client: TestClient, pg: asyncpg.Connection, redis_url: str) -> None:
    family = family_code()
    await set_validity(pg, family, 2)
    last = await make_family_exam(pg, family, THIS_YEAR - 1)
    this = await make_family_exam(pg, family, THIS_YEAR)
    candidate = await make_candidate(pg)
    await sit(pg, candidate, last, {"101": 75, "102": 61, "103": 40, "104": 59})
    archive_no = await pg.fetchval("SELECT archive_no FROM archive_numbers WHERE candidate_id = $1", candidate)
    assert archive_no is None  # sat last year before the archive: written straight to the table here
    await client.app[keys.CATALOGUE].refresh()
    auth = await _signed_in(redis_url, candidate)

    mine = await client.get(f"/api/v1/exams/{this}/my-valid-subjects", headers=auth)
    assert mine.status == 200, await mine.text()
    body = await mine.json()
    assert [(s["code"], s["name"], s["year"], s["valid_until"]) for s in body["subjects"]] == [
        ("101", "经济基础知识", THIS_YEAR - 1, THIS_YEAR), ("102", "金融专业知识和实务", THIS_YEAR - 1, THIS_YEAR)]
    assert body["qualified"] is False and body["archive_no"] is None and body["validity_years"] == 2

    refused = await client.post("/api/v1/registrations", headers=auth, json=_enrolment(this, ["101", "103", "104"]))
    assert refused.status == 422
    error = (await refused.json())["error"]
    assert error["code"] == "subjects_still_valid" and "经济基础知识" in error["message"]
    assert error["details"]["subjects"] == [{"code": "101", "year": THIS_YEAR - 1, "valid_until": THIS_YEAR}]
    assert await pg.fetchval("SELECT count(*) FROM registrations WHERE candidate_id = $1", candidate) == 1

    made = await client.post("/api/v1/registrations", headers=auth, json=_enrolment(this, ["103", "104"]))
    assert made.status == 201, await made.text()
    registration_id = (await made.json())["registration_id"]
    shown = await (await client.get(f"/api/v1/registrations/{registration_id}", headers=auth)).json()
    assert shown["archive_no"] is not None and shown["archive_no"].startswith(f"{family}{THIS_YEAR}")
    edited = await client.patch(f"/api/v1/registrations/{registration_id}", headers=auth,
                                json={"subjects": ["102", "103"]})
    assert edited.status == 422 and (await edited.json())["error"]["code"] == "subjects_still_valid"

    # This year's scores: the rest passed; the lookup shows each year and validity and the qualification.
    await pg.execute("UPDATE registrations SET status = 'paid', site_id = (SELECT id FROM exam_sites "
                     "WHERE exam_id = $2) WHERE id = $1", registration_id, this)
    await pg.execute("INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no) "
                     "SELECT 'T' || $1::bigint, $1, $2, site_id, 2, 1 FROM registrations WHERE id = $1",
                     registration_id, this)
    await pg.execute("INSERT INTO scores (registration_id, exam_id, subject_code, score) "
                     "VALUES ($1, $2, '103', 64), ($1, $2, '104', 63)", registration_id, this)
    await pg.execute("INSERT INTO pass_marks (exam_id, level_code, subject_code, pass_mark) "
                     "VALUES ($1, 'mid', '104', 63)", this)
    newcomer = await make_candidate(pg)
    await sit(pg, newcomer, this, {"103": 62, "104": 62})  # 104: 62 passes the subject's 60, not the level's 63
    await client.app[keys.CATALOGUE].refresh()
    other = await pg.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", newcomer)
    failed = await (await client.post(SCORES, json={"exam_id": this, "name": other["name"],
                                                    "id_number": other["id_number"]})).json()
    assert [(s["code"], s["pass_mark"], s["passed"], s["year"], s["valid_until"]) for s in failed["subjects"]] == [
        ("103", 60.0, True, THIS_YEAR, THIS_YEAR + 1), ("104", 63.0, False, THIS_YEAR, None)]
    assert failed["passed_all"] is False and failed["qualified"] is False and failed["level"] == "mid"
    assert failed["qualification"] is None

    person = await pg.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", candidate)
    query = {"exam_id": this, "name": person["name"], "id_number": person["id_number"]}
    passed = await client.post(SCORES, json=query)
    assert passed.status == 200, await passed.text()
    answer = await passed.json()
    # The lookup (a peak path) reads only this exam's record: the earlier passes would decide, so it
    # leaves the qualification to the signed-in candidate's own answer.
    assert answer["passed_all"] is True and answer["qualified"] is None
    assert (answer["year"], answer["validity_years"]) == (THIS_YEAR, 2)
    mine = await (await client.get(f"/api/v1/exams/{this}/my-valid-subjects?level=mid", headers=auth)).json()
    assert mine["archive_no"] == shown["archive_no"] and mine["qualified"] is True
    assert [(s["code"], s["year"], s["exam_id"]) for s in mine["qualifications"][0]["subjects"]] == [
        ("101", THIS_YEAR - 1, last), ("102", THIS_YEAR - 1, last), ("103", THIS_YEAR, this), ("104", THIS_YEAR, this)]


async def test_expired_subjects_are_offered_again(client: TestClient, pg: asyncpg.Connection, redis_url: str) -> None:
    family = family_code()
    await set_validity(pg, family, 2)
    old = await make_family_exam(pg, family, THIS_YEAR - 2)
    this = await make_family_exam(pg, family, THIS_YEAR)
    candidate = await make_candidate(pg)
    await sit(pg, candidate, old, {"101": 90, "102": 90})
    await client.app[keys.CATALOGUE].refresh()
    auth = await _signed_in(redis_url, candidate)
    mine = await (await client.get(f"/api/v1/exams/{this}/my-valid-subjects", headers=auth)).json()
    assert mine["subjects"] == []
    made = await client.post("/api/v1/registrations", headers=auth, json=_enrolment(this, ["101", "102"]))
    assert made.status == 201, await made.text()


async def test_admins_set_a_familys_validity(client: TestClient, pg: asyncpg.Connection) -> None:
    family = family_code()
    exam_id = await make_family_exam(pg, family, THIS_YEAR)
    path = f"/admin/api/v1/exam-families/{family}"
    assert (await client.put(path, json={"name": "经济师", "validity_years": 2})).status == 401
    for bad in ({"name": "经济师", "validity_years": 11}, {"name": "经济师", "validity_years": "2"},
                {"name": " ", "validity_years": 2}, {"validity_years": 2}):
        wrong = await client.put(path, headers=h.admin(), json=bad)
        assert wrong.status == 422, (bad, await wrong.text())
    assert await pg.fetchval("SELECT count(*) FROM exam_families WHERE family = $1", family) == 0
    done = await client.put(path, headers=h.admin(), json={"name": "经济师", "validity_years": 2})
    assert done.status == 200, await done.text()
    body = await done.json()
    assert (body["family"], body["name"], body["validity_years"], body["updated_by"]) == (family, "经济师", 2, "ops")
    assert client.app[keys.CATALOGUE].exam(exam_id).validity_years == 2
    changed = await client.put(path, headers=h.admin(), json={"name": "经济师", "validity_years": 3})
    assert (await changed.json())["validity_years"] == 3
    trail = await pg.fetch("SELECT actor, diff FROM config_audit ORDER BY id")
    assert [(r["actor"], r["diff"]) for r in trail][-2:] == [
        ("ops", [{"path": f"exam_families.{family}", "old": None, "new": {"name": "经济师", "validity_years": 2}}]),
        ("ops", [{"path": f"exam_families.{family}", "old": {"name": "经济师", "validity_years": 2},
                  "new": {"name": "经济师", "validity_years": 3}}])]
    assert (await client.put("/admin/api/v1/exam-families/bad%20name", headers=h.admin(),
                             json={"name": "x", "validity_years": 1})).status == 404
    listed = await (await client.get("/admin/api/v1/exam-families", headers=h.admin())).json()
    [mine] = [f for f in listed if f["family"] == family]
    assert (mine["validity_years"], mine["stored"], mine["exam_ids"]) == (3, True, [exam_id])
    alone = await make_family_exam(pg, family_code(), THIS_YEAR)  # then without a family: one of its own
    code = await pg.fetchval("UPDATE exams SET family = NULL WHERE id = $1 RETURNING code", alone)
    listed = await (await client.get("/admin/api/v1/exam-families", headers=h.admin())).json()
    assert [(f["validity_years"], f["stored"], f["exam_ids"]) for f in listed if f["family"] == code] == [
        (1, False, [alone])]
