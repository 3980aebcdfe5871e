"""The gateway in-process: error shape, body checks, catalogue routes, readiness."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from core.errors import NotFound, StorageUnavailable
from gateway import config, errors, keys, routing
from gateway.app import create_app
from gateway.bodies import json_response, read_json
from gateway.routing import Routes
from loadtest.processes import start_redis
from tests.factories import make_exam


def make_settings(pg_dsn: str, redis_url: str, tmp_path: Path, **env: str) -> config.Settings:
    return config.load({
        "EXAMGATE_DATABASE_URL": pg_dsn,
        "EXAMGATE_REDIS_URL": redis_url,
        "EXAMGATE_RUN_DIR": str(tmp_path),
        "EXAMGATE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "EXAMGATE_MAX_BODY_BYTES": "2048",
        "EXAMGATE_REDIS_TIMEOUT_MS": "300",
        **env,
    })


def raising(exc: BaseException) -> Any:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    return handler


async def echo(request: web.Request) -> web.Response:
    return json_response(await read_json(request))


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: Any, tmp_path: Path) -> TestClient:
    app = create_app(make_settings(pg_dsn, redis_url, tmp_path))
    extra = Routes("Test")
    extra.post("/test/echo", "test.echo")(echo)
    for name, exc in {"boom": RuntimeError("secret internals"), "conflict": errors.Conflict(details={"why": "x"}),
                      "storage": StorageUnavailable("postgresql", "down"), "missing": NotFound("thing", 7),
                      "redis-down": RedisConnectionError("gone"), "overloaded": errors.Overloaded(retry_after_s=2.2),
                      "invalid": errors.ValidationFailed({"phone": "格式不正确"})}.items():
        extra.get(f"/test/{name}", f"test.{name}")(raising(exc))
    routing.register(app, [extra])  # behind the same edge as every route
    return await aiohttp_client(app)


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/test/boom", 500, "internal_error"),
        ("/test/conflict", 409, "conflict"),
        ("/test/storage", 503, "service_unavailable"),
        ("/test/missing", 404, "not_found"),
        ("/test/redis-down", 503, "service_unavailable"),
        ("/test/overloaded", 503, "overloaded"),
        ("/test/invalid", 422, "validation_failed"),
        ("/no/such/path", 404, "not_found"),
    ],
)
async def test_every_error_has_the_api_shape(client: TestClient, path: str, status: int, code: str) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert_error_shape(body, code)
    assert "Traceback" not in await resp.text() and "secret internals" not in await resp.text()
    assert resp.headers["X-Request-Id"]


async def test_retry_after_is_rounded_up(client: TestClient) -> None:
    resp = await client.get("/test/overloaded")
    assert resp.headers["Retry-After"] == "3"


async def test_validation_names_fields(client: TestClient) -> None:
    body = await (await client.get("/test/invalid")).json()
    assert body["error"]["details"]["fields"] == {"phone": "格式不正确"}


async def test_method_not_allowed(client: TestClient) -> None:
    resp = await client.delete("/api/v1/exams")
    assert resp.status == 405
    assert_error_shape(await resp.json(), "method_not_allowed")


async def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    first = (await client.get("/healthz")).headers["X-Request-Id"]
    second = (await client.get("/healthz")).headers["X-Request-Id"]
    assert first and second and first != second


async def test_json_body_round_trip(client: TestClient) -> None:
    resp = await client.post("/test/echo", json={"name": "王晓[沛]"})
    assert resp.status == 200
    assert await resp.json() == {"name": "王晓[沛]"}


async def in_pieces(*parts: bytes, pause_s: float) -> AsyncIterator[bytes]:
    """A request body sent a part at a time (chunked), ``pause_s`` apart."""
    for part in parts:
        yield part
        await asyncio.sleep(pause_s)


async def test_a_body_sent_in_pieces_is_read_whole(client: TestClient) -> None:
    resp = await client.post("/test/echo", data=in_pieces('{"name": "王'.encode(), '晓"}'.encode(), pause_s=0.2),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"name": "王晓"}
    assert resp.headers["Server"] == "examgate"


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b'{"a": 1', {"Content-Type": "application/json"}, 400, "malformed_body"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "malformed_body"),
        (b"", {"Content-Type": "application/json"}, 400, "malformed_body"),
        (b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        (b'{"a": 1}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"a": "' + b"x" * 4096 + b'"}', {"Content-Type": "application/json"}, 413, "body_too_large"),
    ],
)
async def test_bad_bodies(client: TestClient, data: bytes, headers: dict[str, str], status: int, code: str) -> None:
    resp = await client.post("/test/echo", data=data, headers=headers)
    assert resp.status == status
    assert_error_shape(await resp.json(), code)


async def test_body_too_large_without_content_length(client: TestClient) -> None:
    async def chunks() -> Any:
        for _ in range(8):
            yield b"x" * 1024

    resp = await client.post("/test/echo", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error_shape(await resp.json(), "body_too_large")


async def test_exams_and_sites(client: TestClient, pg: asyncpg.Connection) -> None:
    exam_id = await make_exam(pg, sites=[("11", 60), ("37", 30)])
    await client.app[keys.CATALOGUE].refresh()
    resp = await client.get("/api/v1/exams")
    assert resp.status == 200
    exams = {e["id"]: e for e in await resp.json()}
    exam = exams[exam_id]
    assert exam["fee_per_subject_fen"] == 5600
    assert exam["provinces"] == ["11", "37"]
    assert exam["registration_opens_at"].endswith("+08:00")
    subjects = exam["levels"][0]["specialties"][0]["subjects"]
    assert [s["code"] for s in subjects] == ["101", "102"]

    sites = await (await client.get(f"/api/v1/exams/{exam_id}/sites")).json()
    assert [(s["province"], s["capacity"], s["available"]) for s in sites] == [("11", 60, 60), ("37", 30, 30)]
    only = await (await client.get(f"/api/v1/exams/{exam_id}/sites?province=37")).json()
    assert [s["province"] for s in only] == ["37"]

    bad = await client.get(f"/api/v1/exams/{exam_id}/sites?province=beijing")
    assert bad.status == 422
    assert "province" in (await bad.json())["error"]["details"]["fields"]
    missing = await client.get("/api/v1/exams/999999/sites")
    assert missing.status == 404
    assert_error_shape(await missing.json(), "exam_not_found")


async def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    # The pages (HTML shells and static assets) are declared and documented like the JSON API.
    served = {
        (r.method.lower(), _documented_path(r.resource.canonical)) for r in client.app.router.routes()
        if r.resource is not None and r.method != "HEAD" and not r.resource.canonical.startswith(("/test/", "/_bench/"))
        and r.name is not None  # not the catch-all (404 and 405 for every path no operation matches)
    }
    assert served <= {(method, path) for path, operations in doc["paths"].items() for method in operations}
    assert {"/", "/console", "/static/{digest}/{path}", "/exams/{exam_id}/enrol"} <= set(doc["paths"])
    assert doc["paths"]["/"]["get"]["responses"]["200"]["content"] == {"text/html": {"schema": {"type": "string"}}}


def _documented_path(canonical: str) -> str:
    """A route's path as the document writes it: ``{exam_id}`` for ``{exam_id:[0-9]{1,10}}``."""
    return re.sub(r"\{([a-z_]+):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", r"{\1}", canonical)


