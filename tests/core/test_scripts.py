"""Lua loader against real Redis: SHA computed locally, EVALSHA, NOSCRIPT reload, includes, both kinds of client."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.redis import AutoPipeline
from core.scripts import IncludeError, Script, ScriptClient, load_scripts, preload
from loadtest.processes import RedisServer, start_redis

LUA_PACKAGE = "tests.core.lua"


@pytest.fixture
def scripts() -> dict[str, Script]:
    """The fixture scripts in tests/core/lua."""
    return load_scripts(LUA_PACKAGE)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A redis-server of this module's own: SCRIPT FLUSH is server-wide, so never on a shared one."""
    owned = start_redis()
    yield owned
    owned.stop()


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """redis-py on the module's own server, flushed before the test."""
    client = aioredis.Redis.from_url(server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["autopipeline", "redis-py"])
async def client(request: pytest.FixtureRequest, server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[Any]:
    """Each test runs once through the AutoPipeline and once through redis-py."""
    if request.param == "autopipeline":
        pipeline = await AutoPipeline.connect(server.url)
        try:
            yield pipeline
        finally:
            await pipeline.close()
    else:
        yield redis


class _LoadCounter:
    """Counts SCRIPT LOADs a client sends."""

    def __init__(self, client: ScriptClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = client.script_load

        async def counting(source: str) -> Any:
            self.count += 1
            return await original(source)

        monkeypatch.setattr(client, "script_load", counting)


def test_load_scripts_reads_every_lua_file() -> None:
    scripts = load_scripts(LUA_PACKAGE)

    assert sorted(scripts) == ["add_and_echo", "bump_twice", "take_positive"]  # _bump.lua is a part, no script
    script = scripts["add_and_echo"]
    assert script.name == "add_and_echo"
    assert script.source.startswith("-- Add an amount")
    assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()


async def test_runs_by_sha_and_reloads_after_script_flush(
    client: ScriptClient, redis: aioredis.Redis, scripts: dict[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = scripts["add_and_echo"]
    loads = _LoadCounter(client, monkeypatch)
    await redis.script_flush()

    assert await script.run(client, ["eg:test:counter"], [5, "first"]) == [5, b"first"]
    assert loads.count == 1
    assert await redis.script_exists(script.sha) == [True]

    assert await script.run(client, ["eg:test:counter"], [2, "by-sha"]) == [7, b"by-sha"]
    assert loads.count == 1

    await redis.script_flush()
    assert await script.run(client, ["eg:test:counter"], [1, "reloaded"]) == [8, b"reloaded"]
    assert loads.count == 2
    assert await redis.get("eg:test:counter") == b"8"


async def test_preload_registers_every_script(
    client: ScriptClient, redis: aioredis.Redis, scripts: dict[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis.script_flush()

    await preload(client, scripts)

    assert await redis.script_exists(*(s.sha for s in scripts.values())) == [True] * len(scripts)
    loads = _LoadCounter(client, monkeypatch)
    await redis.set("eg:test:stock", 3)
    assert await scripts["take_positive"].run(client, ["eg:test:stock"], [2]) == 1
    assert loads.count == 0


async def test_concurrent_runs_after_flush_all_succeed(
    client: ScriptClient, redis: aioredis.Redis, scripts: dict[str, Script]
) -> None:
    script = scripts["add_and_echo"]
    await redis.script_flush()

    results = await asyncio.gather(*(script.run(client, ["eg:test:counter"], [1, str(i)]) for i in range(100)))

    assert sorted(value for value, _ in results) == list(range(1, 101))
    assert {tag for _, tag in results} == {str(i).encode() for i in range(100)}


async def test_script_error_reaches_only_its_caller(
    client: ScriptClient, redis: aioredis.Redis, scripts: dict[str, Script]
) -> None:
    take = scripts["take_positive"]
    await preload(client, scripts)
    await redis.set("eg:test:stock", 1)

    results = await asyncio.gather(
        take.run(client, ["eg:test:stock"], [5]),
        take.run(client, ["eg:test:stock"], [1]),
        scripts["add_and_echo"].run(client, ["eg:test:counter"], [1, "x"]),
        return_exceptions=True,
    )

    assert isinstance(results[0], ResponseError) and "EMPTY" in str(results[0])
    assert results[1:] == [0, [1, b"x"]]


def test_sha_is_that_of_the_source() -> None:
    script = Script("inline", "return 1")

    assert script.sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"


def test_include_is_expanded_and_hashed() -> None:
    script = load_scripts(LUA_PACKAGE)["bump_twice"]
    part = (Path(__file__).parent / "lua" / "_bump.lua").read_text(encoding="utf-8")

    assert "--#include" not in script.source
    assert script.source.startswith("-- Add an amount to a counter twice")  # the header stays first
    assert "-- Returns  the counter after both additions\n" + part + "bump(KEYS[1], ARGV[1])\n" in script.source
    assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()


async def test_included_script_runs_and_reloads_after_script_flush(
    client: ScriptClient, redis: aioredis.Redis, scripts: dict[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = scripts["bump_twice"]
    loads = _LoadCounter(client, monkeypatch)
    await redis.script_flush()

    assert await script.run(client, ["eg:test:counter"], [3]) == 6
    await redis.script_flush()
    assert await script.run(client, ["eg:test:counter"], [1]) == 8
    assert loads.count == 2
    assert await redis.script_exists(script.sha) == [True]


@pytest.mark.parametrize(("package", "files", "reason"), [
    ("lua_missing_part", {"main.lua": "--#include _gone.lua\nreturn 1\n"}, "no such _*.lua file in package"),
    ("lua_nested_part", {"main.lua": "--#include _a.lua\nreturn 1\n", "_a.lua": "--#include _b.lua\n",
                         "_b.lua": "local b = 1\n"}, "a shared part may not include another"),
])
def test_bad_include_names_the_script_and_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, files: dict[str, str], reason: str
) -> None:
    folder = tmp_path / package  # a package name of its own: the import system caches packages by name
    folder.mkdir()
    (folder / "__init__.py").write_text("", encoding="utf-8")
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(IncludeError, match=rf"{package}/main\.lua: --#include _[a-z]+\.lua: ") as raised:
        load_scripts(package)

    assert reason in str(raised.value) and raised.value.script == "main"
