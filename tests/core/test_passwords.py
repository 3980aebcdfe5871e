"""argon2id hashing in a bounded pool: verify, dummy verify, rehash, PoolFull at once; the password policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from core.passwords import (
    HasherStats,
    PasswordHasher,
    PasswordSettings,
    PoolFull,
    check_policy,
    normalise_answer,
)
from seed import (
    SEED_PASSWORD,
    SEED_PASSWORD_HASH,
    SEED_SECURITY_ANSWER,
    SEED_SECURITY_ANSWER_HASH,
)

pytestmark = pytest.mark.unit

# Small parameters keep the suite fast; the behaviour does not depend on them.
FAST = PasswordSettings(memory_kib=8192, time_cost=1, threads=2, max_queue=8)


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    h = PasswordHasher(FAST)
    try:
        yield h
    finally:
        h.close()


async def test_hash_then_verify(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("Right#Pass1")
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert await hasher.verify(stored, "Right#Pass1") is True
    assert await hasher.verify(stored, "Wrong#Pass1") is False
    assert await hasher.hash("Right#Pass1") != stored  # salted


async def test_unknown_user_and_unreadable_hash_are_false_after_a_real_verify(hasher: PasswordHasher) -> None:
    before = hasher.stats().verified
    assert await hasher.verify(None, "whatever") is False
    assert await hasher.verify("not-a-hash", "whatever") is False
    assert await hasher.verify("$argon2id$v=19$m=8192,t=1,p=1$zzz", "whatever") is False
    assert hasher.stats().verified == before + 3


async def test_unknown_user_costs_what_a_wrong_password_costs() -> None:
    h = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=3, threads=1, max_queue=4))
    try:
        stored = await h.hash("Right#Pass1")

        spent = {"wrong": 0.0, "unknown": 0.0, "broken": 0.0}
        targets = {"wrong": stored, "unknown": None, "broken": "garbage"}
        await h.verify(stored, "Wrong#Pass1")  # warm-up
        for _ in range(6):  # interleaved, so that load from other suites falls on all three alike
            for kind, target in targets.items():
                started = time.perf_counter()
                assert not await h.verify(target, "Wrong#Pass1")
                spent[kind] += time.perf_counter() - started
        # Same work; generous bounds because other suites share the machine's cores.
        assert 0.5 < spent["unknown"] / spent["wrong"] < 2.0
        assert 0.5 < spent["broken"] / spent["wrong"] < 2.0
    finally:
        h.close()


async def test_security_answer_is_normalised(hasher: PasswordHasher) -> None:
    assert normalise_answer("  Beijing  No.１ ") == "beijing no.1"
    stored = await hasher.hash_answer("  Beijing ")
    assert await hasher.verify_answer(stored, "BEIJING")
    assert await hasher.verify_answer(stored, "ｂｅｉｊｉｎｇ")  # full width, as an IME types it
    assert not await hasher.verify_answer(stored, "Shanghai")


async def test_needs_rehash_after_a_parameter_change(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("Right#Pass1")
    assert hasher.needs_rehash(stored) is False
    stronger = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=2, threads=1))
    longer_salt = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=1, salt_len=32, threads=1))
    try:
        assert stronger.needs_rehash(stored) is True
        assert longer_salt.needs_rehash(stored) is True
        # The old hash still verifies under new settings: that is what makes rehash-on-login possible.
        assert await stronger.verify(stored, "Right#Pass1")
        assert stronger.needs_rehash(await stronger.hash("Right#Pass1")) is False
    finally:
        stronger.close()
        longer_salt.close()
    assert hasher.needs_rehash("garbage") is True


async def test_pool_full_is_raised_at_once() -> None:
    # One thread, one waiting place: two jobs fit, the third is refused without waiting.
    h = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=16, threads=1, max_queue=1))
    try:
        stored = await h.hash("Right#Pass1")
        running = [asyncio.create_task(h.verify(stored, "Right#Pass1")) for _ in range(2)]
        await asyncio.sleep(0)
        assert h.in_flight == 2
        started = time.perf_counter()
        with pytest.raises(PoolFull) as info:
            await h.verify(stored, "Right#Pass1")
        assert time.perf_counter() - started < 0.05  # a verify takes far longer
        with pytest.raises(PoolFull):
            await h.hash("Other#Pass1")
        assert info.value.retry_after_s >= 1
        assert h.stats().rejected == 2
        assert await asyncio.gather(*running) == [True, True]
        assert h.in_flight == 0
        assert await h.verify(stored, "Right#Pass1")  # room again
    finally:
        h.close()


async def test_retry_after_grows_with_the_queue() -> None:
    h = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=1, threads=1, max_queue=2000, max_wait_ms=0))
    try:
        h._mean_verify_s = 0.1  # a known mean: 100 ms per verify on one thread
        assert h.retry_after_s() == 1  # empty pool: at least 1
        jobs = [asyncio.create_task(h.verify(None, "x")) for _ in range(40)]
        await asyncio.sleep(0)
        # ~40 jobs × 100 ms / 1 thread (the mean moves a little as the first jobs finish).
        assert 3 <= h.retry_after_s() <= 5
        await asyncio.gather(*jobs)
    finally:
        h.close()


async def test_cancelled_caller_frees_its_place_when_the_job_ends() -> None:
    h = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=4, threads=1, max_queue=3))
    try:
        stored = await h.hash("Right#Pass1")
        tasks = [asyncio.create_task(h.verify(stored, "Right#Pass1")) for _ in range(4)]
        await asyncio.sleep(0)
        assert h.in_flight == 4
        for task in tasks[1:]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] is True
        for _ in range(200):
            if h.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert h.in_flight == 0
    finally:
        h.close()


async def test_stats(hasher: PasswordHasher) -> None:
    await asyncio.gather(*(hasher.verify(None, "x") for _ in range(4)))
    stats = hasher.stats()
    assert isinstance(stats, HasherStats)
    assert (stats.in_flight, stats.capacity, stats.threads, stats.rejected, stats.verified) == (0, 10, 2, 0, 4)
    assert 0 < stats.mean_verify_ms < 2000
    assert hasher.mean_verify_ms == pytest.approx(stats.mean_verify_ms)


async def test_hashing_does_not_block_the_event_loop() -> None:
    """argon2 runs on the pool's threads without the GIL: the loop keeps ticking during a long verify."""
    h = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=20, threads=1, max_queue=1))
    try:
        stored = await h.hash("Right#Pass1")
        job = asyncio.create_task(h.verify(stored, "Right#Pass1"))
        gaps: list[float] = []
        last = time.perf_counter()
        while not job.done():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        assert await job
        assert len(gaps) >= 5  # the loop ran many times while the verify was under way
        assert sorted(gaps)[len(gaps) // 2] < 0.02  # and it was not held up for the verify's length
    finally:
        h.close()


async def test_seed_hashes_verify_with_default_settings() -> None:
    h = PasswordHasher(PasswordSettings(threads=1))
    try:
        assert await h.verify(SEED_PASSWORD_HASH, SEED_PASSWORD)
        assert await h.verify_answer(SEED_SECURITY_ANSWER_HASH, SEED_SECURITY_ANSWER)
        assert not h.needs_rehash(SEED_PASSWORD_HASH)
        assert not h.needs_rehash(SEED_SECURITY_ANSWER_HASH)
    finally:
        h.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        PasswordSettings(threads=0)
    with pytest.raises(ValueError):
        PasswordSettings(max_queue=-1)
    assert PasswordSettings(threads=2, max_queue=5).capacity == 7


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1#xyz9", None),  # 8, four classes
        ("abcdef12#", None),  # three classes: lower, digit, symbol
        ("ABCDEF12a", None),  # upper, digit, lower
        ("A" * 16 + "b" * 15 + "1", None),  # 32
        ("Ab1#xyz", "too_short"),
        ("A" * 16 + "b" * 16 + "1", "too_long"),
        ("abcdefgh12", "too_few_character_classes"),
        ("ABCDEFGH!!", "too_few_character_classes"),
        ("Ab1 #xyz9", "invalid_characters"),  # space
        ("Ab1#xyz9中", "invalid_characters"),
        ("Ab1#xyz9\t", "invalid_characters"),
        ("Ab1#xyz9é", "invalid_characters"),
        ("X#1zhangsan01", "contains_username"),
        ("X#1ZHANGSAN01", "contains_username"),  # case-insensitively
        ("a#11010119900307803X", "contains_id_number"),
        ("a#11010119900307803x", "contains_id_number"),
    ],
)
def test_policy(password: str, problem: str | None) -> None:
    assert check_policy(password, username="zhangsan01", id_number="11010119900307803X") == problem


def test_policy_without_identity() -> None:
    assert check_policy("Ab1#xyz9") is None
    assert check_policy("Ab1#xyz9", username="", id_number="") is None


async def test_a_job_that_would_wait_too_long_is_refused_at_once() -> None:
    """The time bound: with verifies measured at ~N ms, a pool queue longer than max_wait_ms refuses."""
    hasher = PasswordHasher(PasswordSettings(memory_kib=8192, time_cost=1, threads=1, max_queue=1000, max_wait_ms=1))
    try:
        hasher.check_capacity()  # an empty pool accepts: one job finishes within a verify
        jobs = [asyncio.ensure_future(hasher.verify(None, "x")) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(PoolFull):
            hasher.check_capacity()
        await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        hasher.close()
