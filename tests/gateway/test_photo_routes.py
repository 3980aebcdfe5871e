"""Photo upload over HTTP against a running gateway (2 processes) and worker: checks, limits, storage, links."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from PIL import Image

from loadtest.processes import Process
from tests import photo_images
from tests.conftest import TEST_REDIS_URL
from tests.gateway.seat_stack import bearer, make_candidates, make_sessions, running_stack, set_live
from tests.gateway.test_app import assert_error_shape
from tests.gateway.test_captcha_routes import solve

PHOTO = "/api/v1/me/photo"
CHANGES = "/api/v1/me/photo/change-requests"
GREY_BACKGROUND = (160, 160, 160)  # light enough to accept, not enough to approve: an operator looks
GREY = photo_images.portrait(background=GREY_BACKGROUND)


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    with running_stack(pg_dsn, TEST_REDIS_URL) as (gateway, _worker):
        yield gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def candidate(pg: asyncpg.Connection) -> tuple[int, str]:
    [candidate_id] = await make_candidates(pg, 1, photo=False)
    [token] = await make_sessions(TEST_REDIS_URL, [candidate_id])
    return candidate_id, token


async def upload(http: aiohttp.ClientSession, gateway: Process, token: str, data: bytes,
                 content_type: str = "image/jpeg", captcha: str | None = None) -> tuple[int, Any]:
    headers = bearer(token, **{"Content-Type": content_type})
    if captcha is not None:
        headers["X-Captcha"] = captcha
    async with http.put(gateway.url + PHOTO, data=io.BytesIO(data), headers=headers) as resp:
        return resp.status, await resp.json()


async def call(http: aiohttp.ClientSession, gateway: Process, method: str, path: str, token: str,
               body: Any = None) -> tuple[int, Any]:
    async with http.request(method, gateway.url + path, json=body, headers=bearer(token)) as resp:
        return resp.status, await resp.json()


async def me(http: aiohttp.ClientSession, gateway: Process, token: str) -> Any:
    status, body = await call(http, gateway, "GET", PHOTO, token)
    assert status == 200, body
    return body


async def refused(http: aiohttp.ClientSession, gateway: Process, token: str, data: bytes, problems: list[str]) -> None:
    status, body = await upload(http, gateway, token, data)
    assert status == 422, body
    assert_error_shape(body, "photo_rejected")
    assert body["error"]["details"]["problems"] == problems
    assert len(body["error"]["details"]["messages"]) == len(problems)


async def test_good_photo_is_approved_stored_and_served(http: aiohttp.ClientSession, gateway: Process,
                                                        pg: asyncpg.Connection, candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    status, body = await upload(http, gateway, token, photo_images.portrait(exif=True))
    assert status == 201, body
    assert body["status"] == "approved" and (body["width"], body["height"]) == (295, 413)
    assert 0 < body["bytes"] <= 12 * 1024
    row = await pg.fetchrow("SELECT * FROM photos JOIN photo_blobs USING (sha256) WHERE id = $1", body["photo_id"])
    assert row["candidate_id"] == candidate_id and row["current"] and row["locked"]  # approved: locked
    assert row["problems"] == [] and len(row["jpeg"]) == body["bytes"]
    image = Image.open(io.BytesIO(row["jpeg"]))
    assert image.size == (295, 413) and not image.getexif()

    async with http.get(gateway.url + PHOTO, headers=bearer(token)) as resp:
        current = await resp.json()
        assert resp.status == 200, current
        assert resp.headers["Cache-Control"] == "no-store"
    assert current["photo_id"] == body["photo_id"] and current["status"] == "approved" and current["uploaded_at"]
    async with http.get(gateway.url + current["url"]) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert await resp.read() == row["jpeg"]
        assert resp.headers["ETag"] == f'"{row["sha256"]}"'
        assert resp.headers["Cache-Control"].startswith("private, max-age=")
        etag = resp.headers["ETag"]
    async with http.get(gateway.url + current["url"], headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304

    link = urlsplit(current["url"])
    query = dict(part.split("=", 1) for part in link.query.split("&"))
    tampered = [f"{link.path}?exp={query['exp']}&sig={'A' * 43}",
                f"{link.path}?exp={int(query['exp']) + 1}&sig={query['sig']}",
                f"/api/v1/photos/{body['photo_id'] + 1}.jpg?{link.query}",
                f"{link.path}?exp={query['exp']}",
                f"{link.path}"]
    for url in tampered:
        async with http.get(gateway.url + url) as resp:
            payload = await resp.json()
            assert resp.status == 403, (url, payload)
            assert_error_shape(payload, "link_invalid")


async def test_camera_photo_is_normalised(http: aiohttp.ClientSession, gateway: Process, pg: asyncpg.Connection,
                                          candidate: tuple[int, str]) -> None:
    data = photo_images.portrait(4000, 3000)
    assert len(data) > 65_536  # beyond the gateway's usual body limit, within the photo route's
    status, body = await upload(http, gateway, candidate[1], data)
    assert status == 201, body
    assert body["status"] == "needs_review" and (body["width"], body["height"]) == (295, 413)
    assert body["bytes"] <= 12 * 1024
    row = await pg.fetchrow("SELECT status, problems, jpeg FROM photos JOIN photo_blobs USING (sha256) WHERE id = $1",
                            body["photo_id"])
    assert row["status"] == "needs_review" and row["problems"] == ["aspect"]
    assert Image.open(io.BytesIO(row["jpeg"])).size == (295, 413)


async def test_bad_photos_are_refused_and_nothing_is_stored(http: aiohttp.ClientSession, gateway: Process,
                                                            pg: asyncpg.Connection,
                                                            candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    good = photo_images.portrait()
    await refused(http, gateway, token, photo_images.portrait(fmt="PNG"), ["not_jpeg"])
    await refused(http, gateway, token, photo_images.portrait(background=(40, 40, 50)), ["background"])
    await refused(http, gateway, token, photo_images.blank(), ["blank"])
    await refused(http, gateway, token, good[: len(good) // 2], ["corrupt"])
    await refused(http, gateway, token, photo_images.bomb(), ["too_large_image"])
    await refused(http, gateway, token, photo_images.portrait(200, 280), ["too_small"])
    assert await pg.fetchval("SELECT count(*) FROM photos WHERE candidate_id = $1", candidate_id) == 0
    async with http.get(gateway.url + PHOTO, headers=bearer(token)) as resp:
        assert resp.status == 404
        assert_error_shape(await resp.json(), "photo_not_found")
    # The workers survived the bomb and the broken file: a good photo still goes through.
    status, body = await upload(http, gateway, token, good)
    assert status == 201, body


async def test_wrong_media_type_empty_body_and_no_session(http: aiohttp.ClientSession, gateway: Process,
                                                          candidate: tuple[int, str]) -> None:
    token = candidate[1]
    status, body = await upload(http, gateway, token, photo_images.portrait(), content_type="image/png")
    assert status == 415, body
    assert_error_shape(body, "unsupported_media_type")
    status, body = await upload(http, gateway, token, b"")
    assert status == 400, body
    async with http.put(gateway.url + PHOTO, data=photo_images.portrait(),
                        headers={"Content-Type": "image/jpeg"}) as resp:
        assert resp.status == 401


async def test_ten_megabytes_declared_is_refused_before_reading(gateway: Process,
                                                                candidate: tuple[int, str]) -> None:
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write((f"PUT {PHOTO} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {candidate[1]}\r\n"
                      f"Content-Type: image/jpeg\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n").encode()
                     + b"\xff\xd8\xff tiny")
        await writer.drain()
        # The 10 MB are never sent: an answer at all is one given before reading them.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()
    # A body just over 2 MiB actually sent is refused too.
    async with aiohttp.ClientSession() as http:
        status, body = await upload(http, gateway, candidate[1], b"\xff\xd8\xff" + bytes(2 * 1024 * 1024))
        assert status == 413, body
        assert_error_shape(body, "body_too_large")
        assert body["error"]["details"]["max_bytes"] == 2 * 1024 * 1024

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(48):
                yield bytes(64 * 1024)

        async with http.put(gateway.url + PHOTO, data=chunks(),  # chunked: no Content-Length to refuse early
                            headers=bearer(candidate[1], **{"Content-Type": "image/jpeg"})) as resp:
            body = await resp.json()
            assert resp.status == 413, body
            assert body["error"]["details"]["max_bytes"] == 2 * 1024 * 1024


async def test_a_photo_waiting_for_review_can_be_replaced(http: aiohttp.ClientSession, gateway: Process,
                                                         pg: asyncpg.Connection, candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    first = await upload(http, gateway, token, GREY)
    second = await upload(http, gateway, token, photo_images.portrait(600, 840, background=GREY_BACKGROUND))
    assert first[0] == second[0] == 201 and first[1]["status"] == second[1]["status"] == "needs_review"
    rows = await pg.fetch("SELECT id, current FROM photos WHERE candidate_id = $1 ORDER BY id", candidate_id)
    assert [(r["id"], r["current"]) for r in rows] == [(first[1]["photo_id"], False), (second[1]["photo_id"], True)]
    current = await me(http, gateway, token)
    assert (current["photo_id"], current["locked"], current["problems"]) == (
        second[1]["photo_id"], False, ["background_uneven"])
    # Uploads at once still leave exactly one current photo.
    results = await asyncio.gather(*(upload(http, gateway, token, GREY) for _ in range(4)))
    assert all(status == 201 for status, _ in results), results
    assert await pg.fetchval("SELECT count(*) FROM photos WHERE candidate_id = $1 AND current", candidate_id) == 1


async def test_locked_photo_is_replaced_once_after_a_granted_change_request(
        http: aiohttp.ClientSession, gateway: Process, pg: asyncpg.Connection, candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    status, body = await upload(http, gateway, token, photo_images.portrait())
    assert status == 201 and body["status"] == "approved"
    status, refusal = await upload(http, gateway, token, photo_images.portrait(600, 840))
    assert status == 409, refusal
    assert_error_shape(refusal, "photo_locked")
    assert (await me(http, gateway, token))["locked"] is True

    status, blank_reason = await call(http, gateway, "POST", CHANGES, token, {"reason": "   "})
    assert status == 422, blank_reason
    status, asked = await call(http, gateway, "POST", CHANGES, token, {"reason": "照片是五年前的"})
    assert status == 202 and asked["status"] == "pending", asked
    status, twice = await call(http, gateway, "POST", CHANGES, token, {"reason": "再申请一次"})
    assert status == 409 and twice["error"]["details"]["status"] == "pending", twice
    assert_error_shape(twice, "change_request_open")
    assert (await me(http, gateway, token))["change_request"]["status"] == "pending"

    ops = gateway.admin_token()
    status, pending = await call(http, gateway, "GET", "/admin/api/v1/photo-change-requests", ops)
    assert status == 200 and asked["request_id"] in [r["request_id"] for r in pending["requests"]], pending
    grant = f"/admin/api/v1/photo-change-requests/{asked['request_id']}/grant"
    status, granted = await call(http, gateway, "POST", grant, ops)
    assert status == 200 and granted["status"] == "granted", granted
    status, again = await call(http, gateway, "POST", grant, ops)
    assert status == 409, again
    assert_error_shape(again, "already_decided")

    # Two uploads at once after the grant: exactly one succeeds, and the new photo is locked again.
    results = await asyncio.gather(*(upload(http, gateway, token, photo_images.portrait(600, 840)) for _ in range(2)))
    assert sorted(status for status, _ in results) == [201, 409], results
    rows = await pg.fetch("SELECT id, current, locked FROM photos WHERE candidate_id = $1 ORDER BY id", candidate_id)
    assert [(r["current"], r["locked"]) for r in rows] == [(False, True), (True, True)]
    status, _ = await upload(http, gateway, token, photo_images.portrait())
    assert status == 409
    status, history = await call(http, gateway, "GET", f"/admin/api/v1/photos/{rows[-1]['id']}", ops)
    assert status == 200, history
    assert [e["action"] for e in history["history"]] == [
        "upload", "change_request", "change_grant", "upload", "change_used"]


async def test_an_operator_rejects_with_a_reason_then_approves_the_new_photo(
        http: aiohttp.ClientSession, gateway: Process, candidate: tuple[int, str]) -> None:
    _, token = candidate
    ops = gateway.admin_token()
    status, flagged = await upload(http, gateway, token, GREY)
    assert status == 201 and flagged["status"] == "needs_review"
    status, queue = await call(http, gateway, "GET", "/admin/api/v1/photos?status=needs_review&limit=200", ops)
    assert status == 200, queue
    [item] = [p for p in queue["photos"] if p["photo_id"] == flagged["photo_id"]]
    assert item["problems"] == ["background_uneven"] and item["messages"] and item["id_number"].count("*")
    async with http.get(gateway.url + item["url"]) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
    review = f"/admin/api/v1/photos/{flagged['photo_id']}/review"
    status, missing = await call(http, gateway, "POST", review, ops, {"decision": "reject"})
    assert status == 422, missing
    status, rejected = await call(http, gateway, "POST", review, ops, {"decision": "reject", "reason": "background"})
    assert status == 200 and rejected["status"] == "rejected", rejected
    current = await me(http, gateway, token)
    assert (current["status"], current["reviewed"], current["review_reason"]) == (
        "rejected", True, "背景不是浅色纯色背景")
    status, decided = await call(http, gateway, "POST", review, ops, {"decision": "approve"})
    assert status == 409, decided
    assert_error_shape(decided, "already_reviewed")

    status, again = await upload(http, gateway, token, GREY)
    assert status == 201, again
    status, approved = await call(http, gateway, "POST", f"/admin/api/v1/photos/{again['photo_id']}/review", ops,
                                  {"decision": "approve"})
    assert status == 200 and (approved["status"], approved["locked"]) == ("approved", True), approved
    status, locked = await upload(http, gateway, token, GREY)
    assert status == 409
    assert_error_shape(locked, "photo_locked")


async def test_captcha_travels_in_the_header_when_live_config_asks(http: aiohttp.ClientSession, gateway: Process,
                                                                   candidate: tuple[int, str]) -> None:
    token = candidate[1]
    await set_live(gateway, {"captcha": {"routes": {"photos.put": "pow"}, "pow_maxnumber": 5000}})
    try:
        status, body = await upload(http, gateway, token, photo_images.portrait())
        assert status == 400, body
        assert_error_shape(body, "captcha_invalid")
        status, body = await upload(http, gateway, token, photo_images.portrait(), captcha="not json")
        assert status == 400, body
        async with http.get(gateway.url + "/api/v1/captcha/pow") as resp:
            challenge = await resp.json()
        proof = json.dumps({"kind": "pow", "payload": await asyncio.to_thread(solve, challenge)})
        status, body = await upload(http, gateway, token, photo_images.portrait(), captcha=proof)
        assert status == 201, body
        status, body = await upload(http, gateway, token, photo_images.portrait(), captcha=proof)
        assert status == 400, body  # spent
        assert_error_shape(body, "captcha_invalid")
    finally:
        await set_live(gateway, {"captcha": {"routes": {"photos.put": "off"}}})
