"""The live config in Redis (versioned, check-and-set), audited in PostgreSQL, applied by every process.

Redis hash ``eg:config`` holds ``version`` and ``doc`` together; a change is stored only if
the version is still the one it was made against, so two concurrent changes cannot both win.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
from typing import Any, Awaitable, Callable

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from core.scripts import Script, load_scripts
from gateway.liveconfig import (
    DEFAULT,
    InvalidConfig,
    LiveConfig,
    LiveConfigError,
    diff,
    merge_patch,
    validate,
)

log = logging.getLogger("examgate.liveconfig")

CONFIG_KEY = "eg:config"
CHANNEL = "eg:config:changed"
_REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

Listener = Callable[[LiveConfig], "Awaitable[None] | None"]


class VersionMismatch(LiveConfigError):
    """The change was made against a version that is no longer current."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the config is at version {current}")
        self.current = current


class ConfigCorrupt(LiveConfigError):
    """The stored document is not a JSON object (written around the API)."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"stored config version {version} is unreadable: {reason}")
        self.version = version
        self.reason = reason


@functools.cache
def _cas_script() -> Script:
    return load_scripts("gateway")["config_cas"]


def _decode(version: bytes | None, raw: bytes | None) -> tuple[int, dict[str, Any]]:
    """(version, document) from the hash fields; DEFAULT at version 0 when nothing is stored."""
    try:
        number = int(version or 0)
    except ValueError:
        raise ConfigCorrupt(0, "the version is not a number") from None
    if raw is None:
        if number:
            raise ConfigCorrupt(number, "the document is missing")
        return 0, copy.deepcopy(DEFAULT)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigCorrupt(number, str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigCorrupt(number, "the document is not a JSON object")
    return number, doc


class ConfigStore:
    """Reads, changes (validated, check-and-set, audited, published) and lists changes of the live config."""

    def __init__(self, redis: aioredis.Redis, pg: asyncpg.Pool, *, key: str = CONFIG_KEY,
                 channel: str = CHANNEL, attempts: int = 10) -> None:
        self._redis = redis
        self._pg = pg
        self._key = key
        self._channel = channel
        self._attempts = attempts

    async def get(self) -> tuple[int, dict[str, Any]]:
        """The stored (version, document); raises ConfigCorrupt when it cannot be read."""
        version, raw = await self._redis.hmget(self._key, ["version", "doc"])
        return _decode(version, raw)

    async def _current(self) -> tuple[int, dict[str, Any]]:
        # A corrupt document can still be replaced: the patch then has to be a whole valid document.
        try:
            return await self.get()
        except ConfigCorrupt as exc:
            return exc.version, {}

    async def patch(self, patch: dict[str, Any], actor: str, if_match: int | None = None) -> LiveConfig:
        """Apply a JSON merge patch; raises InvalidConfig (nothing stored) or VersionMismatch.

        Without ``if_match`` a change that loses a race is re-merged onto the winner and retried.
        A patch that changes nothing stores no new version.
        """
        for _ in range(self._attempts):
            version, current = await self._current()
            if if_match is not None and if_match != version:
                raise VersionMismatch(version)
            merged = merge_patch(current, patch)
            live = validate(merged, version + 1)
            changes = diff(current, merged)
            if not changes:
                return validate(current, version)
            try:
                await self._store(version, merged, actor, changes)
            except VersionMismatch:
                if if_match is not None:
                    raise
                continue
            try:
                await self._redis.publish(self._channel, str(version + 1))
            except _REDIS_DOWN as exc:  # the version poll of every process still finds it
                log.warning("config version %d stored but not published: %r", version + 1, exc)
            log.info("config version %d by %s: %d change(s)", version + 1, actor, len(changes))
            return live
        raise VersionMismatch((await self._current())[0])

    async def _store(self, version: int, doc: dict[str, Any], actor: str, changes: list[dict[str, Any]]) -> None:
        # The audit row commits only if the check-and-set won: no unaudited change, no phantom row.
        async with self._pg.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO config_audit (version, actor, diff, config) VALUES ($1, $2, $3, $4)",
                version + 1, actor, changes, doc,
            )
            stored, current = await _cas_script().run(self._redis, [self._key], [version, orjson.dumps(doc)])
            if not stored:
                raise VersionMismatch(int(current))

    async def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest changes, newest first: version, actor, changed_at, diff."""
        async with self._pg.acquire() as conn:
            rows = await conn.fetch(
                "SELECT version, actor, changed_at, diff FROM config_audit ORDER BY id DESC LIMIT $1", limit
            )
        return [dict(row) for row in rows]

    async def rebuild(self) -> int | None:
        """Put the last audited config back into an empty Redis; the version restored, or None."""
        async with self._pg.acquire() as conn:
            row = await conn.fetchrow("SELECT version, config FROM config_audit ORDER BY id DESC LIMIT 1")
        if row is None:
            return None
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self._key)
            if await pipe.exists(self._key):
                return None
            pipe.multi()
            pipe.hset(self._key, mapping={"version": row["version"], "doc": orjson.dumps(row["config"])})
            try:
                await pipe.execute()
            except WatchError:  # a change was stored meanwhile; it wins
                return None
        await self._redis.publish(self._channel, str(row["version"]))
        return int(row["version"])


