"""The aiohttp application: resources opened in ``cleanup_ctx`` and handed to the routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from cachetools import LRUCache

from captcha.pool import TakeCounters, preload_scripts
from core import redis_cluster
from core.db import PoolSettings, create_pool
from core.passwords import PasswordHasher, PasswordSettings
from core.redis import REDIS_DOWN
from core.scripts import load_scripts, preload
from core.sessions import SessionSettings
from gateway import keys as appkeys
from gateway import routing
from gateway.catalogue import CatalogueCache
from gateway.clientip import ClientIp
from gateway.config import Settings
from gateway.configstore import ConfigStore, LiveConfigWatcher
from gateway.edge import Edge
from gateway.metrics import LoopLagMonitor, RequestTally
from gateway.registration_refs import RegistrationRefs
from gateway.seat_stats import register_seat_stats
from gateway.shedding import Shedder
from gateway.stats import StatsRecorder
from queueing.holds import Replication
from ratelimit.limiter import Limiter, LimiterSettings

log = logging.getLogger("examgate.gateway")


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    pool_settings = PoolSettings(settings.database_url, settings.pg_pool_min, settings.pg_pool_max)
    try:
        pool = await create_pool(pool_settings)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        # Start anyway: /readyz reports PostgreSQL missing and connections are made on demand.
        log.warning("PostgreSQL not reachable at start (%r); connecting on demand", exc)
        pool = await create_pool(PoolSettings(settings.database_url, 0, settings.pg_pool_max))
    app[appkeys.PG] = pool
    yield
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(pool.close(), timeout=5)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    cluster = settings.redis_cluster
    app[appkeys.HOLD_REPLICATION] = (
        Replication(settings.hold_replicas, settings.hold_replica_wait_ms) if settings.hold_replicas else None)
    app[appkeys.REDIS] = redis_cluster.pipeline(
        settings.redis_url, cluster=cluster, connections=settings.redis_connections,
        timeout_ms=settings.redis_timeout_ms)
    # The limiter gets its own connection whose per-call timeout is the limiter's budget.
    limiter_redis = redis_cluster.pipeline(settings.redis_url, cluster=cluster, connections=1,
                                           timeout_ms=settings.ratelimit_budget_ms)
    app[appkeys.LIMITER] = Limiter(limiter_redis, LimiterSettings(
        budget_ms=settings.ratelimit_budget_ms, processes=settings.workers))
    # The client of the config, the console and the watcher, off the hot path: a burst of operators'
    # requests opens its connections all at once, each given the same generous time as a reply.
    app[appkeys.REDIS_PY] = redis_cluster.redis_py(
        settings.redis_url, cluster=cluster,
        socket_timeout=settings.redis_timeout_ms / 1000 * 5,
        socket_connect_timeout=settings.redis_timeout_ms / 1000 * 5,
    )
    yield
    await app[appkeys.REDIS].close()
    await limiter_redis.close()
    await app[appkeys.REDIS_PY].aclose()


def password_settings(settings: Settings) -> PasswordSettings:
    """argon2id parameters and the hashing pool's size from the settings."""
    return PasswordSettings(memory_kib=settings.argon2_memory_kib, time_cost=settings.argon2_time_cost,
                            parallelism=settings.argon2_parallelism, threads=settings.hasher_threads,
                            max_queue=settings.hasher_max_queue, max_wait_ms=settings.hasher_max_wait_ms)


def session_settings(settings: Settings) -> SessionSettings:
    """Session lifetimes from the settings; the idle TTL is renewed at most once a minute (a quarter of it if
    shorter)."""
    idle_s = settings.session_idle_timeout_s
    return SessionSettings(idle_timeout_s=idle_s, absolute_timeout_s=settings.session_absolute_timeout_s,
                           renew_every_s=min(60.0, idle_s / 4))


async def _accounts(app: web.Application) -> AsyncIterator[None]:
    # Hashing runs on its own bounded thread pool; nothing CPU-heavy runs on the event loop.
    hasher = app[appkeys.HASHER] = PasswordHasher(password_settings(app[appkeys.SETTINGS]))
    with contextlib.suppress(*REDIS_DOWN):
        await asyncio.wait_for(preload_scripts(app[appkeys.REDIS]), timeout=1)
    yield
    # Waits for the hashes still running (one per thread at most) without blocking the loop.
    await asyncio.get_running_loop().run_in_executor(None, hasher.close)


async def _seats(app: web.Application) -> AsyncIterator[None]:
    # Waiting-room and hold scripts loaded before the first poll or hold (no NOSCRIPT round trip at peak).
    with contextlib.suppress(*REDIS_DOWN):
        await asyncio.wait_for(preload(app[appkeys.REDIS], load_scripts("queueing")), timeout=1)
    register_seat_stats(app)
    yield


