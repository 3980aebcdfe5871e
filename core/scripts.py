"""Lua scripts shipped as package data: read once, called by SHA, reloaded on NOSCRIPT."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Union

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from core.redis import AutoPipeline

__all__ = ["Script", "ScriptClient", "load_scripts", "preload"]

ScriptClient = Union[AutoPipeline, aioredis.Redis]


@dataclass(frozen=True)
class Script:
    """One Lua script; it touches only the KEYS and ARGV its caller passes."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    async def run(self, client: ScriptClient, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """EVALSHA through ``client``; on NOSCRIPT load the script and retry once."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def submit(self, client: ScriptClient, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> asyncio.Future[Any]:
        """EVALSHA issued now, its reply a future; pass that to ``result`` (which handles NOSCRIPT).

        On an ``AutoPipeline`` this costs no coroutine and no Task, so several commands of one
        request go out in one batch and are awaited one after the other; another client runs
        ``run`` in a Task.
        """
        if isinstance(client, AutoPipeline):
            return client.submit(b"EVALSHA", self.sha, len(keys), *keys, *args)
        return asyncio.ensure_future(self.run(client, keys, args))

    async def result(
        self, client: ScriptClient, pending: asyncio.Future[Any], keys: Sequence[Any] = (), args: Sequence[Any] = ()
    ) -> Any:
        """The reply of a ``submit``ted call with the same ``keys`` and ``args``; on NOSCRIPT load and retry once."""
        try:
            return await pending
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self, client: ScriptClient) -> None:
        """SCRIPT LOAD, checking Redis computed the same SHA1."""
        sha = await client.script_load(self.source)
        if isinstance(sha, bytes):
            sha = sha.decode()
        if sha != self.sha:
            raise ResponseError(f"SCRIPT LOAD of {self.name} returned {sha}, expected {self.sha}")


def load_scripts(package: str) -> dict[str, Script]:
    """Every ``*.lua`` file shipped in ``package``, keyed by file name without ``.lua``."""
    scripts: dict[str, Script] = {}
    for entry in sorted(resources.files(package).iterdir(), key=lambda entry: entry.name):
        if entry.name.endswith(".lua") and entry.is_file():
            name = entry.name.removesuffix(".lua")
            scripts[name] = Script(name, entry.read_text(encoding="utf-8"))
    return scripts


async def preload(client: ScriptClient, scripts: Mapping[str, Script] | Iterable[Script]) -> None:
    """SCRIPT LOAD every script, so the first calls at peak don't pay a NOSCRIPT round trip."""
    items = scripts.values() if isinstance(scripts, Mapping) else scripts
    await asyncio.gather(*(script.load(client) for script in items))
