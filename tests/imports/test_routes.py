"""The imports admin API over HTTP (the gateway in-process): 200, 422 with every bad row, 409, 415, 404, 413,
the batch id header, roles, the dry run, the list of batches; and ``examgate ctl import`` against it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from benchmarks.import_data import ScoredExam, id_number, score_csv, ticket_no
from examgate.ctl import ctl
from gateway.app import create_app
from tests.gateway.test_app import assert_error_shape, make_settings

ROOT = "root-token-0123456789abcdefghij"
IMPORTS = "/admin/api/v1/imports"
CSV = {"Content-Type": "text/csv"}


def auth(token: str = ROOT, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture
def app(pg_dsn: str, redis_url: str, redis: aioredis.Redis, tmp_path: Path) -> Any:
    return create_app(make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_ADMIN_TOKENS=f"root:{ROOT}",
                                    EXAMGATE_IMPORT_MAX_BYTES="65536"))


@pytest.fixture
async def client(aiohttp_client: Any, app: Any) -> TestClient:
    return await aiohttp_client(app)


async def post(client: TestClient, kind: str, data: bytes, batch: str | None, *, query: str = "",
               token: str = ROOT, content_type: str = "text/csv") -> tuple[int, Any]:
    headers = auth(token, **{"Content-Type": content_type})
    if batch is not None:
        headers["Idempotency-Key"] = batch
    resp = await client.post(f"{IMPORTS}/{kind}{query}", data=data, headers=headers)
    return resp.status, await resp.json()


async def test_import_applies_once_and_a_conflicting_batch_is_409(
        client: TestClient, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    data = score_csv(exam, range(1, 6))
    status, body = await post(client, "scores", data, f"http-{exam.tag}")
    assert status == 200, body
    assert body["batch_id"] == f"http-{exam.tag}" and (body["rows"], body["applied"]) == (5, 5)
    assert body["already_applied"] is False and body["dry_run"] is False and body["seconds"] >= 0
    status, body = await post(client, "scores", data, f"http-{exam.tag}")
    assert status == 200 and body["already_applied"] is True
    status, body = await post(client, "scores", score_csv(exam, range(1, 6), offset=3), f"http-{exam.tag}")
    assert status == 409
    assert_error_shape(body, "batch_conflict")
    assert await pg.fetchval("SELECT count(*) FROM scores WHERE exam_id = $1", exam.exam_id) == 5
    resp = await client.get(f"{IMPORTS}?kind=scores&limit=5", headers=auth())
    listed = await resp.json()
    assert resp.status == 200
    assert listed["batches"][0]["batch_id"] == f"http-{exam.tag}" and listed["batches"][0]["created_by"] == "root"


async def test_bad_rows_answer_422_with_each_line_and_nothing_applied(
        client: TestClient, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    t, p = ticket_no(exam.tag, 1), id_number(exam.tag, 1)
    data = (f"exam_code,ticket_no,id_number,subject_code,score\n{exam.code},{t},{p},101,50\n"
            f"{exam.code},{t},{p},102,101\n{exam.code},{t},{p},103,1\n").encode()
    status, body = await post(client, "scores", data, f"bad-{exam.tag}")
    assert status == 422
    assert_error_shape(body, "import_rejected")
    assert body["error"]["details"]["rows"] == [
        {"line": 3, "reason": "成绩 101.0 超过科目 102 的满分 100.0"},
        {"line": 4, "reason": f"准考证号 {t} 的考生未报考科目 103"},
    ]
    assert body["error"]["details"]["total"] == 2 and body["error"]["details"]["more"] == 0
    assert await pg.fetchval("SELECT count(*) FROM scores WHERE exam_id = $1", exam.exam_id) == 0


async def test_ndjson_and_the_dry_run(client: TestClient, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    data = (f'{{"exam_code": "{exam.code}", "level": "mid", "subject_code": "101", "pass_mark": 60}}\n').encode()
    status, body = await post(client, "pass_marks", data, f"pm-{exam.tag}", query="?dry_run=true",
                              content_type="application/x-ndjson")
    assert status == 200 and body["dry_run"] is True and body["applied"] == 0
    assert await pg.fetchval("SELECT count(*) FROM pass_marks WHERE exam_id = $1", exam.exam_id) == 0
    status, body = await post(client, "pass_marks", data, f"pm-{exam.tag}", content_type="application/x-ndjson")
    assert status == 200 and body["applied"] == 1


async def test_refusals_before_the_file_is_read(client: TestClient, exam: ScoredExam) -> None:
    data = score_csv(exam, range(1, 3))
    status, body = await post(client, "grades", data, "b1")
    assert status == 404
    assert_error_shape(body, "import_kind_not_found")
    status, body = await post(client, "scores", data, "b1", content_type="application/json")
    assert status == 415
    assert_error_shape(body, "unsupported_media_type")
    status, body = await post(client, "scores", data, None)
    assert status == 422 and body["error"]["details"]["fields"] == {"Idempotency-Key": "required"}
    status, body = await post(client, "scores", data, "bad id!")
    assert status == 422 and "Idempotency-Key" in body["error"]["details"]["fields"]
    status, body = await post(client, "scores", data, "b1", query="?dry_run=maybe")
    assert status == 422
    status, body = await post(client, "scores", b"", "b1")
    assert status == 422 and body["error"]["details"]["rows"][0]["line"] == 1  # no header row
    # Above EXAMGATE_IMPORT_MAX_BYTES (64 KiB here), though far above the rest of the API's 2 KiB too.
    status, body = await post(client, "scores", b"x" * 70_000, "b1")
    assert status == 413 and body["error"]["details"]["max_bytes"] == 65536
    # Chunked, with no Content-Length: refused as soon as the body read passes the limit.

    async def chunks() -> Any:
        for _ in range(80):
            yield b"x" * 1024

    resp = await client.post(f"{IMPORTS}/scores", data=chunks(),
                             headers=auth(**{"Content-Type": "text/csv", "Idempotency-Key": "b1"}))
    assert resp.status == 413 and (await resp.json())["error"]["details"]["max_bytes"] == 65536
    # Between the API's limit and the import limit: read and judged.
    big = score_csv(exam, range(1, 6)) + b"\n" * 10_000
    status, body = await post(client, "scores", big, f"big-{exam.tag}")
    assert status == 200, body


async def test_only_national_admins_import(client: TestClient, exam: ScoredExam) -> None:
    tokens = {}
    for name, role, provinces in (("rev", "reviewer", None), ("ops", "operator", None), ("prov", "admin", ["11"])):
        resp = await client.post("/admin/api/v1/operators", json={"name": name, "role": role, "provinces": provinces},
                                 headers=auth())
        assert resp.status in (201, 409), await resp.text()
        resp = await client.post(f"/admin/api/v1/operators/{name}/tokens", json={}, headers=auth())
        tokens[name] = (await resp.json())["token"]
    data = score_csv(exam, range(1, 3))
    for name in ("rev", "ops", "prov"):
        status, body = await post(client, "scores", data, f"role-{exam.tag}", token=tokens[name])
        assert status == 403, (name, body)
    status, body = await post(client, "scores", data, f"role-{exam.tag}", token="nope")
    assert status == 401


async def test_ctl_import_uploads_reports_and_exits_non_zero_on_bad_rows(
        app: Any, pg: asyncpg.Connection, exam: ScoredExam, tmp_path: Path) -> None:
    server = TestServer(app)
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    try:
        runner = CliRunner()
        good = tmp_path / "scores.csv"
        good.write_bytes(score_csv(exam, range(1, 6)))

        def run(*args: str) -> Any:
            return runner.invoke(ctl, ["--url", url, "--token", ROOT, "import", *args], catch_exceptions=False)

        dry = await asyncio.to_thread(run, "scores", str(good), "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "valid, nothing applied (dry run)" in dry.output
        done = await asyncio.to_thread(run, "scores", str(good))
        assert done.exit_code == 0, done.output
        assert "5 rows, applied: 5 rows changed" in done.output and "sent 0.0 of 0.0 MiB (100 %)" in done.output
        assert await pg.fetchval("SELECT count(*) FROM scores WHERE exam_id = $1", exam.exam_id) == 5
        again = await asyncio.to_thread(run, "scores", str(good))
        assert again.exit_code == 0 and "already applied before" in again.output

        bad = tmp_path / "fix.ndjson"
        bad.write_text(f'{{"exam_code": "{exam.code}", "ticket_no": "T1", "id_number": "P1", '
                       f'"subject_code": "101", "score": 5}}\n', encoding="utf-8")
        refused = await asyncio.to_thread(run, "scores", str(bad), "--batch-id", f"fix-{exam.tag}")
        assert refused.exit_code == 1
        assert "import_rejected" in refused.output and "line 1: 准考证号 T1 不存在" in refused.output
        conflict = await asyncio.to_thread(run, "scores", str(good), "--batch-id", f"fix-{exam.tag}x")
        assert conflict.exit_code == 0
        other = tmp_path / "other.csv"
        other.write_bytes(score_csv(exam, range(1, 3), offset=2))
        clash = await asyncio.to_thread(run, "scores", str(other), "--batch-id", f"fix-{exam.tag}x")
        assert clash.exit_code == 1 and "batch_conflict" in clash.output
        wrong = tmp_path / "scores.txt"
        wrong.write_text("x")
        assert (await asyncio.to_thread(run, "scores", str(wrong))).exit_code == 1
    finally:
        await server.close()