async def _payments(app: web.Application) -> AsyncIterator[None]:
    # Without provider keys the gateway still serves everything else; payment routes answer 503.
    from payments.errors import PaymentError
    from payments.keys import load_merchant as load_keys  # the merchant's keys only (payments.keys)
    from payments.runtime import PaymentsRuntime
    from queueing.seats import HoldSeats

    settings = app[appkeys.SETTINGS]
    try:
        keys = load_keys(settings.keys_dir)
    except PaymentError as exc:
        log.error("payments disabled: %s", exc)
        app[appkeys.PAYMENTS] = None
        yield
        return
    runtime = app[appkeys.PAYMENTS] = PaymentsRuntime(settings, keys, app[appkeys.PG], app[appkeys.REDIS],
                                                       seats=HoldSeats(app[appkeys.REDIS],
                                                                       app[appkeys.HOLD_REPLICATION]))
    yield
    await runtime.aclose()


async def _lookups(app: web.Application) -> AsyncIterator[None]:
    from lookups.service import Lookups

    settings = app[appkeys.SETTINGS]
    app[appkeys.LOOKUPS] = Lookups(app[appkeys.PG], app[appkeys.REDIS],
                                   max_pg_in_flight=settings.lookup_pg_max_in_flight,
                                   memory_ttl_s=settings.lookup_memory_ttl_s)
    yield


async def _live(app: web.Application) -> AsyncIterator[None]:
    redis_py = app[appkeys.REDIS_PY]
    store = app[appkeys.CONFIG_STORE] = ConfigStore(redis_py, app[appkeys.PG])
    watcher = app[appkeys.LIVE] = LiveConfigWatcher(redis_py, rebuild=store.rebuild,
                                                    newest_audited=store.newest_audited)
    stats = app[appkeys.STATS] = StatsRecorder(app[appkeys.TALLY])
    # Start with the stored config, restored from the audit if Redis lost it. Until one is known
    # the guarded routes answer 503 config_unavailable and the watcher keeps trying.
    with contextlib.suppress(*REDIS_DOWN):
        await asyncio.wait_for(watcher.refresh(ask_audit=True), timeout=5)
    tasks = [
        asyncio.create_task(watcher.run(), name="live-config"),
        asyncio.create_task(stats.flush_forever(redis_py), name="stats-flush"),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(*REDIS_DOWN):
        await asyncio.wait_for(stats.flush(redis_py), timeout=1)


async def _background(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    cache = CatalogueCache(app[appkeys.PG], settings.catalogue_refresh_s)
    app[appkeys.CATALOGUE] = cache
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
        await asyncio.wait_for(cache.refresh(), timeout=5)
    tasks = [
        asyncio.create_task(cache.run(), name="catalogue-refresh"),
        asyncio.create_task(app[appkeys.LOOP_LAG].run(), name="loop-lag"),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


SEEN_SESSIONS_KEPT = 50_000  # a few MB; a session not among them costs its first request one round trip
TICKET_LINK_PURPOSE = "ticket-pdf"  # lookups.links.KEY_PURPOSE, without importing fpdf2 at start-up


def _ticket_link(key: bytes, ttl_s: int, ticket_no: str, exam_id: int) -> str:
    from lookups.links import sign_link

    return sign_link(key, ticket_no, exam_id=exam_id, ttl_s=ttl_s)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway application for ``settings``."""
    from gateway.routes import modules

    app = web.Application(client_max_size=settings.max_body_bytes)  # no middleware: see gateway.edge
    app[appkeys.SETTINGS] = settings
    app[appkeys.LOOP_LAG] = LoopLagMonitor()
    client_ip = app[appkeys.CLIENT_IP] = ClientIp(settings.trusted_proxies)
    shedder = app[appkeys.SHEDDER] = Shedder(client_ip, max_in_flight_per_address=settings.max_in_flight_per_address,
                                             body_timeout_s=settings.body_timeout_s)
    tally = app[appkeys.TALLY] = RequestTally()
    app[appkeys.SESSIONS] = session_settings(settings)
    app[appkeys.SEEN_SESSIONS] = LRUCache(maxsize=SEEN_SESSIONS_KEPT)
    app[appkeys.POW_KEY] = settings.derived_key("captcha-pow")
    app[appkeys.LOADTEST_KEY] = settings.derived_key("loadtest")
    app[appkeys.RECOVERY_KEY] = settings.derived_key("recovery")
    app[appkeys.CAPTCHA_TAKES] = TakeCounters()
    app[appkeys.ADMISSION_KEY] = settings.derived_key("admission")
    pdf_key = app[appkeys.TICKET_PDF_KEY] = settings.derived_key(TICKET_LINK_PURPOSE)
    links: Callable[[str, int], str] = functools.partial(_ticket_link, pdf_key, settings.ticket_link_ttl_s)
    app[appkeys.TICKET_LINKS] = links
    app[appkeys.REGISTRATION_REFS] = RegistrationRefs()
    app.cleanup_ctx.extend([_postgres, _redis, _live, _accounts, _seats, _payments, _lookups, _background])
    routes = modules(bench=settings.bench_routes)
    for module in routes:
        if hasattr(module, "setup"):
            module.setup(app)  # the module's own resources
    operations = routing.register(app, [module.routes for module in routes], Edge(settings, shedder, tally))
    app[appkeys.HANDLER_DECIDES] = frozenset(name for name, op in operations.items() if op.decides_limits_in_handler)
    return app
