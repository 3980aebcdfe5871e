"""Browser tests: headless Chromium, driven by Playwright, against a real gateway, worker and simulators.

Chromium is the Debian package (``scripts/system-deps.sh`` installs it); Playwright never
downloads a browser. Without ``/usr/bin/chromium`` the tests are skipped, except under CI
(``CI=true``), where they fail. Screenshots of every page go to ``tests/browser/artifacts/``.

The stack (two gateway processes, the worker, the payment and SMS simulators) runs against a
database of this directory's own and the test Redis database, flushed once before it starts; the
tests make their own exams and candidates, so they do not depend on each other. The worker delivers
the SMS outbox to the SMS simulator, where a test reads the codes a phone received
(``tests.browser.checks.delivered_code``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from core import db, migrate
from loadtest.processes import (
    Process,
    free_port,
    start_gateway,
    start_paysim,
    start_smssim,
    start_worker,
)
from payments import keys as payment_keys
from tests.conftest import TEST_PG_SERVER, TEST_REDIS_URL
from tests.gateway.candidate_http import FAST_ARGON
from tests.gateway.seat_stack import FAST_WORKER, healthz_versions

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
# The worker settles and reconciles quickly and keeps a small pool of captcha images.
WORKER_ENV = {**FAST_WORKER, "EXAMGATE_ORDER_QUERY_AFTER_S": "1", "EXAMGATE_PAYMENTS_INTERVAL_S": "0.5",
              "EXAMGATE_CAPTCHA_POOL_TARGET": "20", "EXAMGATE_CAPTCHA_REFILL_BATCH": "10",
              "EXAMGATE_CAPTCHA_REFILL_PROCESSES": "1"}
TIME_SCALE = 0.001
# The worker signs its SMS requests with this; the simulator checks it. The simulator limits no number per
# minute: the gateway's own per-phone limit is what the pages show (tests forget a phone's sends to go on).
SMS_SECRET = "browser-sms-secret-0123456789"


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing browser is a failure, not a reason to skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """Skip for ``reason``, or fail under CI."""
    if in_ci():
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(reason)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a thread of its own (Playwright's sync API owns this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- the browser ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from /usr/bin/chromium."""
    if not CHROMIUM.exists():
        unavailable(f"headless Chromium is not installed at {CHROMIUM} (scripts/system-deps.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Shots:
    """Screenshots of one test, numbered in the order taken, and the pages' script errors."""

    directory: Path
    taken: list[Path] = field(default_factory=list)
    pages: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> Any:
        """Record ``page``'s uncaught script errors and Content-Security-Policy refusals."""
        self.pages.append(page)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"{page.url}: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        return page

    def take(self, page: Any, name: str) -> Path:
        """A full-page screenshot ``NN-name.png``."""
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


TAKEN: list[Path] = []


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Shots]:
    """Where the test's screenshots go (``tests/browser/artifacts/<test>/``); a failure adds one of every page."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:100]
    directory = ARTIFACTS / name
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    recorder = Shots(directory)
    yield recorder
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for index, page in enumerate(recorder.pages):
            try:
                recorder.take(page, f"FAILED-page{index}")
            except Exception:  # a closed page has nothing to show
                pass
    TAKEN.extend(recorder.taken)
    assert not recorder.errors, "script errors in the pages:\n" + "\n".join(recorder.errors)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots are."""
    if TAKEN:
        terminalreporter.write_line(f"browser screenshots ({len(TAKEN)}) in {ARTIFACTS}/:")
        for path in TAKEN:
            terminalreporter.write_line(f"  {path}")


# --- the stack --------------------------------------------------------------------------------------------

@dataclass
class Stack:
    """The running gateway, worker and simulators, and ways to reach them from a test."""

    gateway: Process
    worker: Process
    paysim: Process
    smssim: Process
    dsn: str
    redis_url: str

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.gateway.url

    def admin_token(self) -> str:
        """The operators' token (generated into the gateway's secrets file)."""
        return self.gateway.admin_token()

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One JSON request to the gateway: (status, decoded body or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def set_live(self, patch: dict[str, Any]) -> int:
        """PATCH the live config through the admin API and wait until both gateway processes apply it."""
        version = self.gateway.patch_config(patch)
        self.wait_config(version)
        return version

    def wait_config(self, version: int, timeout_s: float = 5) -> None:
        """Until every gateway process runs config ``version`` or later."""
        deadline = time.monotonic() + timeout_s
        while min(healthz_versions(self.gateway)) < version:
            assert time.monotonic() < deadline, f"config version {version} was not applied everywhere"
            time.sleep(0.05)

    def wait_exam(self, exam_id: int, timeout_s: float = 10) -> None:
        """Until both gateway processes have the exam in their catalogue."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while seen < 8:  # new connections each time, so both processes answer
            assert time.monotonic() < deadline, f"the gateway did not load exam {exam_id}"
            status, _ = self.call("GET", f"/api/v1/exams/{exam_id}/sites", headers={"Connection": "close"})
            seen = seen + 1 if status == 200 else 0
            if not seen:
                time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Stack]:
    """A migrated database of its own, the Redis test database flushed, then simulators, gateway and worker."""
    dsn = db.with_database(TEST_PG_SERVER, f"examgate_browser_{os.getpid()}_{secrets.token_hex(3)}")
    run_async(migrate.create_and_migrate(dsn))
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
    keys_dir = tmp_path_factory.mktemp("browser-keys") / "keys"
    payment_keys.ensure(keys_dir)
    processes: list[Process] = []
    try:
        paysim = start_paysim(keys_dir, time_scale=TIME_SCALE)
        processes.append(paysim)
        smssim = start_smssim("--phone-per-minute", "0", EXAMGATE_SMS_ACCESS_KEY_SECRET=SMS_SECRET)
        processes.append(smssim)
        port = free_port()
        gateway = start_gateway(dsn, TEST_REDIS_URL, workers=2, port=port, EXAMGATE_KEYS_DIR=str(keys_dir),
                                EXAMGATE_PAYSIM_URL=paysim.url, EXAMGATE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                                **FAST_ARGON)
        processes.append(gateway)
        worker = start_worker(dsn, TEST_REDIS_URL, EXAMGATE_KEYS_DIR=str(keys_dir), EXAMGATE_PAYSIM_URL=paysim.url,
                              EXAMGATE_SMS_URL=smssim.url, EXAMGATE_SMS_ACCESS_KEY_SECRET=SMS_SECRET, **WORKER_ENV)
        processes.append(worker)
        yield Stack(gateway, worker, paysim, smssim, dsn, TEST_REDIS_URL)
    finally:
        for process in reversed(processes):
            process.stop()
        run_async(db.drop_database(dsn))
        with redis.Redis.from_url(TEST_REDIS_URL) as leftover:
            leftover.flushdb()  # this database's exam ids recur in later tests' databases: leave no keys


@pytest.fixture
def context_factory(browser: Any) -> Iterator[Any]:
    """New browser contexts (a phone or a desktop, Chinese locale, Beijing time), closed after the test."""
    made: list[Any] = []

    def make(device: dict[str, Any]) -> Any:
        context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", accept_downloads=True, **device)
        context.set_default_timeout(15_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()
