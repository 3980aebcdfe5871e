"""The registration form over HTTP, in-process on real PostgreSQL and Redis: link, PDF, cache, code check."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from core import photos
from gateway import keys
from gateway.app import create_app
from gateway.routes import forms as form_routes
from lookups import form_pdf, forms
from tests import photo_images
from tests.factories import make_exam
from tests.gateway import candidate_http as h
from tests.gateway.photo_rows import current_jpeg, give_photo
from tests.gateway.seat_stack import ENROLMENT, bearer, make_candidates, make_registrations, make_sessions
from tests.gateway.test_app import assert_error_shape
from tests.lookups.test_pdf import embedded_images, pdftotext

CODE = re.compile(r"验证码：([0-9]+-[0-9]+-[0-9A-Z]{8})")


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    # no captcha on the photo upload and no throttles: what is tested here is the form
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={
        "captcha": {"routes": {"photos.put": "off"}}, "ratelimit": {"rules": []}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    try:
        yield client
    finally:
        await redis.flushdb()  # the relaxed live config must not outlive these tests


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the forms rendered (each one's registration id)."""
    made: list[int] = []
    real = form_pdf.render_form

    def counted(form: form_pdf.FormDoc, **kwargs: Any) -> bytes:
        made.append(form.registration_id)
        return real(form, **kwargs)

    monkeypatch.setattr(form_pdf, "render_form", counted)
    return made


async def exam(client: TestClient, pg: asyncpg.Connection) -> int:
    exam_id = await make_exam(pg)
    await client.app[keys.CATALOGUE].refresh()
    return exam_id


async def candidate(pg: asyncpg.Connection, redis_url: str) -> tuple[int, dict[str, str]]:
    """A candidate with one education record; (id, their session's headers)."""
    [candidate_id] = await make_candidates(pg, 1, photo=False)
    await pg.execute("""INSERT INTO educations (candidate_id, cert_no, school, graduated_on, major, level, mode)
                        VALUES ($1, '10001120120600123', '北京大学', '2012-06-30', '经济学', 'bachelor',
                                'full_time')""", candidate_id)
    [token] = await make_sessions(redis_url, [candidate_id])
    return candidate_id, bearer(token)


