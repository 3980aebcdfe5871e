"""Sessions against real Redis: hashed tokens, idle and absolute timeouts, renewal, revocation."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from core import sessions
from core.redis import AutoPipeline
from core.scripts import load_scripts
from core.sessions import SessionSettings
from core.timeutil import utcnow


@pytest.fixture(params=["autopipeline", "redis-py"])
async def client(request: pytest.FixtureRequest, redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Any]:
    """Each test runs once through the AutoPipeline and once through redis-py (on the flushed test db)."""
    if request.param == "autopipeline":
        pipeline = await AutoPipeline.connect(redis_url)
        try:
            yield pipeline
        finally:
            await pipeline.close()
    else:
        yield redis


def test_script_header_lists_keys_argv_and_return() -> None:
    text = load_scripts("core.lua")["session_touch"].source
    assert "KEYS[1]" in text and "ARGV[1]" in text and "ARGV[2]" in text and "Returns" in text


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        SessionSettings(idle_timeout_s=0)
    with pytest.raises(ValueError):
        SessionSettings(idle_timeout_s=10, renew_every_s=10)
    assert SessionSettings().idle_ms == 30 * 60 * 1000 and SessionSettings().absolute_ms == 12 * 3600 * 1000


async def test_create_resolve_revoke(client: Any, redis: aioredis.Redis) -> None:
    session = await sessions.create(client, 42, now=utcnow())

    assert len(session.token) == 43 and session.expires_in_s == 30 * 60
    assert await sessions.resolve(client, session.token) == 42
    assert await sessions.resolve(client, session.token) == 42
    assert await sessions.revoke(client, session.token) is True
    assert await sessions.resolve(client, session.token) is None
    assert await sessions.revoke(client, session.token) is False
    assert await redis.zcard(sessions.index_key(42)) == 0


async def test_redis_holds_only_the_hash_of_the_token(client: Any, redis: aioredis.Redis) -> None:
    session = await sessions.create(client, 7, now=utcnow())

    digest = hashlib.sha256(session.token.encode()).hexdigest()
    keys = sorted(k.decode() for k in await redis.keys("*"))
    assert keys == sorted([sessions.session_key(digest), sessions.index_key(7)])
    stored = [await redis.get(sessions.session_key(digest)), *await redis.zrange(sessions.index_key(7), 0, -1)]
    assert all(session.token.encode() not in value for value in stored)
    assert 29 * 60 * 1000 < await redis.pttl(sessions.session_key(digest)) <= 30 * 60 * 1000


async def test_each_token_is_new(client: Any) -> None:
    tokens = {(await sessions.create(client, 1, now=utcnow())).token for _ in range(20)}
    assert len(tokens) == 20


@pytest.mark.parametrize(
    "token",
    ["", "short", "a" * 42, "a" * 44, "a" * 42 + "!", "a" * 42 + "=", "é" * 43, " " + "a" * 42, None, 12345],
)
async def test_malformed_tokens_resolve_to_none_without_a_redis_call(redis_url: str, token: Any) -> None:
    client = await AutoPipeline.connect(redis_url)
    try:
        sent = client.commands_sent
        assert await sessions.resolve(client, token) is None
        assert await sessions.revoke(client, token) is False
        assert client.commands_sent == sent
    finally:
        await client.close()


async def test_well_formed_unknown_token_is_none(client: Any) -> None:
    assert await sessions.resolve(client, "A" * 43) is None
    assert await sessions.revoke(client, "A" * 43) is False


async def test_idle_session_expires(client: Any) -> None:
    settings = SessionSettings(idle_timeout_s=0.4, absolute_timeout_s=60, renew_every_s=0.1)
    session = await sessions.create(client, 5, now=utcnow(), settings=settings)
    assert await sessions.resolve(client, session.token, settings=settings) == 5

    await asyncio.sleep(0.6)

    assert await sessions.resolve(client, session.token, settings=settings) is None


async def test_use_renews_the_idle_timeout(client: Any) -> None:
    settings = SessionSettings(idle_timeout_s=0.5, absolute_timeout_s=60, renew_every_s=0.1)
    session = await sessions.create(client, 5, now=utcnow(), settings=settings)

    for _ in range(6):  # 1.5 s in all: three idle windows, kept alive by use
        await asyncio.sleep(0.25)
        assert await sessions.resolve(client, session.token, settings=settings) == 5

    await asyncio.sleep(0.7)
    assert await sessions.resolve(client, session.token, settings=settings) is None


async def test_renewal_writes_only_once_per_period(client: Any, redis: aioredis.Redis) -> None:
    lazy = SessionSettings(idle_timeout_s=10, absolute_timeout_s=60, renew_every_s=5)
    session = await sessions.create(client, 5, now=utcnow(), settings=lazy)
    key = sessions.session_key(hashlib.sha256(session.token.encode()).hexdigest())
    await asyncio.sleep(0.3)

    assert await sessions.resolve(client, session.token, settings=lazy) == 5
    assert await redis.pttl(key) < 9_800  # not extended: less than renew_every_s of the window was used

    eager = SessionSettings(idle_timeout_s=10, absolute_timeout_s=60, renew_every_s=0.1)
    assert await sessions.resolve(client, session.token, settings=eager) == 5
    assert await redis.pttl(key) > 9_900  # extended back to the full idle window


async def test_absolute_timeout_ends_a_session_in_use(client: Any, redis: aioredis.Redis) -> None:
    settings = SessionSettings(idle_timeout_s=0.6, absolute_timeout_s=1.0, renew_every_s=0.05)
    session = await sessions.create(client, 9, now=utcnow(), settings=settings)
    key = sessions.session_key(hashlib.sha256(session.token.encode()).hexdigest())
    assert session.expires_in_s == 0  # 0.6 s, in whole seconds

    alive = []
    for _ in range(6):
        await asyncio.sleep(0.2)
        alive.append(await sessions.resolve(client, session.token, settings=settings))
        # Renewal never reaches past the absolute deadline.
        assert await redis.pttl(key) <= 1_000

    assert alive[:3] == [9, 9, 9]
    assert alive[5] is None
    await asyncio.sleep(0.1)
    assert await redis.exists(key) == 0


async def test_a_session_past_its_deadline_is_deleted_on_use(client: Any, redis: aioredis.Redis) -> None:
    # Created with a clock 2 s behind: the key still has idle time, but the deadline has passed.
    settings = SessionSettings(idle_timeout_s=60, absolute_timeout_s=1, renew_every_s=1)
    session = await sessions.create(client, 3, now=utcnow() - timedelta(seconds=2), settings=settings)
    key = sessions.session_key(hashlib.sha256(session.token.encode()).hexdigest())
    assert await redis.exists(key) == 1

    assert await sessions.resolve(client, session.token, settings=settings) is None
    assert await redis.exists(key) == 0


async def test_revoke_all_ends_every_session_of_one_candidate(client: Any, redis: aioredis.Redis) -> None:
    mine = [await sessions.create(client, 100, now=utcnow()) for _ in range(3)]
    other = await sessions.create(client, 200, now=utcnow())
    await sessions.revoke(client, mine[0].token)

    assert await sessions.revoke_all(client, 100) == 2

    assert [await sessions.resolve(client, s.token) for s in mine] == [None, None, None]
    assert await sessions.resolve(client, other.token) == 200
    assert await redis.zcard(sessions.index_key(100)) == 0
    assert await sessions.revoke_all(client, 100) == 0
    after = await sessions.create(client, 100, now=utcnow())
    assert await sessions.resolve(client, after.token) == 100


async def test_a_sign_in_racing_a_password_reset_keeps_no_session(client: Any, redis: aioredis.Redis) -> None:
    # Both orders of the race. The reset's steps: the new hash (not modelled), bump the epoch, end every session.
    # 1. The sign-in read the epoch before the reset bumped it and indexes its session after: refused, nothing left.
    before = await sessions.read_epoch(client, "ZhangSan2026")
    await sessions.bump_epoch(client, "zhangsan2026")  # usernames are case-insensitive
    await sessions.revoke_all(client, 300)
    with pytest.raises(sessions.CredentialsChanged):
        await sessions.create(client, 300, now=utcnow(), epoch=before)
    assert await redis.zcard(sessions.index_key(300)) == 0
    assert not [key async for key in redis.scan_iter("eg:session:*")]
    # 2. The sign-in indexed its session before the bump: the reset's revoke_all ends it.
    current = await sessions.read_epoch(client, "zhangsan2026")
    early = await sessions.create(client, 300, now=utcnow(), epoch=current)
    assert await sessions.resolve(client, early.token) == 300
    await sessions.bump_epoch(client, "zhangsan2026")
    assert await sessions.revoke_all(client, 300) == 1
    assert await sessions.resolve(client, early.token) is None
    # A sign-in after the reset, with the epoch as it is now, keeps its session.
    late = await sessions.create(client, 300, now=utcnow(), epoch=await sessions.read_epoch(client, "zhangsan2026"))
    assert await sessions.resolve(client, late.token) == 300


async def test_index_drops_sessions_past_their_deadline(client: Any, redis: aioredis.Redis) -> None:
    settings = SessionSettings(idle_timeout_s=60, absolute_timeout_s=60, renew_every_s=1)
    await sessions.create(client, 8, now=utcnow() - timedelta(seconds=120), settings=settings)
    await sessions.create(client, 8, now=utcnow(), settings=settings)

    assert await redis.zcard(sessions.index_key(8)) == 1
    assert 59_000 < await redis.pttl(sessions.index_key(8)) <= 60_000


async def test_concurrent_requests_resolve_in_one_batch(redis_url: str) -> None:
    client = await AutoPipeline.connect(redis_url)
    try:
        session = await sessions.create(client, 11, now=utcnow())
        batches = client.batches_sent
        results = await asyncio.gather(*(sessions.resolve(client, session.token) for _ in range(50)))
        assert results == [11] * 50
        assert client.batches_sent - batches <= 2  # one EVALSHA each, coalesced (plus a NOSCRIPT reload)
    finally:
        await client.close()
