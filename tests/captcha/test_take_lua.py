"""take.lua against real Redis: FIFO pop, answer armed with its TTL, nil when empty, bad entries refused."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from captcha import keys
from captcha.pool import encode_entry
from core.scripts import Script, load_scripts

ID_A = "A" * 22
ID_B = "B" * 22


@pytest.fixture
def take() -> Script:
    """The pool's script."""
    return load_scripts("captcha")["take"]


def test_header_lists_keys_argv_and_return(take: Script) -> None:
    header = "\n".join(line for line in take.source.splitlines() if line.startswith("--"))
    assert "KEYS[1]" in header and "ARGV[1]" in header and "ARGV[2]" in header and "Returns" in header


async def test_pops_oldest_and_arms_its_answer(take: Script, redis: aioredis.Redis) -> None:
    png_a = b"\x89PNG\r\n\x1a\n\nbinary\n\x00a"
    await redis.rpush(keys.POOL, encode_entry(ID_A, "01234", png_a), encode_entry(ID_B, "56789", b"png-b"))

    entry = await take.run(redis, [keys.POOL], [keys.ANSWER_PREFIX, 120])

    assert entry == encode_entry(ID_A, "01234", png_a)
    assert await redis.get(keys.answer_key(ID_A)) == b"01234"
    assert 118 <= await redis.ttl(keys.answer_key(ID_A)) <= 120
    assert await redis.exists(keys.answer_key(ID_B)) == 0
    assert await redis.lrange(keys.POOL, 0, -1) == [encode_entry(ID_B, "56789", b"png-b")]


async def test_empty_pool_gives_nil_and_writes_nothing(take: Script, redis: aioredis.Redis) -> None:
    assert await take.run(redis, [keys.POOL], [keys.ANSWER_PREFIX, 60]) is None
    assert await redis.dbsize() == 0


async def test_malformed_entry_is_dropped_with_an_error(take: Script, redis: aioredis.Redis) -> None:
    await redis.rpush(keys.POOL, b"no separators here", b"\n12345\npng", encode_entry(ID_B, "56789", b"png"))

    for _ in range(2):
        with pytest.raises(ResponseError, match="malformed captcha pool entry"):
            await take.run(redis, [keys.POOL], [keys.ANSWER_PREFIX, 60])
    assert await take.run(redis, [keys.POOL], [keys.ANSWER_PREFIX, 60]) == encode_entry(ID_B, "56789", b"png")
    assert await redis.keys("*") == [keys.answer_key(ID_B).encode()]
