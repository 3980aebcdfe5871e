"""Which of the project's files and functions a seat hold and a score lookup pass through, in how many round trips.

    .venv/bin/python scripts/call_path.py [--redis-url URL] [--json]

1. Makes a PostgreSQL database of its own (migrated, dropped at the end) and flushes the
   Redis database given by ``--redis-url``.
2. Builds the gateway in this process (``gateway.app.create_app``) behind aiohttp's test
   server, writes an exam, a candidate with an approved registration (only an approved one
   holds a seat) and a session, and an exam with a released score, with the test helpers
   (``tests/``); captcha and throttles are turned off for the lookup through the admin API,
   as its tests do.
3. Sends each request once untraced (catalogue, registration cache and Lua scripts warm),
   then once under ``sys.setprofile``: every call into a function whose code lives in the
   tree, outside ``.venv`` and this script, made on the loop's thread while the request is
   in flight, in the request's own tasks and in loop callbacks. Tasks already running
   before the request (the app's background loops, the client) are left out, and so are
   comprehensions, module bodies and the thread pools (hashing, PDFs). The seat hold traced
   is a take on the cached path: the warm-up's hold (which also granted the seat right in
   Redis from the approval in PostgreSQL, as after a restart) is given back (DELETE, untraced)
   first.
   The test server is aiohttp's own, so the guarded connections of ``gateway/serve.py`` are
   not on the path.
   The seat route has one candidate-keyed rate-limit rule, as at peak (and in the benchmark).
4. Counts the request's Redis round trips: the writes of the auto-pipelined clients (the
   main one and the limiter's) while it is in flight, grouped into rounds; a write starts a
   new round when a reply has come back since the previous write (writes with no reply
   between them travel together).
5. Prints per request the number of distinct files and functions, Redis writes and round
   trips, and ``path: func, …``.

The tree measured is the one ``gateway`` is imported from: ``PYTHONPATH=/other/tree``
measures another checkout (its ``tests/`` helpers included) with this venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

# Without PYTHONPATH, the tree this script sits in (its ``tests`` package is not installed).
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

PG_SERVER = os.environ.get("EXAMGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SEAT = "PUT /api/v1/registrations/{id}/seat"
SCORE = "POST /api/v1/scores/lookup"
SCORE_PROTECTED = "POST /api/v1/scores/lookup (captcha passed by a load-test token, an ip and an id-number rule)"
# Code objects that are not functions a reader would name: comprehensions (own frames on 3.11) and module bodies.
NOT_FUNCTIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<module>"})
# A new connection per request, so its server-side task starts inside the traced window.
CLOSE = {"Connection": "close"}


class CallPathError(Exception):
    """A set-up step or request did not answer as expected."""


@dataclass
class Trace:
    """Project functions called while a request was in flight, per file (paths relative to the tree)."""

    request: str
    status: int
    calls: dict[str, set[str]] = field(default_factory=dict)
    redis_writes: int = 0
    redis_round_trips: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The trace as JSON-ready data."""
        return {"request": self.request, "status": self.status, "files": len(self.calls),
                "functions": sum(len(funcs) for funcs in self.calls.values()),
                "redis_writes": self.redis_writes, "redis_round_trips": self.redis_round_trips,
                "calls": {path: sorted(funcs) for path, funcs in sorted(self.calls.items())}}


class RedisRounds:
    """Writes and replies of the auto-pipelined clients' connections while installed, as round trips."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __enter__(self) -> RedisRounds:
        from core.redis import _Connection

        self._send, self._received = _Connection.send, _Connection.data_received
        events, send, received = self.events, self._send, self._received

        def recording_send(conn: Any, *args: Any) -> None:
            events.append("write")
            send(conn, *args)

        def recording_received(conn: Any, data: bytes) -> None:
            events.append("reply")
            received(conn, data)

        _Connection.send, _Connection.data_received = recording_send, recording_received  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from core.redis import _Connection

        _Connection.send, _Connection.data_received = self._send, self._received  # type: ignore[method-assign]

    @property
    def writes(self) -> int:
        """Batches written."""
        return self.events.count("write")

    @property
    def round_trips(self) -> int:
        """Rounds of writes: a write after a reply (since the write before it) starts one."""
        rounds, replied = 0, True
        for event in self.events:
            if event == "write":
                rounds += replied
                replied = False
            else:
                replied = True
        return rounds


class CallRecorder:
    """A ``sys.setprofile`` hook recording calls into the tree's own code, outside some tasks."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._venv = root / ".venv"
        self._me = Path(__file__).resolve()
        self._where: dict[CodeType, tuple[str, str] | None] = {}
        self._ignored: set[asyncio.Task[Any]] = set()
        self.calls: set[tuple[str, str]] = set()

    def _place(self, code: CodeType) -> tuple[str, str] | None:
        """(path in the tree, qualified name) of a project function, else None."""
        if code.co_name in NOT_FUNCTIONS or code.co_filename.startswith("<"):
            return None
        path = Path(os.path.realpath(code.co_filename))
        if path == self._me or not path.is_relative_to(self._root) or path.is_relative_to(self._venv):
            return None
        return str(path.relative_to(self._root)), code.co_qualname

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        # "call" also fires each time a coroutine resumes: the set keeps one entry per function.
        if event != "call":
            return
        code = frame.f_code
        try:
            place = self._where[code]
        except KeyError:
            place = self._where[code] = self._place(code)
        if place is not None and asyncio.current_task() not in self._ignored:
            self.calls.add(place)

    async def trace(self, send: Callable[[], Awaitable[int]]) -> tuple[int, set[tuple[str, str]]]:
        """Run ``send`` (a request, answering its status) traced; tasks running before it are not."""
        self.calls = set()
        self._ignored = set(asyncio.all_tasks())
        sys.setprofile(self._profile)
        try:
            status = await send()
        finally:
            sys.setprofile(None)
        return status, self.calls


