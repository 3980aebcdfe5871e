"""``examgate worker``: the background tasks beside the gateway, supervised."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import socket
from concurrent.futures import Executor, ProcessPoolExecutor
from datetime import timedelta

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from captcha import pool as captcha_pool
from core import lifecycle, redis_cluster
from core.catalogue import Catalogue, Exam
from core.db import PoolSettings, create_pool
from core.redis import REDIS_DOWN
from core.tasks import Supervisor, TaskFactory
from core.timeutil import utcnow
from gateway import heartbeats
from gateway.catalogue import CatalogueCache
from gateway.config import Settings
from gateway.configstore import ConfigStore, LiveConfigWatcher
from lookups.cert_prewarm import keep_warm as keep_certificates_warm
from lookups.prewarm import keep_prewarmed
from messaging.aliyun import AliyunSms, ProviderSettings
from messaging.delivery import DeliveryPolicy, run_delivery
from payments.clients import ProviderClient
from payments.errors import PaymentError
from payments.keys import load_merchant as load_payment_keys
from payments.reconcile import run_reconciler
from payments.refunder import RefundPolicy, run_refunder
from payments.runtime import expected as payment_expectations
from queueing import keys, waiting_room
from queueing.errors import QueueingError
from queueing.holds import Replication, active_exam_ids, hold_streams, release_seat
from queueing.inventory import ensure_inventory
from queueing.reconcile import reconcile
from queueing.seats import HoldSeats
from queueing.sweeper import run_sweeper
from queueing.writebehind import run_consumer

log = logging.getLogger("examgate.worker")

# Unpaid registrations expire this long after their exam's registration closed: by then every hold
# and order made before the close has run out, so expiry never races a payment in flight.
EXPIRY_GRACE = timedelta(days=1)
EXPIRY_INTERVAL_S = 60.0
CANCEL_RETRY_S = 0.05  # how often a child task that swallowed its cancellation is cancelled again
# How soon the worker notices images taken: a check is one LLEN and one small HSET, and once short
# it draws without pause until the pool is full again, so checking often starts each refill early.
CAPTCHA_REFILL_INTERVAL_S = 0.25
SMS_POLL_INTERVAL_S = 0.25  # an idle delivery worker looks for due messages this often (a code is awaited)


def inventory_marker(exam_id: int) -> str:
    """Set once the exam's seats and holds in Redis were rebuilt from PostgreSQL; a flush removes it."""
    return f"eg:{{exam:{exam_id}}}:inventory:reconciled"


async def check_inventory(pool: asyncpg.Pool, redis: aioredis.Redis, catalogue: Catalogue,
                          min_idle_ms: int) -> int:
    """Rebuild what is missing of each exam's seats and holds in Redis; how many exams were reconciled.

    ``ensure_inventory`` alone brings back the seat counts after a flush but not the holds, so
    a candidate's seat would stay counted as taken and held by nobody; ``reconcile`` restores
    both from PostgreSQL. It runs when the exam's rebuild marker or a seat count is missing
    and the exam's hold stream is empty: then no hold event is in flight, and a rebuild cannot
    undo a hold PostgreSQL has not heard of yet. With events in the stream (holds were taken
    since the flush, or it is a new site) only the missing counts are created.
    """
    reconciled = 0
    for exam in catalogue.exams.values():
        try:
            reconciled += await _check_exam(pool, redis, exam, min_idle_ms)
        except (asyncpg.PostgresError, RedisError, QueueingError) as exc:  # one bad exam must not block the others
            log.error("exam %s: seat inventory check failed: %r", exam.code, exc)
    return reconciled


