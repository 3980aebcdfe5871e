"""gcra.lua against real Redis: burst, retry time, cost, all-or-nothing across rules, shadow, TTLs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.scripts import Script, load_scripts

MINUTE_US = 60_000_000
SECOND_US = 1_000_000
PAD_MS = 1_000


@pytest.fixture
def gcra() -> Script:
    """The limiter's script."""
    return load_scripts("ratelimit")["gcra"]


def argv(*rules: tuple[int, int, int, bool], pad_ms: int = PAD_MS) -> list[int]:
    """ARGV for one request whose rules are given as (emission_us, burst, cost, enforce)."""
    args = [pad_ms, 1, len(rules)]
    for emission_us, burst, cost, enforce in rules:
        args += [emission_us, burst * emission_us, cost, 1 if enforce else 0]
    return args


class Reply:
    """The script's flat reply, split into the overall answer and one (allowed, remaining, ms) per rule."""

    def __init__(self, raw: list[Any]) -> None:
        self.allowed = raw[0] == 1
        self.retry_ms = raw[1]
        self.rules = [(raw[i] == 1, raw[i + 1], raw[i + 2]) for i in range(2, len(raw), 3)]


async def run(gcra: Script, redis: aioredis.Redis, keys: list[str], *rules: tuple[int, int, int, bool]) -> Reply:
    return Reply(await gcra.run(redis, keys, argv(*rules)))


def test_header_lists_keys_argv_and_return(gcra: Script) -> None:
    header = [line for line in gcra.source.splitlines() if line.startswith("--")]
    text = "\n".join(header)
    assert "KEYS[i]" in text and "ARGV[1]" in text and "Returns" in text


async def test_allows_up_to_burst_then_denies(gcra: Script, redis: aioredis.Redis) -> None:
    rule = (MINUTE_US, 3, 1, True)
    replies = [await run(gcra, redis, ["k"], rule) for _ in range(4)]

    assert [r.allowed for r in replies] == [True, True, True, False]
    assert [r.rules[0][1] for r in replies] == [2, 1, 0, 0]
    # Allowed: ms until the bucket is full again (1, 2, 3 emissions).
    for n, reply in enumerate(replies[:3], start=1):
        assert n * 60_000 - 100 < reply.rules[0][2] <= n * 60_000
    denied = replies[3]
    assert denied.rules[0][0] is False
    assert 59_000 < denied.retry_ms <= 60_000
    assert denied.rules[0][2] == denied.retry_ms


async def test_retry_time_is_when_the_next_request_passes(gcra: Script, redis: aioredis.Redis) -> None:
    rule = (SECOND_US, 1, 1, True)
    assert (await run(gcra, redis, ["k"], rule)).allowed
    first = await run(gcra, redis, ["k"], rule)
    started = time.monotonic()
    await asyncio.sleep(0.3)
    second = await run(gcra, redis, ["k"], rule)
    elapsed_ms = (time.monotonic() - started) * 1000

    assert not first.allowed and not second.allowed
    assert 900 < first.retry_ms <= 1000
    assert abs((first.retry_ms - second.retry_ms) - elapsed_ms) < 60
    await asyncio.sleep(second.retry_ms / 1000)
    assert (await run(gcra, redis, ["k"], rule)).allowed


async def test_cost_takes_several_units(gcra: Script, redis: aioredis.Redis) -> None:
    heavy = (MINUTE_US, 5, 2, True)
    first = await run(gcra, redis, ["k"], heavy)
    second = await run(gcra, redis, ["k"], heavy)
    third = await run(gcra, redis, ["k"], heavy)
    light = await run(gcra, redis, ["k"], (MINUTE_US, 5, 1, True))

    assert (first.allowed, first.rules[0][1]) == (True, 3)
    assert (second.allowed, second.rules[0][1]) == (True, 1)
    assert (third.allowed, third.rules[0][1]) == (False, 1)  # one unit left, two needed
    assert 59_000 < third.retry_ms <= 60_000
    assert (light.allowed, light.rules[0][1]) == (True, 0)
    assert not (await run(gcra, redis, ["other"], (MINUTE_US, 1, 2, True))).allowed  # cost above burst


async def test_denial_by_one_rule_changes_no_rule(gcra: Script, redis: aioredis.Redis) -> None:
    roomy, tight = (MINUTE_US, 10, 1, True), (MINUTE_US, 1, 1, True)
    keys = ["eg:{rl}:roomy:a", "eg:{rl}:tight:a"]
    assert (await run(gcra, redis, keys, roomy, tight)).allowed
    before = await redis.mget(keys)

    denied = await run(gcra, redis, keys, roomy, tight)

    assert not denied.allowed
    assert denied.rules[0][:2] == (True, 9)  # roomy would allow, reports its unconsumed quota
    assert denied.rules[1][:2] == (False, 0)
    assert await redis.mget(keys) == before
    # The next request on roomy alone still finds 9 of its 10.
    alone = await run(gcra, redis, keys[:1], roomy)
    assert (alone.allowed, alone.rules[0][1]) == (True, 8)


