"""Fixtures of the payments tests: one key set per session (RSA generation is slow), settings, a simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config import Settings
from payments import keys as payment_keys
from payments.clients import ProviderClient
from payments.keys import PaymentKeys
from simulators.paysim import SIM, Simulator, build_app

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
