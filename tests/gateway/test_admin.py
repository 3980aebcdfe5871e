"""The operators' API in-process: bearer auth, config read and merge-patch, If-Match, audit, stats."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway import heartbeats, keys
from gateway.app import create_app
from gateway.configstore import CONFIG_KEY
from gateway.liveconfig import DEFAULT
from tests.gateway.test_app import assert_error_shape, make_settings

ALICE = "alice-token-0123456789abcdefghij"
BOB = "bob-token-0123456789abcdefghijkl"
CONFIG = "/admin/api/v1/config"
ADMIN_ROUTES = [("GET", CONFIG), ("PATCH", CONFIG), ("GET", "/admin/api/v1/audit"), ("GET", "/admin/api/v1/stats")]
MERGE = "application/merge-patch+json"


def auth(token: str = ALICE, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis, pg: asyncpg.Connection,
                 tmp_path: Path) -> TestClient:
    # Nothing stored anywhere: an empty Redis alone would be restored from the audit.
    await pg.execute("TRUNCATE config_audit")
    # The whole live config must fit in a PATCH (the shared test settings keep bodies to 2 KB).
    settings = make_settings(pg_dsn, redis_url, tmp_path, EXAMGATE_ADMIN_TOKENS=f"alice:{ALICE},bob:{BOB}",
                             EXAMGATE_MAX_BODY_BYTES="16384")
    return await aiohttp_client(create_app(settings))


async def patch(client: TestClient, body: Any, token: str = ALICE, **headers: str) -> Any:
    return await client.patch(CONFIG, json=body, headers={**auth(token), "Content-Type": MERGE, **headers})


async def audit_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM config_audit"))


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789abcdef", f"Basic {ALICE}",
                                           "Bearer", f"Bearer {ALICE}x"])
async def test_admin_routes_need_a_valid_token(client: TestClient, method: str, path: str,
                                               authorization: str | None) -> None:
    headers = {"Content-Type": MERGE} | ({"Authorization": authorization} if authorization else {})
    resp = await client.request(method, path, data=b'{"seats": {"hold_ttl_s": 900}}', headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert_error_shape(body, "unauthorized")
    assert ALICE not in await resp.text() and "wrong-token" not in await resp.text()
    assert (await (await client.get(CONFIG, headers=auth())).json())["version"] == 0  # nothing applied


async def test_get_and_patch_round_trip(client: TestClient) -> None:
    resp = await client.get(CONFIG, headers=auth())
    assert resp.status == 200
    assert await resp.json() == {"version": 0, "config": DEFAULT}

    resp = await patch(client, {"seats": {"hold_ttl_s": 900}, "maintenance": {"scores.*": "成绩查询维护中"}})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["version"] == 1 and resp.headers["ETag"] == '"1"'
    assert body["config"]["seats"] == {"hold_ttl_s": 900}
    assert body["config"]["maintenance"] == {"scores.*": "成绩查询维护中"}
    assert await (await client.get(CONFIG, headers=auth(BOB))).json() == body

    plain_json = await client.patch(CONFIG, json={"maintenance": {"scores.*": None}}, headers=auth())
    assert plain_json.status == 200
    assert (await plain_json.json())["config"]["maintenance"] == {}

    same = await patch(client, {"seats": {"hold_ttl_s": 900}})  # changes nothing: no new version
    assert (await same.json())["version"] == 2

    # The in-process watcher applies it (pub/sub), well within a second.
    deadline = time.monotonic() + 1
    while client.app[keys.LIVE].current.version != 2:
        assert time.monotonic() < deadline, "the watcher did not apply version 2 within 1 s"
        await asyncio.sleep(0.02)
    assert client.app[keys.LIVE].current.hold_ttl_s == 900


async def test_invalid_change_is_refused_with_every_problem(client: TestClient, pg: asyncpg.Connection) -> None:
    rows_before = await audit_count(pg)
    resp = await patch(client, {"seats": {"hold_ttl_s": -5}, "captcha": {"routes": {"sessions.create": "dice"}},
                                "ratelimit": {"rules": [{"id": "x", "routes": ["a"], "key": "ip", "rate": "fast",
                                                         "period_s": 1}]}, "colour": "red"})
    assert resp.status == 422
    body = await resp.json()
    assert_error_shape(body, "invalid_config")
    assert body["error"]["details"]["fields"] == {
        "colour": "is not a known setting",
        "ratelimit.rules[0].rate": "must be an integer",
        'captcha.routes["sessions.create"]': "must be one of image, pow, either, off",
        "seats.hold_ttl_s": "must be between 60 and 86400",
    }
    assert await (await client.get(CONFIG, headers=auth())).json() == {"version": 0, "config": DEFAULT}
    assert await audit_count(pg) == rows_before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"seats": ', MERGE, 400, "malformed_body"),
        (b'["not", "an", "object"]', MERGE, 400, "malformed_body"),
        (b'{"seats": {"hold_ttl_s": 900}}', "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_bad_patch_bodies(client: TestClient, data: bytes, content_type: str, status: int, code: str) -> None:
    resp = await client.patch(CONFIG, data=data, headers=auth(**{"Content-Type": content_type}))
    assert resp.status == status
    assert_error_shape(await resp.json(), code)


async def test_if_match(client: TestClient) -> None:
    assert (await patch(client, {"seats": {"hold_ttl_s": 600}}, **{"If-Match": "0"})).status == 200
    stale = await patch(client, {"seats": {"hold_ttl_s": 700}}, **{"If-Match": "0"})
    assert stale.status == 412
    body = await stale.json()
    assert_error_shape(body, "version_mismatch")
    assert body["error"]["details"]["current_version"] == 1
    assert (await patch(client, {"seats": {"hold_ttl_s": 700}}, **{"If-Match": '"1"'})).status == 200
    assert (await patch(client, {"seats": {"hold_ttl_s": 800}}, **{"If-Match": "2"})).status == 200
    bad = await patch(client, {"seats": {"hold_ttl_s": 900}}, **{"If-Match": "latest"})
    assert bad.status == 400
    assert_error_shape(await bad.json(), "invalid_if_match")
    final = await (await client.get(CONFIG, headers=auth())).json()
    assert (final["version"], final["config"]["seats"]["hold_ttl_s"]) == (3, 800)


async def test_concurrent_changes_with_the_same_if_match_one_wins(client: TestClient, pg: asyncpg.Connection) -> None:
    rows_before = await audit_count(pg)
    replies = await asyncio.gather(*(
        patch(client, {"seats": {"hold_ttl_s": 600 + n}}, BOB if n % 2 else ALICE, **{"If-Match": "0"})
        for n in range(8)
    ))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] + [412] * 7
    winner = next(reply for reply in replies if reply.status == 200)
    won = await winner.json()
    assert won["version"] == 1
    for reply in replies:
        if reply.status == 412:
            assert (await reply.json())["error"]["details"]["current_version"] == 1
    assert await (await client.get(CONFIG, headers=auth())).json() == won
    assert await audit_count(pg) == rows_before + 1


async def test_concurrent_changes_without_if_match_all_apply(client: TestClient) -> None:
    replies = await asyncio.gather(*(patch(client, {"maintenance": {f"route{n}.x": "维护中"}}) for n in range(5)))
    assert [reply.status for reply in replies] == [200] * 5
    final = await (await client.get(CONFIG, headers=auth())).json()
    assert final["version"] == 5
    assert set(final["config"]["maintenance"]) == {f"route{n}.x" for n in range(5)}


async def test_audit_lists_every_accepted_change(client: TestClient) -> None:
    assert (await patch(client, {"seats": {"hold_ttl_s": 900}})).status == 200
    assert (await patch(client, {"seats": {"hold_ttl_s": -1}}, BOB)).status == 422
    assert (await patch(client, {"queue": {"exams": {"2": {"enabled": True}}}}, BOB)).status == 200
    resp = await client.get("/admin/api/v1/audit?limit=2", headers=auth())
    assert resp.status == 200
    changes = (await resp.json())["changes"]
    assert [(c["version"], c["actor"]) for c in changes] == [(2, "bob"), (1, "alice")]
    assert changes[0]["diff"] == [{"path": "queue.exams.2", "old": None, "new": {"enabled": True}}]
    assert changes[1]["diff"] == [{"path": "seats.hold_ttl_s", "old": 1800, "new": 900}]
    assert all(c["changed_at"].endswith("+08:00") for c in changes)
    default_limit = await (await client.get("/admin/api/v1/audit", headers=auth())).json()
    assert len(default_limit["changes"]) >= 2


@pytest.mark.parametrize("limit", ["0", "501", "ten", "-1"])
async def test_audit_limit_is_checked(client: TestClient, limit: str) -> None:
    resp = await client.get(f"/admin/api/v1/audit?limit={limit}", headers=auth())
    assert resp.status == 422
    body = await resp.json()
    assert_error_shape(body, "validation_failed")
    assert "limit" in body["error"]["details"]["fields"]


async def test_stats_answers_with_rates_and_sections(client: TestClient, redis: aioredis.Redis) -> None:
    async def queues() -> dict[str, int]:
        return {"waiting": 3}

    async def broken() -> dict[str, int]:
        raise RuntimeError("provider down")

    recorder = client.app[keys.STATS]
    recorder.register_provider("queues", queues)
    recorder.register_provider("broken", broken)
    with pytest.raises(ValueError):
        recorder.register_provider("routes", queues)
    for _ in range(20):
        assert (await client.get("/healthz")).status == 200
    for _ in range(10):
        assert (await client.get("/no/such/path")).status == 404
    await recorder.flush(redis)
    resp = await client.get("/admin/api/v1/stats", headers=auth())
    assert resp.status == 200
    stats = await resp.json()
    assert stats["window_s"] == 10 and stats["config_version"] == 0
    assert stats["routes"]["health.live"]["requests_per_s"] >= 2.0
    assert stats["routes"]["health.live"]["rejections_per_s"] == 0
    assert stats["routes"]["unmatched"]["4xx_per_s"] >= 1.0
    assert stats["totals"]["requests_per_s"] >= 3.0
    assert stats["queues"] == {"waiting": 3}
    assert stats["broken"] == {"error": "RuntimeError"}
    assert stats["workers"] == []  # no worker has beaten in this Redis db


async def test_stats_list_the_workers_heartbeats(client: TestClient, redis: aioredis.Redis) -> None:
    interval_s = client.app[keys.SETTINGS].worker_heartbeat_s
    await heartbeats.beat(redis, "host-a:101", interval_s)
    await redis.zadd(heartbeats.WORKERS, {"host-b:202": time.time() - 4 * interval_s})  # missed 4 beats
    resp = await client.get("/admin/api/v1/stats", headers=auth())
    assert resp.status == 200
    workers = (await resp.json())["workers"]
    assert [(w["id"], w["alive"]) for w in workers] == [("host-a:101", True), ("host-b:202", False)]
    assert workers[0]["last_seen_s"] < 1 and workers[1]["last_seen_s"] >= 4 * interval_s - 0.1


async def test_corrupt_stored_config_is_reported_and_replaceable(client: TestClient, redis: aioredis.Redis) -> None:
    assert (await patch(client, {"seats": {"hold_ttl_s": 900}})).status == 200
    await redis.hset(CONFIG_KEY, mapping={"version": 2, "doc": b"{not json"})
    resp = await client.get(CONFIG, headers=auth())
    assert resp.status == 500
    assert_error_shape(await resp.json(), "config_corrupt")
    partial = await patch(client, {"seats": {"hold_ttl_s": 600}})
    assert partial.status == 422  # onto nothing: the other sections are missing
    whole = await patch(client, DEFAULT, **{"If-Match": "2"})
    assert whole.status == 200
    assert await whole.json() == {"version": 3, "config": DEFAULT}


def rule(rule_id: str, routes: list[str], key: str) -> dict[str, Any]:
    return {"id": rule_id, "routes": routes, "key": key, "rate": 10, "period_s": 60}


async def test_a_rule_keyed_on_what_no_route_it_matches_offers_is_refused(client: TestClient,
                                                                           pg: asyncpg.Connection) -> None:
    rows_before = await audit_count(pg)
    resp = await patch(client, {"ratelimit": {"rules": [
        rule("exams-ip", ["exams.list"], "ip"),
        rule("exams-candidate", ["exams.list", "exams.pass_marks", "sites.list"], "candidate"),  # anonymous routes
        rule("health-account", ["health.live"], "account"),  # no body names an account there
    ]}})
    assert resp.status == 422
    body = await resp.json()
    assert_error_shape(body, "invalid_config")
    assert set(body["error"]["details"]["fields"]) == {"ratelimit.rules[1].key", "ratelimit.rules[2].key"}
    assert "can never apply" in body["error"]["details"]["fields"]["ratelimit.rules[1].key"]
    assert await (await client.get(CONFIG, headers=auth())).json() == {"version": 0, "config": DEFAULT}
    assert await audit_count(pg) == rows_before


async def test_a_rule_is_kept_when_one_route_it_matches_offers_its_key(client: TestClient) -> None:
    rules = [*DEFAULT["ratelimit"]["rules"],
             rule("mixed-candidate", ["exams.list", "registrations.get"], "candidate"),  # one candidate route
             rule("everywhere-candidate", ["*"], "candidate"),
             rule("elsewhere-candidate", ["no.such.route"], "candidate")]  # a route of another version, perhaps
    resp = await patch(client, {"ratelimit": {"rules": rules}})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["config"]["ratelimit"]["rules"] == rules