async def _expect(resp: Any, status: int, what: str) -> None:
    body = await resp.read()
    if resp.status != status:
        raise CallPathError(f"{what}: {resp.status} {body[:500].decode(errors='replace')}")


async def _trace(recorder: CallRecorder, name: str, request: Callable[[], Any], status: int,
                 between: Callable[[], Awaitable[None]] | None = None) -> Trace:
    """Send ``request`` once untraced (warm-up), run ``between``, then send it once traced."""
    await _expect(await request(), status, f"{name} (warm-up)")
    if between is not None:
        await between()

    async def send() -> int:
        resp = await request()
        await resp.read()
        return int(resp.status)

    await asyncio.sleep(0.05)  # the warm-up's connection closes outside the traced window
    with RedisRounds() as rounds:
        got, calls = await recorder.trace(send)
    if got != status:
        raise CallPathError(f"{name}: {got}, expected {status}")
    trace = Trace(name, got, redis_writes=rounds.writes, redis_round_trips=rounds.round_trips)
    for path, func in calls:
        trace.calls.setdefault(path, set()).add(func)
    return trace


async def _seat_hold(client: Any, pg: Any, redis_url: str, recorder: CallRecorder) -> Trace:
    """A candidate's seat hold on an open exam, traced once the warm-up's hold is given back (a take again)."""
    from gateway import keys
    from tests.factories import make_exam
    from tests.gateway.seat_stack import make_candidates, make_registrations, make_sessions

    exam_id = await make_exam(pg, sites=[("11", 10)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    await client.app[keys.CATALOGUE].refresh()
    # The sites route loads the exam's seat inventory into Redis (the worker's job otherwise).
    await _expect(await client.get(f"/api/v1/exams/{exam_id}/sites", headers=CLOSE), 200, "exam sites")
    await _candidate_rule(client)
    candidates = await make_candidates(pg, 1)
    (registration_id,) = await make_registrations(pg, exam_id, candidates, status="approved")
    (token,) = await make_sessions(redis_url, candidates)
    url = f"/api/v1/registrations/{registration_id}/seat"
    headers = {"Authorization": f"Bearer {token}", **CLOSE}

    async def hold() -> Any:
        return await client.put(url, json={"site_id": site_id}, headers=headers)

    async def release() -> None:
        await _expect(await client.delete(url, headers=headers), 204, "seat release")

    return await _trace(recorder, SEAT, hold, 200, between=release)


async def _score_lookup(client: Any, pg: Any, recorder: CallRecorder) -> Trace:
    """A released score looked up by name and id number."""
    from gateway import keys
    from tests.gateway.test_lookup_routes import make_results

    exam_id, (person,) = await make_results(pg, 1)
    await client.app[keys.CATALOGUE].refresh()
    body = {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}

    async def lookup() -> Any:
        return await client.post("/api/v1/scores/lookup", json=body, headers=CLOSE)

    return await _trace(recorder, SCORE, lookup, 200)


async def _candidate_rule(client: Any) -> None:
    """One generous candidate-keyed rule on the seat route: the limiter decides every hold, as at peak."""
    from gateway import keys
    from tests.gateway import candidate_http as h

    rule = {"id": "seat-candidate", "routes": ["registrations.seat.put"], "key": "candidate", "rate": 1000,
            "period_s": 60, "burst": 1000, "mode": "enforce", "on_redis_error": "open"}
    resp = await client.patch("/admin/api/v1/config", headers={**h.admin(), **CLOSE},
                              json={"ratelimit": {"rules": [rule]}})
    await _expect(resp, 200, "live config")
    await client.app[keys.LIVE].refresh()


async def _protected_lookup(client: Any, pg: Any, recorder: CallRecorder) -> Trace:
    """The score lookup as at peak: captcha on (passed with a load-test token), an ip and an id-number rule."""
    from gateway import keys
    from tests.gateway import candidate_http as h
    from tests.gateway.test_lookup_routes import make_results

    generous = {"rate": 1000, "period_s": 60, "burst": 1000, "mode": "enforce", "on_redis_error": "open"}
    resp = await client.patch("/admin/api/v1/config", headers={**h.admin(), **CLOSE}, json={
        "captcha": {"routes": {"scores.lookup": "either"}},
        "ratelimit": {"rules": [{"id": "lookup-ip", "routes": ["scores.lookup"], "key": "ip", **generous},
                                {"id": "lookup-id", "routes": ["scores.lookup"], "key": "id_number", **generous}]}})
    await _expect(resp, 200, "live config")
    await client.app[keys.LIVE].refresh()
    resp = await client.post("/admin/api/v1/loadtest-tokens", headers={**h.admin(), **CLOSE},
                             json={"ttl_s": 600, "name": "call-path"})
    await _expect(resp, 201, "load-test token")
    token = (await resp.json())["token"]
    exam_id, (person,) = await make_results(pg, 1)
    await client.app[keys.CATALOGUE].refresh()
    body = {"exam_id": exam_id, "name": person["name"], "id_number": person["id_number"]}

    async def lookup() -> Any:
        return await client.post("/api/v1/scores/lookup", json=body, headers={"X-Loadtest-Token": token, **CLOSE})

    return await _trace(recorder, SCORE_PROTECTED, lookup, 200)


async def _relax_lookups(client: Any) -> None:
    """Captcha off for the lookups and no throttle rules (none applies to the seat hold anyway)."""
    from gateway import keys
    from tests.gateway import candidate_http as h

    resp = await client.patch("/admin/api/v1/config", headers={**h.admin(), **CLOSE}, json={
        "captcha": {"routes": {"tickets.lookup": "off", "scores.lookup": "off"}}, "ratelimit": {"rules": []}})
    await _expect(resp, 200, "live config")
    await client.app[keys.LIVE].refresh()


def _tree() -> Path:
    """The checkout ``gateway`` comes from; its ``tests`` must come from the same one."""
    import gateway
    import tests

    root = Path(os.path.realpath(gateway.__file__)).parents[1]
    tests_root = Path(os.path.realpath(tests.__file__)).parents[1]
    if tests_root != root:
        raise CallPathError(f"gateway is imported from {root} but tests from {tests_root}: set PYTHONPATH")
    return root


async def measure(redis_url: str, pg_server: str = PG_SERVER) -> list[Trace]:
    """Trace one seat hold and one score lookup on a fresh database and the flushed Redis db ``redis_url``."""
    import asyncpg
    import redis.asyncio as aioredis
    from aiohttp.test_utils import TestClient, TestServer

    from core import db, migrate
    from gateway.app import create_app
    from tests.gateway import candidate_http as h

    recorder = CallRecorder(_tree())
    dsn = db.with_database(pg_server, f"examgate_callpath_{os.getpid()}_{secrets.token_hex(3)}")
    await migrate.create_and_migrate(dsn)
    try:
        store = aioredis.Redis.from_url(redis_url)
        try:
            await store.flushdb()
        finally:
            await store.aclose()
        with tempfile.TemporaryDirectory(prefix="examgate-callpath-") as run_dir:
            client = TestClient(TestServer(create_app(h.settings(dsn, redis_url, Path(run_dir)))))
            await client.start_server()
            pg = await asyncpg.connect(dsn)
            try:
                seat = await _seat_hold(client, pg, redis_url, recorder)
                await _relax_lookups(client)
                score = await _score_lookup(client, pg, recorder)
                protected = await _protected_lookup(client, pg, recorder)
            finally:
                await pg.close()
                await client.close()
        return [seat, score, protected]
    finally:
        await db.drop_database(dsn)


def _text(traces: list[Trace]) -> str:
    lines = []
    for trace in traces:
        data = trace.as_dict()
        lines.append(f"{data['request']} ({data['status']}): {data['files']} files, {data['functions']} functions, "
                     f"{data['redis_round_trips']} Redis round trips ({data['redis_writes']} writes)")
        lines.extend(f"  {path}: {', '.join(funcs)}" for path, funcs in data["calls"].items())
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print; 1 when a set-up step or request fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help=f"Redis database to use, flushed first (default {DEFAULT_REDIS_URL})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args(argv)
    try:
        traces = asyncio.run(measure(options.redis_url))
    except CallPathError as exc:
        print(f"call_path: {exc}", file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps({"requests": [t.as_dict() for t in traces]}, ensure_ascii=False, indent=2))
    else:
        print(_text(traces), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