async def _check_exam(pool: asyncpg.Pool, redis: aioredis.Redis, exam: Exam, min_idle_ms: int) -> int:
    """Reconcile one exam, create its missing counts, or nothing (see ``check_inventory``); 1 if reconciled."""
    site_keys = [keys.site_left(exam.id, site_id) for site_id in exam.sites]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(inventory_marker(exam.id))
        pipe.xlen(keys.holds_stream(exam.id))  # the write-behind creates streams empty (0 also when missing)
        if site_keys:
            pipe.exists(*site_keys)
        marker, stream, *counts = await pipe.execute()
    complete = not site_keys or counts[0] == len(site_keys)
    if marker and complete:
        return 0
    if stream:
        if not complete:
            created = await ensure_inventory(pool, redis, exam)
            log.warning("exam %s: %d seat counts recreated from PostgreSQL (holds left as they are; "
                        "run examgate reconcile if Redis lost them)", exam.code, created)
        await redis.set(inventory_marker(exam.id), "1")
        return 0
    report = await reconcile(pool, redis, exam.id, min_idle_ms=min_idle_ms)
    if report.drifted:
        log.warning("exam %s: seat inventory and holds rebuilt from PostgreSQL: %s", exam.code, report.as_dict())
    await redis.set(inventory_marker(exam.id), "1")
    return 1


async def keep_inventory(pool: asyncpg.Pool, redis: aioredis.Redis, catalogue: CatalogueCache,
                         settings: Settings) -> None:
    """Rebuild seat inventory and holds from PostgreSQL when they are missing (after a flush or a new exam)."""
    while True:
        await check_inventory(pool, redis, catalogue.catalogue, settings.writebehind_claim_min_idle_ms)
        await asyncio.sleep(settings.inventory_check_s)


async def expire_registrations(pool: asyncpg.Pool, redis: aioredis.Redis, *,
                               grace: timedelta = EXPIRY_GRACE) -> int:
    """Expire the unpaid registrations of exams closed more than ``grace`` ago; how many.

    Each is one lifecycle transition (its own transaction); Redis follows with the seat right
    revoked and any hold released, carrying the transition's version like every other.
    """
    expired = 0
    while due := await lifecycle.due_for_expiry(pool, utcnow() - grace):
        for registration_id in due:
            moved = await lifecycle.expire(pool, registration_id)
            if moved is not None:
                await release_seat(redis, moved.exam_id, registration_id, revoke_version=moved.version)
                expired += 1
    if expired:
        log.info("expired %d unpaid registrations of closed exams", expired)
    return expired


async def keep_expiring(pool: asyncpg.Pool, redis: aioredis.Redis, interval_s: float = EXPIRY_INTERVAL_S) -> None:
    """``expire_registrations`` every ``interval_s``."""
    while True:
        await expire_registrations(pool, redis)
        await asyncio.sleep(interval_s)


async def advance_rooms(redis: aioredis.Redis, live: LiveConfigWatcher, interval_s: float) -> None:
    """Move every enabled waiting room's serving counter on at its live admit rate, every ``interval_s``,
    forgetting the places it passed long enough ago (``waiting_room.keep_for``)."""
    while True:
        for exam_id, config in live.current.queue_exams.items():
            if config.enabled:
                await waiting_room.advance(redis, exam_id, admit_per_s=config.admit_per_s,
                                           keep_s=waiting_room.keep_for(config.place_ttl_s, config.admission_ttl_s))
        await asyncio.sleep(interval_s)


async def heartbeat(redis: aioredis.Redis, worker_id: str, interval_s: float) -> None:
    """Say this worker is alive every ``interval_s``; readiness and the admin stats read it."""
    while True:
        await heartbeats.beat(redis, worker_id, interval_s)
        await asyncio.sleep(interval_s)


def captcha_executor(settings: Settings) -> ProcessPoolExecutor:
    """The processes captcha images are drawn in (spawned: a fork would copy the running event loop)."""
    return ProcessPoolExecutor(max_workers=settings.captcha_refill_processes,
                               mp_context=multiprocessing.get_context("spawn"))