async def ok(client: TestClient, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    resp = await client.request(method, path, **kwargs)
    body = await resp.json() if resp.content_type == "application/json" else await resp.read()
    assert resp.status == status, (method, path, resp.status, body)
    return body


async def refused(client: TestClient, path: str, status: int, code: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.get(path, **kwargs)
    body = await resp.json()
    assert resp.status == status, (path, resp.status, body)
    assert_error_shape(body, code)
    return dict(body["error"])


async def test_a_confirmed_registration_prints_its_form(client: TestClient, pg: asyncpg.Connection, redis_url: str,
                                                        renders: list[int], tmp_path: Path) -> None:
    exam_id = await exam(client, pg)
    candidate_id, me = await candidate(pg, redis_url)
    name, id_number = await pg.fetchrow("SELECT name, id_number FROM candidates WHERE id = $1", candidate_id)
    await give_photo(pg, candidate_id, photos.process(photo_images.portrait()))
    made = await ok(client, "POST", "/api/v1/registrations", 201, json={**ENROLMENT, "exam_id": exam_id},
                    headers=me)
    path = f"/api/v1/registrations/{made['registration_id']}"

    draft = await refused(client, f"{path}/form", 409, "form_not_available", headers=me)
    assert draft["details"] == {"status": "draft"}
    confirmed = await ok(client, "POST", f"{path}/confirm", headers=me)
    assert confirmed["status"] == "approved"

    link = await ok(client, "GET", f"{path}/form", headers=me)
    url = link["pdf_url"]
    assert url.startswith(f"{path}/form.pdf?exp=")
    resp = await client.get(url)
    assert resp.status == 200 and resp.content_type == "application/pdf"
    assert resp.headers["Cache-Control"].startswith("private, max-age=")
    data = await resp.read()
    text = pdftotext(data, tmp_path)
    exam_name = client.app[keys.CATALOGUE].exam(exam_id).name
    archive_no = await pg.fetchval("SELECT archive_no FROM archive_numbers WHERE registration_id = $1",
                                   made["registration_id"])  # assigned at this first registration in the family
    for expected in ("报名表", exam_name, name, id_number, "审核通过", "中级", "金融", "101 经济基础知识", "测试市",
                     "5年", "北京大学", "经济学", "全日制", archive_no, "不适用",
                     f"报名序号：{made['registration_id']}"):
        assert expected in text, expected
    stored = await current_jpeg(pg, candidate_id)
    [(width, height, _, embedded)] = embedded_images(data, tmp_path)
    assert (width, height) == (295, 413) and embedded == stored
    assert renders == [made["registration_id"]]

    # The operators' check of the printed code: the registration as it is now.
    [code] = CODE.findall(text)[:1]
    checked = await ok(client, "GET", f"/admin/api/v1/registration-forms/{code.lower()}", headers=h.admin())
    version = await pg.fetchval("SELECT version FROM registrations WHERE id = $1", made["registration_id"])
    assert checked["registration_id"] == made["registration_id"] and checked["code"] == code
    assert (checked["version"], checked["current_version"], checked["superseded"]) == (version, version, False)
    assert checked["status"] == "approved" and checked["form_available"] is True
    assert checked["candidate"]["name"] == name and checked["candidate"]["id_number"] != id_number
    assert checked["exam"] == {"id": exam_id, "name": exam_name}
    assert checked["photo"]["sha256"] == photos.process(photo_images.portrait()).sha256
    photo = await client.get(checked["photo"]["url"])
    assert photo.status == 200 and await photo.read() == stored

    # Withdrawn to a draft: no form now, and the printed one is superseded.
    await ok(client, "POST", f"{path}/withdraw", headers=me)
    await refused(client, f"{path}/form", 409, "form_not_available", headers=me)
    await refused(client, url, 409, "form_not_available")  # a link given before answers the same
    later = await ok(client, "GET", f"/admin/api/v1/registration-forms/{code}", headers=h.admin())
    assert later["superseded"] is True and later["current_version"] > later["version"]
    assert later["status"] == "draft" and later["form_available"] is False


async def test_links_are_checked_and_registrations_are_the_candidates_own(
        client: TestClient, pg: asyncpg.Connection, redis_url: str) -> None:
    exam_id = await exam(client, pg)
    alice, alice_headers = await candidate(pg, redis_url)
    bob, _ = await candidate(pg, redis_url)
    for someone in (alice, bob):
        await give_photo(pg, someone, photos.process(photo_images.portrait()))
    mine, theirs = await make_registrations(pg, exam_id, [alice, bob])
    url = (await ok(client, "GET", f"/api/v1/registrations/{mine}/form", headers=alice_headers))["pdf_url"]

    # Someone else's registration is not there at all, nor one that does not exist.
    for other in (theirs, 999_999_999, "abc"):
        await refused(client, f"/api/v1/registrations/{other}/form", 404, "registration_not_found",
                      headers=alice_headers)
    await refused(client, f"/api/v1/registrations/{mine}/form", 401, "unauthorized")

    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    expired = forms.sign_form_link(client.app[form_routes.LINK_KEY], mine, ttl_s=10, now=time.time() - 60)
    for bad in (url.replace("sig=", "sig=A"),
                f"/api/v1/registrations/{mine}/form.pdf?exp={int(query['exp']) + 1}&sig={query['sig']}",
                f"/api/v1/registrations/{theirs}/form.pdf?exp={query['exp']}&sig={query['sig']}",  # foreign
                f"/api/v1/registrations/{mine}/form.pdf?exp={query['exp']}",
                expired):
        await refused(client, bad, 403, "link_invalid")
    assert (await client.get(url)).status == 200


async def test_no_photo_no_form(client: TestClient, pg: asyncpg.Connection, redis_url: str) -> None:
    exam_id = await exam(client, pg)
    candidate_id, me = await candidate(pg, redis_url)
    [registration] = await make_registrations(pg, exam_id, [candidate_id], status="under_review")

    error = await refused(client, f"/api/v1/registrations/{registration}/form", 409, "photo_required", headers=me)
    assert error["details"] == {"photo_status": None}
    await give_photo(pg, candidate_id, photos.process(photo_images.portrait()))
    await ok(client, "GET", f"/api/v1/registrations/{registration}/form", headers=me)
    for status in ("cancelled", "expired", "rejected"):
        await pg.execute("UPDATE registrations SET status = $2 WHERE id = $1", registration, status)
        error = await refused(client, f"/api/v1/registrations/{registration}/form", 409, "form_not_available",
                              headers=me)
        assert error["details"] == {"status": status}


async def test_rendered_once_per_content(client: TestClient, pg: asyncpg.Connection, redis_url: str,
                                         redis: aioredis.Redis, renders: list[int], tmp_path: Path) -> None:
    exam_id = await exam(client, pg)
    candidate_id, me = await candidate(pg, redis_url)
    await give_photo(pg, candidate_id, photos.process(photo_images.portrait()))
    [registration] = await make_registrations(pg, exam_id, [candidate_id])
    form = f"/api/v1/registrations/{registration}/form"

    url = (await ok(client, "GET", form, headers=me))["pdf_url"]
    first = await ok(client, "GET", url)
    assert await ok(client, "GET", url) == first
    again = (await ok(client, "GET", form, headers=me))["pdf_url"]  # another link, the same content
    assert await ok(client, "GET", again) == first
    assert renders == [registration]
    cached = [key async for key in redis.scan_iter(match="eg:form:pdf:*")]
    assert len(cached) == 1 and 0 < await redis.ttl(cached[0]) <= form_routes.PDF_CACHE_TTL_S

    # A new photo is a new PDF, with the new photo in it.
    new_photo = photos.process(photo_images.portrait(background=(215, 230, 245)))
    await give_photo(pg, candidate_id, new_photo)
    second = await ok(client, "GET", url)
    assert second != first and len(renders) == 2
    [(_, _, _, embedded)] = embedded_images(second, tmp_path)
    assert embedded == new_photo.jpeg
    assert await ok(client, "GET", url) == second and len(renders) == 2

    # So is a changed registration (its status printed), and the code printed with its version.
    await pg.execute("UPDATE registrations SET status = 'under_review', version = version + 1 WHERE id = $1",
                     registration)
    third = await ok(client, "GET", url)
    assert third not in (first, second) and len(renders) == 3
    text = pdftotext(third, tmp_path)
    assert "网上审核中" in text
    [code] = CODE.findall(text)[:1]
    assert code.startswith(f"{registration}-2-")
    assert len([key async for key in redis.scan_iter(match="eg:form:pdf:*")]) == 3


async def test_the_code_check_refuses_what_it_did_not_issue(client: TestClient, pg: asyncpg.Connection,
                                                            redis_url: str) -> None:
    exam_id = await exam(client, pg)
    candidate_id, _ = await candidate(pg, redis_url)
    [registration] = await make_registrations(pg, exam_id, [candidate_id])
    code = forms.form_code(client.app[form_routes.CODE_KEY], registration, 1)
    checks = "/admin/api/v1/registration-forms/"

    assert (await ok(client, "GET", checks + code, headers=h.admin()))["photo"] is None
    registration_part, version, mac = code.split("-")
    forged = [f"{registration_part}-{version}-{'A' * 8 if mac != 'A' * 8 else 'B' * 8}", f"{registration + 1}-1-{mac}",
              "not-a-code", "1-1-ABCDEFGH"]
    for bad in forged:
        await refused(client, checks + bad, 404, "form_not_found", headers=h.admin())
    await refused(client, checks + code, 401, "unauthorized")

    # A reviewer of another province does not see it; one of its own province does.
    for name, province in (("sd-forms", "37"), ("bj-forms", "11")):
        await ok(client, "POST", "/admin/api/v1/operators", 201, headers=h.admin(),
                 json={"name": name, "role": "reviewer", "provinces": [province]})
    tokens = {}
    for name in ("sd-forms", "bj-forms"):
        issued = await ok(client, "POST", f"/admin/api/v1/operators/{name}/tokens", 201, headers=h.admin())
        tokens[name] = bearer(issued["token"])
    await refused(client, checks + code, 404, "form_not_found", headers=tokens["sd-forms"])
    assert (await ok(client, "GET", checks + code, headers=tokens["bj-forms"]))["registration_id"] == registration