async def test_retry_after_is_the_latest_enforce_retry(gcra: Script, redis: aioredis.Redis) -> None:
    short, long, shadow = (SECOND_US, 1, 1, True), (MINUTE_US, 1, 1, True), (10 * MINUTE_US, 1, 1, False)
    keys = ["s", "l", "h"]
    assert (await run(gcra, redis, keys, short, long, shadow)).allowed

    denied = await run(gcra, redis, keys, short, long, shadow)

    assert not denied.allowed
    assert 900 < denied.rules[0][2] <= 1_000
    assert 59_000 < denied.rules[1][2] <= 60_000
    assert denied.retry_ms == denied.rules[1][2]  # the shadow rule's ten minutes do not count


async def test_shadow_rule_reports_without_blocking_or_consuming(gcra: Script, redis: aioredis.Redis) -> None:
    enforce, shadow = (MINUTE_US, 10, 1, True), (MINUTE_US, 1, 1, False)
    keys = ["eg:{rl}:e:a", "eg:{rl}:s:a"]
    assert (await run(gcra, redis, keys, enforce, shadow)).allowed
    enforce_before, shadow_before = await redis.mget(keys)

    reply = await run(gcra, redis, keys, enforce, shadow)

    assert reply.allowed
    assert reply.rules[0][:2] == (True, 8)
    assert reply.rules[1][0] is False and 59_000 < reply.rules[1][2] <= 60_000
    enforce_after, shadow_after = await redis.mget(keys)
    assert shadow_after == shadow_before
    assert int(enforce_after or 0) == int(enforce_before or 0) + MINUTE_US
    assert (await run(gcra, redis, keys[1:], shadow)).allowed is True  # alone, a shadow rule never blocks


async def test_keys_expire_when_their_bucket_is_full_again(gcra: Script, redis: aioredis.Redis) -> None:
    rule = (SECOND_US, 3, 1, True)
    await run(gcra, redis, ["k"], rule)
    one = await redis.pttl("k")
    await run(gcra, redis, ["k"], rule)
    await run(gcra, redis, ["k"], rule)
    three = await redis.pttl("k")

    assert 1_000 + PAD_MS - 100 < one <= 1_000 + PAD_MS
    assert 3_000 + PAD_MS - 100 < three <= 3_000 + PAD_MS
    tat = int(await redis.get("k") or 0)
    redis_now_s, redis_now_us = await redis.time()
    assert abs(tat - (redis_now_s * SECOND_US + redis_now_us) - 3 * SECOND_US) < 100_000


async def test_unreadable_state_counts_as_empty(gcra: Script, redis: aioredis.Redis) -> None:
    await redis.set("k", "garbage")
    reply = await run(gcra, redis, ["k"], (MINUTE_US, 2, 1, True))
    assert (reply.allowed, reply.rules[0][1]) == (True, 1)


async def test_a_batch_decides_requests_in_order(gcra: Script, redis: aioredis.Redis) -> None:
    """Three requests in one call on a burst-2 rule: the third sees what the first two took."""
    emission, tolerance = MINUTE_US, 2 * MINUTE_US
    one = [1, emission, tolerance, 1, 1]
    reply = await gcra.run(redis, ["eg:{rl}:b:x"] * 3, [PAD_MS, 3, *one, *one, *one])

    answers = [reply[i] for i in range(0, len(reply), 5)]
    assert answers == [1, 1, 0]
    assert reply[3] == 1 and reply[8] == 0  # remaining after the first and the second
    stored = int(await redis.get("eg:{rl}:b:x"))
    again = Reply(await gcra.run(redis, ["eg:{rl}:b:x"], argv((emission, 2, 1, True))))
    assert not again.allowed and int(await redis.get("eg:{rl}:b:x")) == stored


async def test_a_check_only_rule_refuses_but_never_consumes(gcra: Script, redis: aioredis.Redis) -> None:
    """Flag 3 (enforce + check only): allowed requests leave the key alone; a consuming call fills it."""
    emission, burst = MINUTE_US, 2
    check_only = [PAD_MS, 1, 1, emission, burst * emission, 1, 3]
    consume = [PAD_MS, 1, 1, emission, burst * emission, 1, 1]
    for _ in range(5):
        assert (await gcra.run(redis, ["eg:{rl}:f:a"], check_only))[0] == 1
    assert await redis.exists("eg:{rl}:f:a") == 0

    for _ in range(2):
        assert (await gcra.run(redis, ["eg:{rl}:f:a"], consume))[0] == 1
    refused = await gcra.run(redis, ["eg:{rl}:f:a"], check_only)
    assert refused[0] == 0 and refused[1] > 0