async def refill_captcha_pool(redis: aioredis.Redis, settings: Settings, executor: Executor,
                              counters: captcha_pool.RefillCounters | None = None) -> int:
    """Top the image pool up to its target once, drawing in ``executor``; the number of images added."""
    return await captcha_pool.refill(redis, target=settings.captcha_pool_target, batch=settings.captcha_refill_batch,
                                     executor=executor, concurrency=settings.captcha_refill_processes,
                                     counters=counters)


async def keep_captcha_pool(redis: aioredis.Redis, settings: Settings) -> None:
    """Keep the image pool at its target: check 4 times a second, draw in other processes when it is short.

    The task owns its process pool, so a restart after a failure (a drawing process killed,
    a broken pool) starts with fresh processes.
    """
    counters = captcha_pool.RefillCounters()
    executor = captcha_executor(settings)
    try:
        while True:
            added = await refill_captcha_pool(redis, settings, executor, counters)
            if added:
                log.info("captcha pool: %d images added (%.0f/s)", added, counters.last_rate_per_s)
            await asyncio.sleep(CAPTCHA_REFILL_INTERVAL_S)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


async def until_cancelled(factory: TaskFactory) -> None:
    """Run one supervised task in a child task that a cancellation always ends.

    On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that lands as its awaitable
    completes, and redis-py 8 sends every command under one, so a task cancelled mid-call may
    carry on: then the worker would never exit. Here the supervisor's cancellation lands on
    ``asyncio.wait`` (which never swallows one) and is passed on to the child until it ends.
    """
    child = asyncio.ensure_future(factory())
    try:
        await asyncio.wait({child})
    finally:
        while not child.done():
            child.cancel()
            await asyncio.wait({child}, timeout=CANCEL_RETRY_S)
    await child  # its result, or its exception for the supervisor to log


def _provider_client(settings: Settings) -> ProviderClient | None:
    """The client order reconciliation and refunds reach providers with; None (and no such tasks) without keys."""
    try:
        keys = load_payment_keys(settings.keys_dir)
    except PaymentError as exc:
        log.error("order reconciliation and refunds disabled: %s", exc)
        return None
    return ProviderClient(settings, keys)


def refund_policy(settings: Settings) -> RefundPolicy:
    """How refunds are sent and retried, from the settings."""
    return RefundPolicy(max_attempts=settings.refund_max_attempts, retry_s=settings.refund_retry_s,
                        query_after_s=settings.refund_query_after_s, concurrency=settings.refund_concurrency)


def sms_policy(settings: Settings) -> DeliveryPolicy:
    """How SMS messages are sent, paced and retried, from the settings."""
    return DeliveryPolicy(
        send_rate_per_s=settings.sms_send_rate, concurrency=settings.sms_concurrency,
        batch_size=settings.sms_batch_size, max_attempts=settings.sms_max_attempts, retry_s=settings.sms_retry_s,
        retry_max_s=settings.sms_retry_max_s, lease_s=settings.sms_lease_s, timeout_s=settings.sms_timeout_s,
        throttle_pause_s=settings.sms_throttle_pause_s, poll_interval_s=SMS_POLL_INTERVAL_S,
        template_codes=dict(settings.sms_template_codes))


def sms_sender(settings: Settings) -> AliyunSms:
    """The SMS provider client (Alibaba Cloud SMS at EXAMGATE_SMS_URL: the real one, or the simulator)."""
    return AliyunSms(ProviderSettings(settings.sms_url, settings.sms_access_key_id, settings.sms_access_key_secret,
                                      settings.sms_sign_name, settings.sms_timeout_s),
                     connections=settings.sms_concurrency)