class LiveConfigWatcher:
    """This process's live config: follows the stored one (pub/sub plus a version poll), keeps the last good."""

    def __init__(self, redis: aioredis.Redis, poll_interval_s: float = 0.5, *, key: str = CONFIG_KEY,
                 channel: str = CHANNEL) -> None:
        self.current: LiveConfig = validate(DEFAULT, 0)
        self._redis = redis
        self._poll_interval_s = poll_interval_s
        self._key = key
        self._channel = channel
        self._listeners: list[Listener] = []
        self._rejected: bytes | None = None
        self._lock = asyncio.Lock()

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(config)`` (plain or async) after every applied change."""
        self._listeners.append(callback)

    async def refresh(self) -> bool:
        """Apply the stored config if its version differs from ours; True when a new one was applied."""
        async with self._lock:
            version = await self._redis.hget(self._key, "version")
            # Nothing stored (a flushed or replaced Redis): keep what we have rather than fall back.
            if version is None or version in (b"%d" % self.current.version, self._rejected):
                return False
            raw_version, raw = await self._redis.hmget(self._key, ["version", "doc"])
            try:
                number, doc = _decode(raw_version, raw)
                live = validate(doc, number)
            except (ConfigCorrupt, InvalidConfig) as exc:
                self._rejected = raw_version
                log.error("config version %r rejected, keeping version %d: %s",
                          raw_version, self.current.version, exc)
                return False
            self.current, self._rejected = live, None
        log.info("config version %d applied", live.version)
        for listener in self._listeners:
            try:
                result = listener(live)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("config listener %r failed", listener)
        return True

    async def run(self) -> None:
        """Follow changes until cancelled: pub/sub for speed, the version poll in case a message is lost."""
        await asyncio.gather(self._follow_channel(), self._poll())

    async def _poll(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except _REDIS_DOWN as exc:
                if not failing:
                    log.warning("cannot read the live config, keeping version %d: %r", self.current.version, exc)
                failing = True
            except Exception:  # never stop following changes; the next round may succeed
                log.exception("live config poll failed, keeping version %d", self.current.version)
            await asyncio.sleep(self._poll_interval_s)

    async def _follow_channel(self) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                backoff_s = 0.1
                await self.refresh()  # changes published while we were not subscribed
                while True:
                    if await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is not None:
                        await self.refresh()
            except Exception as exc:
                if not isinstance(exc, _REDIS_DOWN):
                    log.exception("live config subscription failed; resubscribing")
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except _REDIS_DOWN:
                    pass
