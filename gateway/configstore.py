"""The live config in Redis (versioned, check-and-set), audited in PostgreSQL, applied by every process.

Redis hash ``eg:config`` holds ``version`` and ``doc`` together; a change is stored only if
the version is still the one it was made against, so two concurrent changes cannot both win.
The audit is the source of truth: when Redis loses its data (an empty restart, an old
snapshot) the newest audited config is restored into it before anything else is stored or
applied, so versions keep growing and no process falls back to the defaults.

A change is announced on ``CHANNEL`` (PUBLISH; every process SUBSCRIBEs). On a Redis Cluster it is
sharded pub/sub instead: SPUBLISH and SSUBSCRIBE on ``shard_channel(key)``, whose hash tag is the
config key, so the channel lives on the node holding the config. Plain pub/sub does cross a cluster
(every node relays a PUBLISH), but redis-py's asyncio ``ClusterPubSub`` subscribes on the node its
slot map names and never refreshes that map itself: once that node had failed over, every
resubscription went to its dead address again and the watcher heard no further change (unless its
version poll happened to read that node), and on a client yet to send a command it failed outright
(no map). A sharded subscription is placed by the same map, so before each one the watcher reads the
config key, a command to the channel's own node: a new client gets its map from that read, and after
a failover it is that read failing which makes redis-py refresh the map, so the SSUBSCRIBE goes to
the master holding the slot now. A sharded message also stays on its shard instead of crossing the
whole cluster bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis import REDIS_DOWN
from core.redis_cluster import is_cluster
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
_AUDIT_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)
REBUILD_TIMEOUT_S = 3.0
# The newest row is the config in force. Its version is the highest one except in audits written
# before versions were enforced (0004_config_versions); the highest is taken, so changes go on above it.
_NEWEST_AUDITED = """SELECT (SELECT max(version) FROM config_audit) AS version, config
                       FROM config_audit ORDER BY id DESC LIMIT 1"""

Listener = Callable[[LiveConfig], "Awaitable[None] | None"]
Rebuild = Callable[[], Awaitable[int]]
NewestAudited = Callable[[], Awaitable["tuple[int, dict[str, Any]] | None"]]


def shard_channel(key: str) -> str:
    """The channel announcing changes of ``key`` on a Redis Cluster: in ``key``'s slot (module docstring)."""
    return "{" + key + "}:changed"


def _channel(redis: aioredis.Redis, key: str, channel: str | None) -> str:
    if channel is not None:
        return channel
    return shard_channel(key) if is_cluster(redis) else CHANNEL


async def _announce(redis: aioredis.Redis, channel: str, version: int) -> None:
    """Tell every watcher that ``version`` is stored: SPUBLISH on a cluster, PUBLISH otherwise."""
    if is_cluster(redis):
        await redis.spublish(channel, str(version))
    else:
        await redis.publish(channel, str(version))


class VersionMismatch(LiveConfigError):
    """The change was made against a version that is no longer current."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the config is at version {current}")
        self.current = current


class _BehindAudit(LiveConfigError):
    """Redis holds an older version than the audit: it lost its data, restore before changing."""


class ConfigCorrupt(LiveConfigError):
    """The stored document is not a JSON object (written around the API)."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"stored config version {version} is unreadable: {reason}")
        self.version = version
        self.reason = reason


@functools.cache
def _cas_script() -> Script:
    return load_scripts("gateway")["config_cas"]


