"""Operators as named accounts, through the gateway in-process: roles per route, scopes, tokens issued,
revoked and expired (the cache time made short), EXAMGATE_ADMIN_TOKENS as national admins, the audit."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from core import operators
from gateway import adminauth, routing
from gateway.app import create_app
from gateway.bodies import json_response
from gateway.routing import OPERATOR, Routes
from tests.gateway.test_app import assert_error_shape, make_settings

ROOT = "root-token-0123456789abcdefghij"
CACHE_S = 0.3
ME = "/admin/api/v1/me"
OPERATORS = "/admin/api/v1/operators"
CONFIG = "/admin/api/v1/config"
REFUNDS = "/admin/api/v1/refunds"


def auth(token: str = ROOT) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def where_am_i(request: web.Request) -> web.Response:
    """The caller's scope, as a review handler would ask for it."""
    return json_response({"scope": sorted(scope) if (scope := adminauth.scope(request)) is not None else None,
                          "sees_11": adminauth.in_scope(request, "11"), "sees_31": adminauth.in_scope(request, "31")})


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis, pg: asyncpg.Connection,
                 tmp_path: Path) -> TestClient:
    await pg.execute("TRUNCATE operators, operator_tokens, operator_audit RESTART IDENTITY")
    settings = make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_ADMIN_TOKENS=f"root:{ROOT}",
                             EXAMGATE_OPERATOR_TOKEN_CACHE_S=str(CACHE_S))
    app = create_app(settings)
    extra = Routes("Test")
    extra.get("/test/scope", "test.scope", caller=OPERATOR, roles=operators.ROLES)(where_am_i)
    routing.register(app, [extra])
    return await aiohttp_client(app)


