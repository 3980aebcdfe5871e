"""The route table's registrar and candidate wrapper, on a real app with a real session store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from gateway import auth, keys, routing
from gateway.app import create_app
from gateway.edge import CATCH_ALL
from gateway.routes import modules
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import make_candidates, make_sessions


def _table() -> routing.Routes:
    routes = routing.Routes("Test")

    @routes.get("/test/resolved", "test.resolved", caller=routing.CANDIDATE)
    async def resolved(request: web.Request) -> web.Response:
        """The candidate, known before the handler runs."""
        return web.json_response({"candidate": request[auth.CANDIDATE_ID]})

    @routes.get("/test/batched", "test.batched", caller=routing.CANDIDATE, session=routing.BATCHED)
    async def batched(request: web.Request) -> web.Response:
        """The candidate, learnt by the handler."""
        if request.query.get("fail"):
            raise web.HTTPNotFound()  # before finishing the lookup: nothing left pending
        if request.query.get("forget"):
            return web.json_response({})  # a bug: answers without learning who asks
        return web.json_response({"candidate": await auth.signed_in(request)})

    return routes


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, tmp_path: Path) -> Any:
    app = create_app(h.settings(pg_dsn, redis_url, tmp_path))
    routing.register(app, [_table()])
    return await aiohttp_client(app)


async def test_every_module_declares_its_routes_and_every_route_is_declared(client: Any) -> None:
    assert all(hasattr(module, "routes") for module in modules(bench=True))
    declared = client.app[routing.OPERATION]
    for route in client.app.router.routes():
        if route.method != "HEAD" and route.resource.canonical != CATCH_ALL:  # the catch-all answers 404/405
            assert route.name in declared, route.name


async def test_the_candidate_wrapper(client: Any, pg: asyncpg.Connection, redis_url: str) -> None:
    [candidate] = await make_candidates(pg, 1)
    [token] = await make_sessions(redis_url, [candidate])
    signed_in = {"Authorization": f"Bearer {token}"}
    for path in ("/test/resolved", "/test/batched"):
        assert (await client.get(path)).status == 401  # no token: refused before the handler
        bad = await client.get(path, headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        ok = await client.get(path, headers=signed_in)
        assert (await ok.json()) == {"candidate": candidate}
    assert (await client.get("/test/batched?fail=1", headers=signed_in)).status == 404
    forgot = await client.get("/test/batched?forget=1", headers=signed_in)
    assert forgot.status == 500  # the wrapper does not let a route skip the session (and its rules)


async def test_candidate_keyed_rules_hold_on_every_candidate_route(client: Any, pg: asyncpg.Connection,
                                                                  redis_url: str) -> None:
    [candidate] = await make_candidates(pg, 1)
    [token] = await make_sessions(redis_url, [candidate])
    rule = {"id": "per-candidate", "routes": ["test.*"], "key": "candidate", "rate": 1, "period_s": 3600, "burst": 2,
            "mode": "enforce", "on_redis_error": "local"}
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={"ratelimit": {"rules": [rule]}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    for path in ("/test/resolved", "/test/batched"):
        statuses = [(await client.get(path, headers={"Authorization": f"Bearer {token}"})).status for _ in range(3)]
        assert statuses[-1] == 429, (path, statuses)


def test_a_candidate_route_always_offers_the_candidate_subject() -> None:
    routes = routing.Routes("Test")

    async def handler(request: web.Request) -> web.Response:
        """A handler."""
        return web.Response()

    with pytest.raises(ValueError, match="candidate subject"):
        routes.add("GET", "/x", "x", handler, caller=routing.CANDIDATE, limits=("ip",))
    assert routes.add("POST", "/y", "y", handler, limits=("ip", "account")).decides_limits_in_handler
    assert routes.add("GET", "/z", "z", handler).shedding_class == "candidate_read"


async def test_a_seen_session_has_its_rules_decided_beside_its_lookup(client: Any, pg: asyncpg.Connection,
                                                                      redis_url: str) -> None:
    """The first request of a session decides its candidate's rules after the lookup, the next ones beside it
    (sent before the lookup's reply is awaited); the budget is spent exactly; a dead session is 401 first."""
    candidates = await make_candidates(pg, 2)
    mine, other = await make_sessions(redis_url, candidates)
    rule = {"id": "per-candidate", "routes": ["test.*"], "key": "candidate", "rate": 1, "period_s": 3600, "burst": 5,
            "mode": "enforce", "on_redis_error": "local"}
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json={"ratelimit": {"rules": [rule]}})
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()
    limiter, events = client.app[keys.LIMITER], []
    submit, finish = limiter.submit, auth.sessions.finish_resolve

    def recording_submit(*args: Any, **kwargs: Any) -> Any:
        events.append("rules")
        return submit(*args, **kwargs)

    async def recording_finish(*args: Any, **kwargs: Any) -> Any:
        events.append("lookup awaited")
        return await finish(*args, **kwargs)

    limiter.submit = recording_submit
    auth.sessions.finish_resolve = recording_finish  # type: ignore[assignment]
    try:
        statuses = []
        for _ in range(7):
            events.clear()
            statuses.append((await client.get("/test/resolved", headers={"Authorization": f"Bearer {mine}"})).status)
            if len(statuses) == 1:
                assert events == ["lookup awaited", "rules"]  # not seen yet: one round trip after the other
            elif statuses[-1] == 200:
                assert events == ["rules", "lookup awaited"]  # seen: both in one round trip
        assert statuses == [200] * 5 + [429] * 2  # the burst, exactly
        # Another candidate's budget is untouched; a forged token spends nobody's.
        assert (await client.get("/test/batched", headers={"Authorization": "Bearer " + "x" * 43})).status == 401
        assert (await client.get("/test/batched", headers={"Authorization": f"Bearer {other}"})).status == 200
        # Signed out (the session gone from Redis): 401, however the rules would have answered.
        await client.app[keys.REDIS_PY].flushdb()
        assert (await client.get("/test/resolved", headers={"Authorization": f"Bearer {mine}"})).status == 401
        # Forgotten once found dead: a stolen signed-out token no longer spends its owner's budget.
        events.clear()
        assert (await client.get("/test/resolved", headers={"Authorization": f"Bearer {mine}"})).status == 401
        assert events == ["lookup awaited"]
    finally:
        limiter.submit = submit
        auth.sessions.finish_resolve = finish  # type: ignore[assignment]


async def test_an_operations_template_is_aiohttps_name_for_its_resource(client: Any) -> None:
    """The metric label and the documented path: regexes with braces of their own (``{1,10}``) left out whole."""
    declared = client.app[routing.OPERATION]
    for route in client.app.router.routes():
        if route.name in declared:
            assert declared[route.name].template == route.resource.canonical, route.name
