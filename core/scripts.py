"""Lua scripts shipped as package data: read once, called by SHA, reloaded on NOSCRIPT.

A script may share code with its siblings: a line ``--#include _name.lua`` is replaced, when
the package is loaded, by the text of that file of the same package. Files whose name starts
with ``_`` are such shared parts, never scripts of their own. Redis sees (and hashes) only the
expanded text, so EVALSHA, SCRIPT LOAD and the NOSCRIPT reload work on it unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from core.redis import AutoPipeline

__all__ = ["IncludeError", "Script", "ScriptClient", "load_scripts", "preload"]

ScriptClient = AutoPipeline | aioredis.Redis

_INCLUDE = re.compile(r"^--#include[ \t]+(\S+)[ \t]*$", re.MULTILINE)


class IncludeError(ValueError):
    """A script's ``--#include`` names no shared part (``_*.lua``) of its package, or one that includes another."""

    def __init__(self, package: str, script: str, include: str, reason: str) -> None:
        super().__init__(f"{package}/{script}.lua: --#include {include}: {reason}")
        self.package = package
        self.script = script
        self.include = include


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
    """Every ``*.lua`` script shipped in ``package``, keyed by file name without ``.lua``, includes expanded."""
    files = {entry.name: entry.read_text(encoding="utf-8")
             for entry in resources.files(package).iterdir() if entry.name.endswith(".lua") and entry.is_file()}
    parts = {name: text for name, text in files.items() if name.startswith("_")}
    scripts: dict[str, Script] = {}
    for file_name in sorted(files.keys() - parts.keys()):
        name = file_name.removesuffix(".lua")
        scripts[name] = Script(name, _expand(package, name, files[file_name], parts))
    return scripts


def _expand(package: str, script: str, source: str, parts: Mapping[str, str]) -> str:
    """``source`` with each ``--#include`` line replaced by its part's text (one level: parts include nothing)."""
    def part(match: re.Match[str]) -> str:
        include = match.group(1)
        if include not in parts:
            raise IncludeError(package, script, include, f"no such _*.lua file in package {package}")
        if _INCLUDE.search(parts[include]):
            raise IncludeError(package, script, include, "a shared part may not include another")
        return parts[include].removesuffix("\n")

    return _INCLUDE.sub(part, source)


async def preload(client: ScriptClient, scripts: Mapping[str, Script] | Iterable[Script]) -> None:
    """SCRIPT LOAD every script, so the first calls at peak don't pay a NOSCRIPT round trip."""
    items = scripts.values() if isinstance(scripts, Mapping) else scripts
    await asyncio.gather(*(script.load(client) for script in items))