async def add(client: TestClient, name: str, role: str, provinces: list[str] | None = None,
              token: str = ROOT, **extra: Any) -> Any:
    resp = await client.post(OPERATORS, json={"name": name, "role": role, "provinces": provinces, **extra},
                             headers=auth(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def issue(client: TestClient, name: str, token: str = ROOT, **body: Any) -> Any:
    resp = await client.post(f"{OPERATORS}/{name}/tokens", json=body, headers=auth(token))
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def operator_with_token(client: TestClient, name: str, role: str, provinces: list[str] | None = None) -> str:
    await add(client, name, role, provinces)
    return str((await issue(client, name))["token"])


async def status_of(client: TestClient, method: str, path: str, token: str, **kwargs: Any) -> int:
    resp = await client.request(method, path, headers={**auth(token), **kwargs.pop("headers", {})}, **kwargs)
    await resp.read()
    return resp.status


async def wait_status(client: TestClient, path: str, token: str, status: int, within_s: float) -> float:
    """Seconds until ``path`` answers ``status`` to ``token`` (fails beyond ``within_s``)."""
    started = time.monotonic()
    while (got := await status_of(client, "GET", path, token)) != status:
        assert time.monotonic() - started < within_s, f"still {got} after {within_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_the_settings_tokens_are_national_admins(client: TestClient) -> None:
    resp = await client.get(ME, headers=auth())
    assert resp.status == 200
    me = await resp.json()
    assert {key: me[key] for key in ("name", "role", "role_label", "provinces", "source", "token")} == {
        "name": "root", "role": "admin", "role_label": "管理员", "provinces": None, "source": "environment",
        "token": None}
    assert {"admin.config.get", "admin.operators.create", "admin.me"} <= set(me["routes"])
    assert (await client.get(CONFIG, headers=auth())).status == 200
    listed = await (await client.get(OPERATORS, headers=auth())).json()
    assert listed["operators"] == [{"name": "root", "display_name": "", "role": "admin", "provinces": None,
                                    "created_at": None, "disabled_at": None, "disabled": False,
                                    "source": "environment", "tokens": []}]


async def test_each_role_and_scope_signs_in_and_sees_itself(client: TestClient) -> None:
    tokens = {
        "reviewer-sh": await operator_with_token(client, "reviewer-sh", "reviewer", ["31"]),
        "operator-nat": await operator_with_token(client, "operator-nat", "operator"),
        "admin-north": await operator_with_token(client, "admin-north", "admin", ["11", "12"]),
    }
    for name, token in tokens.items():
        resp = await client.get(ME, headers=auth(token))
        assert resp.status == 200, name
        me = await resp.json()
        assert me["name"] == name and me["source"] == "database"
        assert me["token"]["active"] is True and me["token"]["expires_at"].endswith("+08:00")
    scopes = {name: await (await client.get("/test/scope", headers=auth(token))).json()
              for name, token in tokens.items()}
    assert scopes == {"reviewer-sh": {"scope": ["31"], "sees_11": False, "sees_31": True},
                      "operator-nat": {"scope": None, "sees_11": True, "sees_31": True},
                      "admin-north": {"scope": ["11", "12"], "sees_11": True, "sees_31": False}}
    reviewer = await (await client.get(ME, headers=auth(tokens["reviewer-sh"]))).json()
    assert reviewer["role_label"] == "审核员" and reviewer["provinces"] == ["31"]
    assert "admin.config.get" not in reviewer["routes"] and "admin.me" in reviewer["routes"]
    operator = await (await client.get(ME, headers=auth(tokens["operator-nat"]))).json()
    assert "admin.config.patch" in operator["routes"] and "admin.operators.list" not in operator["routes"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", CONFIG), ("PATCH", CONFIG), ("GET", "/admin/api/v1/audit"), ("GET", "/admin/api/v1/stats"),
    ("GET", REFUNDS), ("GET", OPERATORS), ("POST", OPERATORS), ("POST", f"{OPERATORS}/root/tokens"),
])
async def test_a_reviewer_is_forbidden_config_refund_and_operator_routes(client: TestClient, pg: asyncpg.Connection,
                                                                         method: str, path: str) -> None:
    token = await operator_with_token(client, "reviewer1", "reviewer", ["11"])
    audited = await pg.fetchval("SELECT count(*) FROM config_audit")
    resp = await client.request(method, path, headers={**auth(token), "Content-Type": "application/merge-patch+json"},
                                data=b'{"seats": {"hold_ttl_s": 900}, "name": "x1", "role": "admin"}')
    assert resp.status == 403
    body = await resp.json()
    assert_error_shape(body, "forbidden")
    assert body["error"]["message"] == "当前账号的角色（审核员）无权使用此功能"
    assert body["error"]["details"]["role"] == "reviewer"
    assert "reviewer" not in body["error"]["details"]["allowed_roles"]
    assert await pg.fetchval("SELECT count(*) FROM config_audit") == audited
    assert await pg.fetchval("SELECT count(*) FROM operators") == 1


@pytest.mark.parametrize(("method", "path"), [
    ("GET", OPERATORS), ("POST", OPERATORS), ("PATCH", f"{OPERATORS}/someone"),
    ("POST", f"{OPERATORS}/someone/tokens"), ("DELETE", f"{OPERATORS}/someone/tokens/1"),
    ("GET", "/admin/api/v1/operator-audit"),
])
async def test_an_operator_is_forbidden_operator_management(client: TestClient, pg: asyncpg.Connection,
                                                            method: str, path: str) -> None:
    token = await operator_with_token(client, "someone", "operator")
    assert await status_of(client, "GET", CONFIG, token) == 200
    assert await status_of(client, "GET", REFUNDS, token) == 200
    before = await pg.fetchval("SELECT count(*) FROM operator_audit")
    resp = await client.request(method, path, json={"name": "other", "role": "admin"}, headers=auth(token))
    assert resp.status == 403
    assert_error_shape(await resp.json(), "forbidden")
    assert await pg.fetchval("SELECT count(*) FROM operator_audit") == before


async def test_a_stored_admin_manages_operators(client: TestClient) -> None:
    admin = await operator_with_token(client, "chief", "admin")
    made = await add(client, "wang", "reviewer", ["44"], token=admin, display_name="王审核")
    assert made["display_name"] == "王审核" and made["provinces"] == ["44"]
    issued = await issue(client, "wang", token=admin, label="办公室", expires_in_s=7 * 86400)
    assert issued["label"] == "办公室" and issued["operator"] == "wang"
    resp = await client.patch(f"{OPERATORS}/wang", json={"role": "operator", "provinces": None},
                              headers=auth(admin))
    assert resp.status == 200
    changed = await resp.json()
    assert changed["role"] == "operator" and changed["provinces"] is None
    assert [token["id"] for token in changed["tokens"]] == [issued["id"]]
    assert await status_of(client, "GET", CONFIG, issued["token"]) == 200  # promoted: at once in this process
    audit = await (await client.get("/admin/api/v1/operator-audit?name=wang", headers=auth(admin))).json()
    assert [(entry["actor"], entry["action"]) for entry in audit["changes"]] == [
        ("chief", "update"), ("chief", "token_issue"), ("chief", "create")]


async def test_a_provincial_admin_stays_within_its_provinces(client: TestClient) -> None:
    north = await operator_with_token(client, "north", "admin", ["11", "12"])
    await add(client, "national-ops", "operator")
    await add(client, "sh-reviewer", "reviewer", ["31"])
    await add(client, "bj-reviewer", "reviewer", ["11"], token=north)
    listed = await (await client.get(OPERATORS, headers=auth(north))).json()
    assert [entry["name"] for entry in listed["operators"]] == ["bj-reviewer", "north"]
    for body in ({"name": "anywhere", "role": "reviewer"}, {"name": "wider", "role": "reviewer",
                                                            "provinces": ["11", "31"]}):
        resp = await client.post(OPERATORS, json=body, headers=auth(north))
        assert resp.status == 403
        assert_error_shape(await resp.json(), "scope_exceeded")
    for name in ("national-ops", "sh-reviewer", "root"):
        resp = await client.patch(f"{OPERATORS}/{name}", json={"disabled": True}, headers=auth(north))
        assert resp.status == (409 if name == "root" else 404)
    resp = await client.post(f"{OPERATORS}/sh-reviewer/tokens", json={}, headers=auth(north))
    assert resp.status == 404
    assert_error_shape(await resp.json(), "operator_not_found")


async def test_a_revoked_token_stops_working_within_the_cache_time(client: TestClient, pg: asyncpg.Connection) -> None:
    await add(client, "ops", "operator")
    kept, revoked_elsewhere, revoked_here = [await issue(client, "ops", label=label) for label in ("a", "b", "c")]
    for issued in (kept, revoked_elsewhere, revoked_here):
        assert await status_of(client, "GET", CONFIG, issued["token"]) == 200

    # Revoked by another process (here: straight in PostgreSQL): trusted until this process's cache time ends.
    await pg.execute("UPDATE operator_tokens SET revoked_at = now() WHERE id = $1", revoked_elsewhere["id"])
    assert await status_of(client, "GET", CONFIG, revoked_elsewhere["token"]) == 200
    waited = await wait_status(client, CONFIG, revoked_elsewhere["token"], 401, within_s=CACHE_S + 1)
    assert waited <= CACHE_S + 0.5

    # Revoked through this process: refused at once.
    resp = await client.delete(f"{OPERATORS}/ops/tokens/{revoked_here['id']}", headers=auth())
    assert resp.status == 200
    assert (await resp.json())["revoked_at"] is not None
    resp = await client.get(CONFIG, headers=auth(revoked_here["token"]))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="examgate-admin", error="invalid_token"'
    assert_error_shape(await resp.json(), "unauthorized")
    assert await status_of(client, "GET", CONFIG, kept["token"]) == 200
    again = await client.delete(f"{OPERATORS}/ops/tokens/{revoked_here['id']}", headers=auth())
    assert again.status == 200
    for path in (f"{OPERATORS}/ops/tokens/999999", f"{OPERATORS}/ops/tokens/0x1", f"{OPERATORS}/nobody/tokens/1"):
        resp = await client.delete(path, headers=auth())
        assert resp.status == 404
        assert_error_shape(await resp.json(), "token_not_found")


async def test_an_expired_token_and_a_disabled_operator_are_refused(client: TestClient,
                                                                     pg: asyncpg.Connection) -> None:
    expiring = await operator_with_token(client, "temp", "operator")
    disabled = await operator_with_token(client, "leaver", "reviewer", ["11"])
    assert await status_of(client, "GET", ME, expiring) == 200
    await pg.execute("UPDATE operator_tokens t SET expires_at = now() - interval '1 second', "
                     "created_at = now() - interval '1 day' FROM operators o WHERE o.id = t.operator_id "
                     "AND o.name = 'temp'")
    assert await wait_status(client, ME, expiring, 401, within_s=CACHE_S + 1) <= CACHE_S + 0.5

    assert await status_of(client, "GET", ME, disabled) == 200
    resp = await client.patch(f"{OPERATORS}/leaver", json={"disabled": True}, headers=auth())
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    assert await status_of(client, "GET", ME, disabled) == 401
    refused = await client.post(f"{OPERATORS}/leaver/tokens", headers=auth())
    assert refused.status == 409
    assert_error_shape(await refused.json(), "operator_disabled")
    resp = await client.patch(f"{OPERATORS}/leaver", json={"disabled": False}, headers=auth())
    assert resp.status == 200
    assert await status_of(client, "GET", ME, disabled) == 200  # enabled again: its token works again


async def test_a_demoted_operator_loses_its_routes(client: TestClient) -> None:
    token = await operator_with_token(client, "ops", "operator")
    assert await status_of(client, "GET", CONFIG, token) == 200
    resp = await client.patch(f"{OPERATORS}/ops", json={"role": "reviewer"}, headers=auth())
    assert resp.status == 200
    assert await status_of(client, "GET", CONFIG, token) == 403


async def test_tokens_are_stored_hashed(client: TestClient, pg: asyncpg.Connection) -> None:
    issued = await issue(client, (await add(client, "hashed", "reviewer", ["50"]))["name"], label="终端")
    token = issued["token"]
    assert token.startswith("egop_") and len(token) == 48
    assert await status_of(client, "GET", ME, token) == 200
    stored = await pg.fetchval("SELECT token_hash FROM operator_tokens WHERE id = $1", issued["id"])
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()
    for table in ("operators", "operator_tokens", "operator_audit", "config_audit"):
        dumped = await pg.fetchval(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
        assert token[5:] not in dumped and token[10:30] not in dumped, table
    listed = await (await client.get(OPERATORS, headers=auth())).text()
    assert token[5:] not in listed


async def test_use_is_recorded_off_the_request_path_and_lookups_are_cached(
        client: TestClient, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    token = await operator_with_token(client, "busy", "operator")
    lookups = 0
    resolve = operators.resolve

    async def counted(conn: Any, digest: bytes) -> Any:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.05)  # slow enough that the concurrent requests all wait for this one
        return await resolve(conn, digest)

    monkeypatch.setattr(operators, "resolve", counted)
    client.app[adminauth.OPERATOR_TOKENS].forget()
    statuses = await asyncio.gather(*(status_of(client, "GET", CONFIG, token) for _ in range(20)))
    assert statuses == [200] * 20
    assert lookups == 1  # one query for the twenty, then the cache
    for _ in range(10):
        assert await status_of(client, "GET", CONFIG, token) == 200
    assert lookups == 1
    deadline = time.monotonic() + 2
    while await pg.fetchval("SELECT last_used_at FROM operator_tokens") is None:
        assert time.monotonic() < deadline, "last_used_at was never written"
        await asyncio.sleep(0.02)
    # Unknown, malformed or another kind of token: 401 without a lookup for what cannot be a stored token.
    for wrong in ("egop_" + "A" * 43, "egop_short", "not-a-token-at-all-0123456789"):
        assert await status_of(client, "GET", CONFIG, wrong) == 401
    assert lookups == 2


@pytest.mark.parametrize(("body", "fields"), [
    ({"name": "a b", "role": "reviewer"}, {"name": "invalid_format"}),
    ({"name": "Upper", "role": "reviewer"}, {"name": "invalid_format"}),
    ({"name": "ok-name", "role": "superuser"}, {"role": "invalid_choice"}),
    ({"name": "ok-name", "role": "reviewer", "provinces": ["99"]}, {"provinces.0": "invalid_choice"}),
    ({"name": "ok-name", "role": "reviewer", "provinces": ["1"]}, {"provinces.0": "invalid_choice"}),
    ({"name": "ok-name", "role": "reviewer", "provinces": [11]}, {"provinces.0": "invalid_choice"}),
    ({"name": "ok-name", "role": "reviewer", "provinces": []}, {"provinces": "too_few"}),
    ({"name": "ok-name", "role": "reviewer", "display_name": "名" * 65}, {"display_name": "too_long"}),
    ({"name": "ok-name", "role": "reviewer", "colour": "red"}, {"colour": "unknown_field"}),
    ({"role": "reviewer"}, {"name": "required"}),
])
async def test_bad_operators_are_refused_and_nothing_is_written(client: TestClient, pg: asyncpg.Connection,
                                                                body: dict[str, Any], fields: dict[str, str]) -> None:
    resp = await client.post(OPERATORS, json=body, headers=auth())
    assert resp.status == 422
    answer = await resp.json()
    assert_error_shape(answer, "validation_failed")
    assert answer["error"]["details"]["fields"] == fields
    assert await pg.fetchval("SELECT count(*) FROM operators") == 0
    assert await pg.fetchval("SELECT count(*) FROM operator_audit") == 0


async def test_conflicts_and_missing_operators(client: TestClient, pg: asyncpg.Connection) -> None:
    await add(client, "dup", "reviewer", ["11"])
    for name in ("dup", "root"):
        resp = await client.post(OPERATORS, json={"name": name, "role": "admin"}, headers=auth())
        assert resp.status == 409
        answer = await resp.json()
        assert_error_shape(answer, "operator_exists")
        assert answer["error"]["details"] == {"name": name}
    resp = await client.patch(f"{OPERATORS}/root", json={"role": "reviewer"}, headers=auth())
    assert resp.status == 409
    assert_error_shape(await resp.json(), "operator_from_settings")
    assert (await client.post(f"{OPERATORS}/root/tokens", headers=auth())).status == 409
    resp = await client.patch(f"{OPERATORS}/ghost", json={"role": "reviewer"}, headers=auth())
    assert resp.status == 404
    assert_error_shape(await resp.json(), "operator_not_found")
    for body, field, code in (({"expires_in_s": 10}, "expires_in_s", "too_small"),
                              ({"expires_in_s": 3651 * 86400}, "expires_in_s", "too_large"),
                              ({"label": "x" * 65}, "label", "too_long")):
        resp = await client.post(f"{OPERATORS}/dup/tokens", json=body, headers=auth())
        assert resp.status == 422
        assert (await resp.json())["error"]["details"]["fields"] == {field: code}
    for body, fields in (({"role": None}, {"role": "invalid_choice"}),
                         ({"provinces": ["00"]}, {"provinces.0": "invalid_choice"}),
                         ({"disabled": "yes"}, {"disabled": "must_be_boolean"})):
        resp = await client.patch(f"{OPERATORS}/dup", json=body, headers=auth())
        assert resp.status == 422, body
        assert (await resp.json())["error"]["details"]["fields"] == fields
    assert await pg.fetchval("SELECT count(*) FROM operator_tokens") == 0
    assert await pg.fetchval("SELECT count(*) FROM operator_audit") == 1  # the creation only
    unchanged = await client.patch(f"{OPERATORS}/dup", json={}, headers=auth())
    assert unchanged.status == 200 and (await unchanged.json())["provinces"] == ["11"]


async def test_a_default_lifetime_comes_from_the_settings(client: TestClient) -> None:
    await add(client, "longlived", "operator")
    issued = await issue(client, "longlived")
    me = await (await client.get(ME, headers=auth(issued["token"]))).json()
    assert me["token"]["id"] == issued["id"] and me["token"]["expires_at"] == issued["expires_at"]
    lifetime = datetime.fromisoformat(issued["expires_at"]) - datetime.fromisoformat(issued["created_at"])
    assert abs(lifetime.total_seconds() - 90 * 86400) < 5


async def test_metrics_take_an_operators_token_but_not_a_reviewers(client: TestClient) -> None:
    operator = await operator_with_token(client, "watcher", "operator")
    reviewer = await operator_with_token(client, "reader", "reviewer", ["11"])
    resp = await client.get("/metrics", headers=auth(operator))
    assert resp.status == 200 and "examgate_" in await resp.text()
    resp = await client.get("/metrics", headers=auth(reviewer))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="examgate-metrics", error="invalid_token"'