async def run_worker(settings: Settings) -> None:
    """Run every background task until SIGTERM or SIGINT."""
    pool = await create_pool(PoolSettings(settings.database_url, 1, max(2, settings.pg_pool_max // 2)))
    redis = redis_cluster.redis_py(settings.redis_url, cluster=settings.redis_cluster)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    catalogue = CatalogueCache(pool, settings.worker_exams_refresh_s)
    live = LiveConfigWatcher(redis, rebuild=ConfigStore(redis, pool).rebuild)
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
        await asyncio.wait_for(catalogue.refresh(), timeout=5)
    with contextlib.suppress(*REDIS_DOWN):
        await asyncio.wait_for(live.refresh(ask_audit=True), timeout=5)
    stop = asyncio.Event()
    # The supervisor stops every task by cancelling it, and only so: the write-behind and the
    # sweeper get no stop event (one that returned as ``stop`` is set would race the cancellation
    # and be restarted), and each task runs under ``until_cancelled`` (a cancellation swallowed
    # by a Redis call is delivered again).

    async def active_exams() -> list[int]:
        return active_exam_ids(catalogue.catalogue)

    async def active_streams() -> list[str]:
        return hold_streams(active_exam_ids(catalogue.catalogue))

    tasks = {
        "catalogue": catalogue.run,
        "live-config": live.run,
        "inventory": lambda: keep_inventory(pool, redis, catalogue, settings),
        "heartbeat": lambda: heartbeat(redis, worker_id, settings.worker_heartbeat_s),
        "queue-advance": lambda: advance_rooms(redis, live, settings.queue_advance_interval_ms / 1000),
        "holds-writebehind": lambda: run_consumer(
            redis, pool, consumer_name=worker_id, streams=active_streams,
            batch_size=settings.writebehind_batch_size, min_idle_ms=settings.writebehind_claim_min_idle_ms,
            streams_refresh_s=settings.worker_exams_refresh_s),
        "holds-sweeper": lambda: run_sweeper(redis, exams=active_exams, interval_s=settings.sweeper_interval_s),
        "registrations-expiry": lambda: keep_expiring(pool, redis),
    }
    if settings.captcha_pool_target > 0:
        tasks["captcha-pool"] = lambda: keep_captcha_pool(redis, settings)
    tasks["prewarm"] = lambda: keep_prewarmed(pool, redis, lambda: catalogue.catalogue.exams.values(),
                                              before_s=settings.prewarm_before_s)
    tasks["certificates-prewarm"] = lambda: keep_certificates_warm(pool, redis)
    provider = _provider_client(settings)
    # A paid seat is kept as the gateway keeps it: through the auto-pipelined client, which can WAIT
    # for a replica (EXAMGATE_HOLD_REPLICAS) on the connection that wrote it.
    hold_client = redis_cluster.pipeline(settings.redis_url, cluster=settings.redis_cluster, connections=1,
                                         timeout_ms=settings.redis_timeout_ms)
    seats = HoldSeats(hold_client, Replication(settings.hold_replicas, settings.hold_replica_wait_ms)
                      if settings.hold_replicas else None)
    if provider is not None:
        tasks["payments-reconcile"] = lambda: run_reconciler(
            pool, seats, provider, payment_expectations(settings),
            query_after_s=settings.order_query_after_s, interval_s=settings.payments_interval_s)
        tasks["refunds"] = lambda: run_refunder(pool, provider, refund_policy(settings),
                                                interval_s=settings.refunds_interval_s)
    sender = sms_sender(settings)
    tasks["sms-delivery"] = lambda: run_delivery(pool, redis, sender, sms_policy(settings), worker_id=worker_id)
    supervisor = Supervisor({name: functools.partial(until_cancelled, factory) for name, factory in tasks.items()})
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("worker %s running tasks: %s", worker_id, ", ".join(supervisor.tasks))
    try:
        await supervisor.run(stop)
    finally:
        if provider is not None:
            await provider.aclose()
        await sender.aclose()
        await hold_client.close()
        with contextlib.suppress(*REDIS_DOWN):
            await asyncio.wait_for(heartbeats.forget(redis, worker_id), timeout=1)  # gone now, not 3 beats later
        await redis.aclose()
        await pool.close()
        log.info("worker %s stopped", worker_id)
