"""Kind ``exams`` over the admin API: NDJSON applied and listed by GET /api/v1/exams, CSV 415, bad lines 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.app import create_app
from tests.gateway.test_app import assert_error_shape, make_settings
from tests.imports.catalogue_data import batch, exam_line, ndjson, new_code

ROOT = "root-token-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {ROOT}"}


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis, tmp_path: Path) -> TestClient:
    app = create_app(make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_ADMIN_TOKENS=f"root:{ROOT}"))
    return await aiohttp_client(app)


async def post(client: TestClient, data: bytes, content_type: str) -> tuple[int, Any]:
    resp = await client.post("/admin/api/v1/imports/exams", data=data,
                             headers={**AUTH, "Content-Type": content_type, "Idempotency-Key": batch()})
    return resp.status, await resp.json()


async def test_an_imported_exam_is_listed(client: TestClient) -> None:
    code = new_code("HTTP")
    status, body = await post(client, ndjson(exam_line(code)), "application/x-ndjson")
    assert status == 200, body
    assert (body["rows"], body["applied"]) == (1, 1)
    await client.app[keys.CATALOGUE].refresh()  # each process does this every EXAMGATE_CATALOGUE_REFRESH_S
    resp = await client.get("/api/v1/exams")
    listed = {e["code"]: e for e in await resp.json()}
    assert listed[code]["fee_per_subject_fen"] == 5600
    assert [lvl["code"] for lvl in listed[code]["levels"]] == ["CJ", "ZJ"]


async def test_csv_is_415_naming_ndjson(client: TestClient) -> None:
    status, body = await post(client, b"code,name\nX,Y\n", "text/csv")
    assert status == 415
    assert_error_shape(body, "unsupported_media_type")
    assert body["error"]["details"]["expected"] == ["application/x-ndjson"]
    assert "application/x-ndjson" in body["error"]["message"]


async def test_bad_lines_are_422_by_line(client: TestClient) -> None:
    broken = exam_line(new_code("HTTP"))
    broken["windows"]["exam_starts_at"] = broken["windows"]["score_release_at"]
    status, body = await post(client, ndjson(exam_line(new_code("HTTP")), broken), "application/x-ndjson")
    assert status == 422
    assert_error_shape(body, "import_rejected")
    (row,) = body["error"]["details"]["rows"]
    assert row["line"] == 2 and "考试开始时间应早于成绩发布时间" in row["reason"]
