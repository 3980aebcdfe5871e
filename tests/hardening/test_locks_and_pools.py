"""What an attacker could hold: an account's owner locked out by wrong passwords, the image pool, account creation.

One 2-process gateway that trusts X-Forwarded-For from loopback (so each test client is an
address of its own) and a worker keeping a small image pool, on real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from captcha import keys as captcha_keys
from loadtest.processes import Process, start_gateway, start_worker
from tests.gateway import candidate_http as h
from tests.gateway.test_captcha_routes import solve

POOL_TARGET = 150
SIGN_IN = "/api/v1/sessions"
IMAGE = "/api/v1/captcha/image"
ACCOUNTS = "/api/v1/accounts"
_ADDRESSES = itertools.count(1)


@pytest.fixture(scope="module")
def stack(pg_dsn: str) -> Iterator[tuple[Process, Process]]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    worker = start_worker(pg_dsn, TEST_REDIS_URL, EXAMGATE_CAPTCHA_POOL_TARGET=str(POOL_TARGET),
                          EXAMGATE_CAPTCHA_REFILL_BATCH="25", EXAMGATE_CAPTCHA_REFILL_PROCESSES="1")
    try:
        gateway = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_TRUSTED_PROXIES="127.0.0.1",
                                EXAMGATE_HASHER_MAX_WAIT_MS="0", **h.FAST_ARGON)
        try:
            yield gateway, worker
        finally:
            assert gateway.stop() == 0, gateway.log()
    finally:
        assert worker.stop() == 0, worker.log()


@pytest.fixture
async def store() -> AsyncIterator[aioredis.Redis]:
    from tests.conftest import TEST_REDIS_URL

    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


def address() -> str:
    """A documentation address (TEST-NET-2) nobody else in this module uses."""
    return f"198.51.100.{next(_ADDRESSES)}"


async def loadtest_token(session: aiohttp.ClientSession, gateway: Process) -> str:
    async with session.post(gateway.url + "/admin/api/v1/loadtest-tokens", json={"ttl_s": 600},
                            headers={"Authorization": f"Bearer {gateway.admin_token()}"}) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["token"])


async def pool_full(store: aioredis.Redis, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await store.llen(captcha_keys.POOL) < POOL_TARGET:
        assert asyncio.get_running_loop().time() < deadline, "the worker did not fill the pool"
        await asyncio.sleep(0.1)


async def solved_image(session: aiohttp.ClientSession, gateway: Process, store: aioredis.Redis,
                       ip: str) -> dict[str, str]:
    """An image captcha as a candidate sends it back (the answer read from Redis, where it is kept plain)."""
    async with session.get(gateway.url + IMAGE, headers={"X-Forwarded-For": ip}) as resp:
        assert resp.status == 200, await resp.text()
        image_id = (await resp.json())["id"]
    answer = await store.get(captcha_keys.answer_key(image_id))
    assert answer is not None
    return {"kind": "image", "id": image_id, "answer": answer.decode()}


async def solved_pow(session: aiohttp.ClientSession, gateway: Process) -> dict[str, str]:
    async with session.get(gateway.url + "/api/v1/captcha/pow") as resp:
        challenge = await resp.json()
    return {"kind": "pow", "payload": await asyncio.to_thread(solve, challenge)}


async def sign_in(session: aiohttp.ClientSession, gateway: Process, ip: str, username: str, password: str,
                  *, captcha: dict[str, str] | None = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"X-Forwarded-For": ip}
    if token is not None:
        headers["X-Loadtest-Token"] = token
    body: dict[str, Any] = {"username": username, "password": password}
    if captcha is not None:
        body["captcha"] = captcha
    async with session.post(gateway.url + SIGN_IN, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_spent_failure_budget_asks_for_an_image_captcha_instead_of_locking_the_owner_out(
        stack: tuple[Process, Process], store: aioredis.Redis, pg: asyncpg.Connection) -> None:
    gateway, _ = stack
    async with aiohttp.ClientSession() as session:
        token = await loadtest_token(session, gateway)
        account = h.registration()
        headers = {"X-Loadtest-Token": token, "X-Forwarded-For": address()}
        account["sms_code"] = await h.code_over_http(session, gateway.url, pg, account["phone"], headers=headers)
        async with session.post(gateway.url + ACCOUNTS, json=account, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
        await pool_full(store)
        attacker, owner = address(), address()
        unknown = "nobody" + secrets.token_hex(4)
        for username, ip in ((account["username"], attacker), (unknown, address())):  # login-ip's burst is 10
            for _ in range(6):  # the default login-account burst is 5
                status, body = await sign_in(session, gateway, ip, username, "Wrong#pass123", token=token)
                if status != 401:
                    break
            assert (status, body["error"]["code"]) in {(400, "captcha_required"), (429, "too_many_attempts")}

        # The owner, with the right password and only a load-test token or a proof-of-work: the harder captcha.
        status, body = await sign_in(session, gateway, owner, account["username"].upper(), h.PASSWORD, token=token)
        assert (status, body["error"]["code"]) == (400, "captcha_required"), body
        assert body["error"]["details"] == {"captcha": "image"}
        status, body = await sign_in(session, gateway, owner, account["username"], h.PASSWORD,
                                     captcha=await solved_pow(session, gateway))
        assert (status, body["error"]["details"]) == (400, {"captcha": "image"}), body
        # An unknown username is answered the same way: no account-existence oracle.
        status, unknown_body = await sign_in(session, gateway, owner, unknown, h.PASSWORD, token=token)
        assert (status, unknown_body) == (400, body)

        # One guess per solved image: a wrong password spends it, a replay is refused.
        image = await solved_image(session, gateway, store, attacker)
        status, body = await sign_in(session, gateway, attacker, account["username"], "Wrong#pass123", captcha=image)
        assert (status, body["error"]["code"]) == (401, "invalid_credentials")
        status, body = await sign_in(session, gateway, attacker, account["username"], h.PASSWORD, captcha=image)
        assert (status, body["error"]["code"]) == (400, "captcha_invalid")

        # Per-address rules still apply to escalated sign-ins: an address that spent login-ip gets 429.
        crowded = address()
        for _ in range(10):  # the default login-ip burst, spent on usernames that each fail once
            status, _ = await sign_in(session, gateway, crowded, "u" + secrets.token_hex(5), "Wrong#pass123",
                                      token=token)
            assert status == 401
        image = await solved_image(session, gateway, store, crowded)
        status, body = await sign_in(session, gateway, crowded, account["username"], h.PASSWORD, captcha=image)
        assert (status, body["error"]["code"]) == (429, "too_many_attempts"), body
        assert body["error"]["details"]["rules"] == ["login-ip"]

        # The owner with a solved image captcha signs in, counted by the per-address rule.
        image = await solved_image(session, gateway, store, owner)
        async with session.post(gateway.url + SIGN_IN, headers={"X-Forwarded-For": owner},
                                json={"username": account["username"], "password": h.PASSWORD,
                                      "captcha": image}) as resp:
            assert resp.status == 201, await resp.text()
            assert set(await resp.json()) == {"token", "expires_in"}
            assert resp.headers["RateLimit-Policy"] == '"login-ip";q=30;w=60'


async def test_image_captchas_are_throttled_per_address_and_the_pool_lasts(
        stack: tuple[Process, Process], store: aioredis.Redis) -> None:
    gateway, _ = stack
    await pool_full(store)
    flooder, other = address(), address()
    statuses: Counter[int] = Counter()
    refusal: dict[str, Any] = {}
    lowest = POOL_TARGET
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        async def take() -> None:
            async with session.get(gateway.url + IMAGE, headers={"X-Forwarded-For": flooder}) as resp:
                statuses[resp.status] += 1
                if resp.status == 429 and not refusal:
                    refusal.update(headers=dict(resp.headers), body=await resp.json())
                else:
                    await resp.read()

        for _ in range(4):  # 4 × 60 requests: far beyond one address's budget, well within the pool
            await asyncio.gather(*(take() for _ in range(60)))
            lowest = min(lowest, await store.llen(captcha_keys.POOL))
        async with session.get(gateway.url + IMAGE, headers={"X-Forwarded-For": other}) as resp:
            assert resp.status == 200, await resp.text()
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and statuses[200] <= 40, statuses
    assert refusal["body"]["error"]["code"] == "too_many_requests"
    assert int(refusal["headers"]["Retry-After"]) >= 1
    assert "captcha-image-ip" in refusal["body"]["error"]["details"]["rules"]
    assert lowest > 0
    await pool_full(store)  # and the worker tops it up again


async def test_account_creation_is_throttled_per_address(stack: tuple[Process, Process],
                                                          pg: asyncpg.Connection) -> None:
    gateway, _ = stack
    school, elsewhere = address(), address()
    async with aiohttp.ClientSession() as session:
        token = await loadtest_token(session, gateway)

        async def create(ip: str) -> tuple[int, dict[str, Any], dict[str, str]]:
            account = h.registration()
            headers = {"X-Loadtest-Token": token, "X-Forwarded-For": ip}
            account["sms_code"] = await h.code_over_http(session, gateway.url, pg, account["phone"],
                                                         headers=headers)
            async with session.post(gateway.url + ACCOUNTS, json=account, headers=headers) as resp:
                return resp.status, await resp.json(), dict(resp.headers)

        replies = [await create(school) for _ in range(30)]
        statuses = Counter(status for status, _, _ in replies)
        assert set(statuses) == {201, 429}, statuses
        assert statuses[201] <= 21, statuses
        _, body, headers = next(reply for reply in replies if reply[0] == 429)
        assert body["error"]["code"] == "too_many_requests" and int(headers["Retry-After"]) >= 1
        assert body["error"]["details"]["rules"] == ["accounts-ip"]
        status, body, _ = await create(elsewhere)
        assert status == 201, body
