"""``examgate worker``: the background tasks beside the gateway, supervised."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from concurrent.futures import Executor, ProcessPoolExecutor

import asyncpg
import redis.asyncio as aioredis

from captcha import pool as captcha_pool
from core.catalogue import load_catalogue
from core.db import PoolSettings, create_pool
from core.tasks import Supervisor
from gateway.config import Settings
from queueing.inventory import ensure_inventory

log = logging.getLogger("examgate.worker")

INVENTORY_INTERVAL_S = 30.0
HEARTBEAT_INTERVAL_S = 5.0
CAPTCHA_REFILL_INTERVAL_S = 1.0


def heartbeat_key(worker_id: str) -> str:
    """Key a live worker refreshes; operators' stats list them."""
    return f"eg:worker:{worker_id}"


async def keep_inventory(pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    """Create any missing seat-inventory keys from PostgreSQL (after a flush or a new exam)."""
    while True:
        catalogue = await load_catalogue(pool)
        for exam in catalogue.exams.values():
            created = await ensure_inventory(pool, redis, exam)
            if created:
                log.info("exam %s: rebuilt %d seat-inventory keys from PostgreSQL", exam.code, created)
        await asyncio.sleep(INVENTORY_INTERVAL_S)


async def heartbeat(redis: aioredis.Redis, worker_id: str) -> None:
    """Say this worker is alive, every few seconds, with an expiry."""
    while True:
        await redis.set(heartbeat_key(worker_id), "1", ex=int(HEARTBEAT_INTERVAL_S * 3))
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


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
    """Keep the image pool at its target: check every second, draw in other processes when it is short.

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


async def run_worker(settings: Settings) -> None:
    """Run every background task until SIGTERM or SIGINT."""
    pool = await create_pool(PoolSettings(settings.database_url, 1, max(2, settings.pg_pool_max // 2)))
    redis = aioredis.Redis.from_url(settings.redis_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    tasks = {
        "inventory": lambda: keep_inventory(pool, redis),
        "heartbeat": lambda: heartbeat(redis, worker_id),
    }
    if settings.captcha_pool_target > 0:
        tasks["captcha-pool"] = lambda: keep_captcha_pool(redis, settings)
    supervisor = Supervisor(tasks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("worker %s running tasks: %s", worker_id, ", ".join(supervisor.tasks))
    try:
        await supervisor.run(stop)
    finally:
        await redis.aclose()
        await pool.close()
        log.info("worker %s stopped", worker_id)
