"""The admission ticket PDF prints the candidate's photo, cached under what it prints: in-process, real stores."""

from __future__ import annotations

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
from lookups import pdf, prewarm
from seed.photos import demo_photo
from tests import photo_images
from tests.gateway import candidate_http as h
from tests.gateway.photo_rows import give_photo
from tests.gateway.test_lookup_routes import TICKETS, make_results
from tests.lookups.test_pdf import embedded_images, pdftotext


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={
        "captcha": {"routes": {"tickets.lookup": "off"}}, "ratelimit": {"rules": []}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    try:
        yield client
    finally:
        await redis.flushdb()  # the relaxed live config must not outlive these tests


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the tickets rendered (each one's number)."""
    made: list[str] = []
    real = pdf.render_ticket

    def counted(ticket: pdf.TicketDoc, **kwargs: Any) -> bytes:
        made.append(ticket.ticket_no)
        return real(ticket, **kwargs)

    monkeypatch.setattr(pdf, "render_ticket", counted)
    return made


async def ticket_link(client: TestClient, pg: asyncpg.Connection) -> tuple[int, int, str, str]:
    """An exam in its print window with one ticketed candidate: (exam, candidate, ticket number, PDF link)."""
    exam_id, [person] = await make_results(pg, 1)
    await client.app[keys.CATALOGUE].refresh()
    resp = await client.post(TICKETS, json={"exam_id": exam_id, "name": person["name"],
                                            "id_number": person["id_number"]})
    assert resp.status == 200, await resp.text()
    candidate = await pg.fetchval("SELECT r.candidate_id FROM admission_tickets t JOIN registrations r "
                                  "ON r.id = t.registration_id WHERE t.ticket_no = $1", person["ticket_no"])
    return exam_id, candidate, person["ticket_no"], (await resp.json())["pdf_url"]


async def fetch(client: TestClient, url: str) -> bytes:
    resp = await client.get(url)
    assert resp.status == 200 and resp.content_type == "application/pdf", await resp.text()
    return await resp.read()


async def test_the_ticket_prints_the_photo_and_is_rendered_once(
        client: TestClient, pg: asyncpg.Connection, redis: aioredis.Redis, renders: list[str],
        tmp_path: Path) -> None:
    exam_id, candidate, ticket_no, url = await ticket_link(client, pg)

    first = await fetch(client, url)
    [(width, height, encoding, embedded)] = embedded_images(first, tmp_path)
    assert (width, height, encoding) == (295, 413, "jpeg") and embedded == demo_photo().jpeg
    assert "照片" not in pdftotext(first, tmp_path)
    assert await fetch(client, url) == first
    assert renders == [ticket_no]
    assert len([key async for key in redis.scan_iter(match="eg:lk:pdf:*")]) == 1

    # A new photo reaches the ticket with its record: the record names the photo it was written with.
    new_photo = photos.process(photo_images.portrait(background=(215, 230, 245)))
    await give_photo(pg, candidate, new_photo)
    assert await fetch(client, url) == first and renders == [ticket_no]
    await prewarm.prewarm(client.app[keys.PG], client.app[keys.REDIS_PY], exam_id)
    second = await fetch(client, url)
    assert second != first and renders == [ticket_no, ticket_no]
    [(_, _, _, embedded)] = embedded_images(second, tmp_path)
    assert embedded == new_photo.jpeg
    assert await fetch(client, url) == second and len(renders) == 2


async def test_without_a_photo_the_ticket_keeps_the_box(client: TestClient, pg: asyncpg.Connection,
                                                        tmp_path: Path) -> None:
    exam_id, candidate, _, url = await ticket_link(client, pg)
    await pg.execute("UPDATE photos SET current = false WHERE candidate_id = $1", candidate)
    await prewarm.prewarm(client.app[keys.PG], client.app[keys.REDIS_PY], exam_id)

    data = await fetch(client, url)
    assert embedded_images(data, tmp_path) == []
    assert "照片" in pdftotext(data, tmp_path)
