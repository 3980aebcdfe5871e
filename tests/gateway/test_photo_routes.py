"""Photo upload over HTTP against a running gateway (2 processes) and worker: checks, limits, storage, links."""

from __future__ import annotations

import asyncio
import io
import json
import time
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
    [candidate_id] = await make_candidates(pg, 1)
    [token] = await make_sessions(TEST_REDIS_URL, [candidate_id])
    return candidate_id, token


async def upload(http: aiohttp.ClientSession, gateway: Process, token: str, data: bytes,
                 content_type: str = "image/jpeg", captcha: str | None = None) -> tuple[int, Any]:
    headers = bearer(token, **{"Content-Type": content_type})
    if captcha is not None:
        headers["X-Captcha"] = captcha
    async with http.put(gateway.url + PHOTO, data=io.BytesIO(data), headers=headers) as resp:
        return resp.status, await resp.json()


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
    row = await pg.fetchrow("SELECT * FROM photos WHERE id = $1", body["photo_id"])
    assert row["candidate_id"] == candidate_id and row["current"] and not row["locked"]
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
    row = await pg.fetchrow("SELECT status, problems, jpeg FROM photos WHERE id = $1", body["photo_id"])
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
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert time.monotonic() - started < 2  # answered at once, not after waiting for 10 MB
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


async def test_second_upload_replaces_the_current_one(http: aiohttp.ClientSession, gateway: Process,
                                                      pg: asyncpg.Connection, candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    first = await upload(http, gateway, token, photo_images.portrait())
    second = await upload(http, gateway, token, photo_images.portrait(600, 840))
    assert first[0] == second[0] == 201
    rows = await pg.fetch("SELECT id, current FROM photos WHERE candidate_id = $1 ORDER BY id", candidate_id)
    assert [(r["id"], r["current"]) for r in rows] == [(first[1]["photo_id"], False), (second[1]["photo_id"], True)]
    async with http.get(gateway.url + PHOTO, headers=bearer(token)) as resp:
        assert (await resp.json())["photo_id"] == second[1]["photo_id"]
    # Uploads at once still leave exactly one current photo.
    results = await asyncio.gather(*(upload(http, gateway, token, photo_images.portrait()) for _ in range(4)))
    assert all(status == 201 for status, _ in results), results
    assert await pg.fetchval("SELECT count(*) FROM photos WHERE candidate_id = $1 AND current", candidate_id) == 1


async def test_locked_photo_is_not_replaced(http: aiohttp.ClientSession, gateway: Process, pg: asyncpg.Connection,
                                            candidate: tuple[int, str]) -> None:
    candidate_id, token = candidate
    status, body = await upload(http, gateway, token, photo_images.portrait())
    assert status == 201
    await pg.execute("UPDATE photos SET locked = true WHERE id = $1", body["photo_id"])
    status, refusal = await upload(http, gateway, token, photo_images.portrait(600, 840))
    assert status == 409, refusal
    assert_error_shape(refusal, "photo_locked")
    rows = await pg.fetch("SELECT id FROM photos WHERE candidate_id = $1", candidate_id)
    assert [r["id"] for r in rows] == [body["photo_id"]]


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