async def test_readyz_names_redis_when_it_is_unreachable(
    aiohttp_client: Any, pg_dsn: str, tmp_path: Path
) -> None:
    server = start_redis()
    try:
        # Verdicts not reused: each call below asks the stores again.
        app = create_app(make_settings(pg_dsn, server.url, tmp_path, EXAMGATE_READY_CACHE_S="0"))
        client = await aiohttp_client(app)
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()
        body = await ready.json()
        # No worker runs beside this app: ready to serve, degraded.
        assert body["checks"] == {"redis": "ok", "postgresql": "ok", "migrations": "ok", "worker": "missing",
                                  "pdf_font": "ok"}
        assert body["status"] == "degraded" and body["degraded"] == ["worker"]

        server.stop()
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert_error_shape(body, "not_ready")
        assert body["error"]["details"]["missing"] == ["redis"]
        assert body["error"]["details"]["checks"]["worker"] == "unknown"
        assert resp.headers["Retry-After"] == "1"
        assert (await client.get("/healthz")).status == 200

        server.start()
        for _ in range(50):
            if (await client.get("/readyz")).status == 200:
                break
        else:
            pytest.fail("readiness did not recover after Redis came back")
    finally:
        server.stop()


async def test_readyz_names_postgres_when_migrations_are_missing(
    aiohttp_client: Any, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    from core import db

    empty = db.with_database(pg_dsn, db.database_name(pg_dsn) + "_empty")
    await db.ensure_database(empty)
    try:
        client = await aiohttp_client(create_app(make_settings(empty, redis_url, tmp_path)))
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["details"]["missing"] == ["migrations"]
        assert body["error"]["details"]["checks"]["migrations"].startswith("pending: 0001_initial")
        await client.close()
    finally:
        await db.drop_database(empty)


@pytest.mark.unit
def test_two_models_of_one_name_cannot_share_the_openapi_document() -> None:
    from gateway import openapi
    from gateway.models import Body

    def two(name: str, field: str) -> type[Body]:
        return type(name, (Body,), {"__annotations__": {field: int}})

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    table = Routes("Test")
    table.add("POST", "/test/a", "test.a", handler, body=two("Same", "a"))
    table.add("POST", "/test/b", "test.b", handler, body=two("Same", "b"))  # a different model, the same name
    with pytest.raises(ValueError, match="two different models are named 'Same'"):
        openapi.document(table.operations)
    alone = Routes("Test")
    alone.add("POST", "/test/a", "test.a", handler, body=two("Same", "a"))
    assert "Same" in openapi.document(alone.operations)["components"]["schemas"]