@functools.cache
def _restore_script() -> Script:
    return load_scripts("gateway")["config_restore"]


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
                 channel: str | None = None, attempts: int = 10) -> None:
        self._redis = redis
        self._pg = pg
        self._key = key
        self._channel = _channel(redis, key, channel)
        self._attempts = attempts

    async def get(self) -> tuple[int, dict[str, Any]]:
        """The stored (version, document), restored from the audit if Redis has none; raises ConfigCorrupt."""
        # The client does not decode replies: the fields come back as bytes (None when absent).
        version, raw = cast("list[bytes | None]", await self._redis.hmget(self._key, ["version", "doc"]))
        if version is None and raw is None and await self.rebuild():
            version, raw = cast("list[bytes | None]", await self._redis.hmget(self._key, ["version", "doc"]))
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
            except _BehindAudit:
                await self.rebuild()  # then merge again onto the audited config
                continue
            except VersionMismatch:
                if if_match is not None:
                    raise
                continue
            try:
                await _announce(self._redis, self._channel, version + 1)
            except REDIS_DOWN as exc:  # the version poll of every process still finds it
                log.warning("config version %d stored but not published: %r", version + 1, exc)
            log.info("config version %d by %s: %d change(s)", version + 1, actor, len(changes))
            return live
        raise VersionMismatch((await self._current())[0])

    async def _store(self, version: int, doc: dict[str, Any], actor: str, changes: list[dict[str, Any]]) -> None:
        # The audit row commits only if the check-and-set won: no unaudited change, no phantom row.
        # The table lock (the audit's notes take it too) keeps the audited version read here the
        # newest until this change commits; a Redis behind it lost its data and is restored first.
        async with self._pg.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE config_audit IN SHARE ROW EXCLUSIVE MODE")
            audited = await conn.fetchval("SELECT coalesce(max(version), 0) FROM config_audit")
            if version < audited:
                raise _BehindAudit()
            await conn.execute(
                "INSERT INTO config_audit (version, actor, diff, config) VALUES ($1, $2, $3, $4)",
                version + 1, actor, changes, doc,
            )
            stored, current = await _cas_script().run(self._redis, [self._key],
                                                      [version, orjson.dumps(doc), audited])
            if stored == -1:
                raise _BehindAudit()
            if not stored:
                raise VersionMismatch(int(current))

    async def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest changes, newest first: version, actor, changed_at, diff."""
        async with self._pg.acquire() as conn:
            rows = await conn.fetch(
                "SELECT version, actor, changed_at, diff FROM config_audit ORDER BY id DESC LIMIT $1", limit
            )
        return [dict(row) for row in rows]

    async def newest_audited(self) -> tuple[int, dict[str, Any]] | None:
        """The newest audited (version, document), from PostgreSQL alone; None when nothing was ever audited."""
        async with self._pg.acquire() as conn:
            row = await conn.fetchrow(_NEWEST_AUDITED)
        return None if row is None else (int(row["version"]), row["config"])

    async def rebuild(self) -> int:
        """Restore the newest audited config into Redis unless it holds that version or a newer one.

        Returns the newest audited version, 0 when nothing was ever audited (the defaults are in
        force). Any number of processes may call it at once: the restore script lets one write.
        """
        async with self._pg.acquire() as conn:
            row = await conn.fetchrow(_NEWEST_AUDITED)
        if row is None:
            return 0
        version = int(row["version"])
        if await _restore_script().run(self._redis, [self._key], [version, orjson.dumps(row["config"])]):
            log.warning("config version %d restored from the audit: Redis held an older one or none", version)
            with contextlib.suppress(*REDIS_DOWN):  # the version poll of every process finds it too
                await _announce(self._redis, self._channel, version)
        return version


class LiveConfigWatcher:
    """This process's live config: follows the stored one (pub/sub plus a version poll), keeps the last good.

    ``known`` is False until a config this process can trust is applied, and again from the
    moment Redis is found to have lost its data until the audit has been read (``rebuild``):
    meanwhile the guarded routes refuse rather than run on defaults or on an outdated config.
    """

    def __init__(self, redis: aioredis.Redis, poll_interval_s: float = 0.5, *, key: str = CONFIG_KEY,
                 channel: str | None = None, rebuild: Rebuild | None = None,
                 newest_audited: NewestAudited | None = None) -> None:
        self.current: LiveConfig = validate(DEFAULT, 0)
        self.known = False
        self._redis = redis
        self._poll_interval_s = poll_interval_s
        self._key = key
        self._channel = _channel(redis, key, channel)
        self._sharded = is_cluster(redis)
        self._rebuild = rebuild
        self._newest_audited = newest_audited
        self._listeners: list[Listener] = []
        self._rejected: bytes | None = None
        self._audit_failing = False
        self._lock = asyncio.Lock()

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(config)`` (plain or async) after every applied change."""
        self._listeners.append(callback)

    async def refresh(self, *, ask_audit: bool = False) -> bool:
        """Apply the stored config if it differs from ours; True when one was applied.

        With ``rebuild``, Redis holding no config or an older one than ours has lost its data:
        the audit is read and restored into Redis before anything is applied. ``ask_audit``
        reads it in any case (at start and after a reconnect, when Redis may have restarted).
        Without ``rebuild``, nothing stored means keep what we have.
        """
        async with self._lock:
            live = await self._read(ask_audit)
        if live is None:
            return False
        log.info("config version %d applied", live.version)
        await self._notify(live)
        return True

    async def _notify(self, live: LiveConfig) -> None:
        for listener in self._listeners:
            try:
                result = listener(live)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("config listener %r failed", listener)

    async def _apply_newest_audited(self) -> None:
        """With Redis away and no config known, apply the newest audited one straight from PostgreSQL.

        The audit is the config's source of truth: a process that starts, or first learns its
        config, while Redis is down serves on what operators last set rather than refusing.
        """
        if self._newest_audited is None:
            return
        try:
            newest = await asyncio.wait_for(self._newest_audited(), REBUILD_TIMEOUT_S)
            live = validate(DEFAULT, 0) if newest is None else validate(newest[1], newest[0])
        except _AUDIT_DOWN:
            return
        except InvalidConfig as exc:
            log.error("the newest audited config is invalid, the guarded routes stay refused: %s", exc)
            return
        async with self._lock:
            if self.known:
                return
            self.current, self.known = live, True
        log.warning("Redis unreachable: config version %d applied from the audit", live.version)
        await self._notify(live)

    async def _read(self, ask_audit: bool) -> LiveConfig | None:
        """The config to apply now (made ``current``), or None to keep ours."""
        # The client does not decode replies: the fields come back as bytes (None when absent).
        version = cast("bytes | None", await self._redis.hget(self._key, "version"))
        lost = self._lost(version)
        if lost or (ask_audit and self._rebuild is not None):
            if lost and self.known:
                self.known = False
                log.warning("Redis holds config version %r, this process applied %d: the config is unknown "
                            "until the audit is read", version, self.current.version)
            audited = await self._read_audit()
            if audited is None and lost:
                return None
            if audited is not None:
                version = cast("bytes | None", await self._redis.hget(self._key, "version"))
                if version is None and audited == 0 and not (self.known and self.current.version == 0):
                    # Nothing was ever stored anywhere: the defaults are the config.
                    self.current, self.known = validate(DEFAULT, 0), True
                    return self.current
        if version is None or version == self._rejected or (self.known and version == b"%d" % self.current.version):
            return None
        raw_version, raw = cast("list[bytes | None]", await self._redis.hmget(self._key, ["version", "doc"]))
        if raw_version is None:  # emptied since: the next round sees the loss
            return None
        try:
            number, doc = _decode(raw_version, raw)
            live = validate(doc, number)
        except (ConfigCorrupt, InvalidConfig) as exc:
            self._rejected = raw_version
            log.error("config version %r rejected, keeping version %d: %s", raw_version, self.current.version, exc)
            return None
        self.current, self._rejected, self.known = live, None, True
        return live

    def _lost(self, version: bytes | None) -> bool:
        """True when Redis, which the audit can restore, cannot be holding our config or a newer one."""
        if self._rebuild is None:
            return False
        if version is None:
            # Nothing stored is expected only while the defaults are in force (nothing was ever stored).
            return not self.known or self.current.version > 0
        try:
            return int(version) < self.current.version
        except ValueError:
            return False

    async def _read_audit(self) -> int | None:
        """The newest audited version, restored into Redis if it was behind; None when PostgreSQL cannot be read."""
        assert self._rebuild is not None
        try:
            audited = await asyncio.wait_for(self._rebuild(), REBUILD_TIMEOUT_S)
        except _AUDIT_DOWN as exc:
            if not self._audit_failing:
                log.warning("cannot read the config audit (%r); %s", exc,
                            f"keeping version {self.current.version}" if self.known
                            else "the guarded routes are refused until it answers")
            self._audit_failing = True
            return None
        self._audit_failing = False
        return audited

    async def run(self) -> None:
        """Follow changes until cancelled: pub/sub for speed, the version poll in case a message is lost."""
        await asyncio.gather(self._follow_channel(), self._poll())

    async def _poll(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except REDIS_DOWN as exc:
                if not failing:
                    log.warning("cannot read the live config, keeping version %d: %r", self.current.version, exc)
                failing = True
                if not self.known:
                    await self._apply_newest_audited()
            except Exception:  # never stop following changes; the next round may succeed
                log.exception("live config poll failed, keeping version %d", self.current.version)
            await asyncio.sleep(self._poll_interval_s)

    async def _follow_channel(self) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self._subscribe(pubsub)
                backoff_s = 0.1
                # Changes published while we were not subscribed; Redis may have restarted meanwhile.
                await self.refresh(ask_audit=True)
                while True:
                    if await self._next_message(pubsub) is not None:
                        await self.refresh()
            except Exception as exc:
                if not isinstance(exc, REDIS_DOWN):
                    log.exception("live config subscription failed; resubscribing")
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except REDIS_DOWN:
                    pass

    async def _subscribe(self, pubsub: PubSub) -> None:
        if not self._sharded:
            await pubsub.subscribe(self._channel)
            return
        # A read on the channel's node first (module docstring): the slot map current, then SSUBSCRIBE.
        await self._redis.hget(self._key, "version")
        await cast("ClusterPubSub", pubsub).ssubscribe(self._channel)

    async def _next_message(self, pubsub: PubSub) -> dict[str, Any] | None:
        """The next message, None after a second without one."""
        if not self._sharded:
            message: dict[str, Any] | None = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            return message
        sharded = cast("ClusterPubSub", pubsub)
        message = await sharded.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None and not sharded.node_pubsub_mapping:
            # redis-py dropped the subscription moving it to another node and could not place it: with no
            # node left it answers None at once, for ever. Subscribe again.
            raise RedisConnectionError("the live config's shard subscription was dropped")
        return message
