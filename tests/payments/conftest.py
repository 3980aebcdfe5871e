"""Fixtures of the payments tests: one key set per session (RSA generation is slow), settings, a simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core import db, migrate
from gateway.config import Settings
from loadtest.processes import Process, start_paysim
from payments import keys as payment_keys
from payments.clients import ProviderClient
from payments.keys import PaymentKeys
from simulators.paysim import SIM, Simulator, build_app
from tests.conftest import TEST_PG_SERVER

TIME_SCALE = 0.0005  # Alipay's 4 min wait takes 0.12 s, WeChat's 15 s takes 7.5 ms


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one generated key set, shared by the whole session."""
    directory = tmp_path_factory.mktemp("payment-keys") / "keys"
    payment_keys.ensure(directory)
    return directory


@pytest.fixture(scope="session")
def keys(keys_dir: Path) -> PaymentKeys:
    """The session's key set."""
    return payment_keys.load(keys_dir)


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1, a free port; return the runner and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


class RunningSim:
    """A simulator served in-process: its URL and its state."""

    def __init__(self, url: str, sim: Simulator) -> None:
        self.url = url
        self.sim = sim


@pytest.fixture
async def paysim(keys: PaymentKeys) -> AsyncIterator[RunningSim]:
    """The payment simulator on a free port, retry schedules compressed by ``TIME_SCALE``."""
    app = build_app(keys, time_scale=TIME_SCALE)
    runner, url = await start_app(app)
    try:
        yield RunningSim(url, app[SIM])
    finally:
        await runner.cleanup()


def settings_for(paysim_url: str, public_url: str = "http://127.0.0.1:9", **extra: Any) -> Settings:
    """Settings pointing the merchant client at the simulator and notifications at ``public_url``."""
    return Settings(paysim_url=paysim_url, public_url=public_url, **extra)


@pytest.fixture
async def client(paysim: RunningSim, keys: PaymentKeys) -> AsyncIterator[ProviderClient]:
    """A merchant client talking to the simulator (notifications go nowhere unless a test sets ``public_url``)."""
    async with ProviderClient(settings_for(paysim.url), keys, timeout_s=5) as provider_client:
        yield provider_client


# -- for the modules that run the gateway, worker and simulator as processes --------------------------------


@contextlib.contextmanager
def module_database(prefix: str) -> Iterator[str]:
    """A migrated database of one module's own on the shared PostgreSQL server, dropped after it.

    The worker reconciles every pending order of the database it is given: a module whose worker must
    not see other tests' orders runs on its own database.
    """
    dsn = db.with_database(TEST_PG_SERVER, f"examgate_{prefix}_{os.getpid()}_{secrets.token_hex(3)}")
    asyncio.run(migrate.create_and_migrate(dsn))
    try:
        yield dsn
    finally:
        asyncio.run(db.drop_database(dsn))


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to ``dsn`` with the pool's codecs, closed after."""
    connection = await db.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@contextlib.contextmanager
def paysim_process(keys_dir: Path) -> Iterator[Process]:
    """``examgate paysim`` as a process, its retry schedules compressed by ``TIME_SCALE``."""
    process = start_paysim(keys_dir, time_scale=TIME_SCALE)
    try:
        yield process
    finally:
        process.stop()
