"""Candidate repository against real PostgreSQL and Redis: creation, conflicts under concurrency,
the cached credential record (hit, miss, negative entry, invalidation, races), profile, recovery lookup."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import candidates, db, migrate
from core.accounts import Education, Registration
from core.candidates import (
    CREDENTIALS_NEGATIVE_TTL_S,
    AccountConflict,
    Credentials,
    IdNumberTaken,
    PhoneTaken,
    RecoveryRecord,
    UsernameTaken,
    create,
    credentials,
    credentials_key,
    find_by_id_number,
    profile,
    update_password,
)
from core.errors import NotFound, StorageUnavailable
from core.idcards import make_resident_id
from core.passwords import PasswordHasher, PasswordSettings
from core.redis import AutoPipeline
from seed import SEED_SECURITY_ANSWER, candidate_credentials, seed

HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
ANSWER_HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$YW5zd2Vyc2Fuc3dlcnNhbnN3ZXJzYW5zd2Vyc2Fucw"


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=25))
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def cache(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    """The hot-path client on the (flushed) test Redis database."""
    client = await AutoPipeline.connect(redis_url)
    try:
        yield client
    finally:
        await client.close()


def registration(**changes: Any) -> Registration:
    """A valid registration whose username, id number and phone no other test uses."""
    rng = random.Random(secrets.randbits(64))
    reg = Registration(
        username="t" + secrets.token_hex(6),
        password="Qiu#2026pass",
        name="王晓[沛]",
        id_type="resident_id",
        id_number=make_resident_id(
            "370112", date(1960 + rng.randrange(40), 1 + rng.randrange(12), 1 + rng.randrange(28)), rng.randrange(1000)
        ),
        phone=f"199{rng.randrange(10**8):08d}",
        email="t@example.com",
        security_question="我的小学校名？",
        security_answer="实验小学",
        educations=(
            Education("C-1", "北京大学", date(2012, 6, 1), "经济学", "bachelor", "full_time"),
            Education("C-2", "清华大学", date(2015, 7, 1), "金融学", "master", "part_time"),
        ),
    )  # fmt: skip
    return replace(reg, **changes)


async def _create(pg: asyncpg.Pool | asyncpg.Connection, reg: Registration, **kw: Any) -> int:
    return await create(pg, reg, password_hash=HASH, answer_hash=ANSWER_HASH, **kw)


# -- create ---------------------------------------------------------------------------------------------


async def test_create_stores_candidate_and_educations(pool: asyncpg.Pool) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    row = await pool.fetchrow("SELECT * FROM candidates WHERE id = $1", candidate_id)
    assert (row["username"], row["name"], row["id_number"], row["phone"]) == (
        reg.username, reg.name, reg.id_number, reg.phone)  # fmt: skip
    assert (row["password_hash"], row["security_answer_hash"]) == (HASH, ANSWER_HASH)
    edus = await pool.fetch(
        "SELECT cert_no, school, graduated_on, major, level, mode FROM educations WHERE candidate_id = $1 ORDER BY id",
        candidate_id,
    )
    assert [Education(**dict(e)) for e in edus] == list(reg.educations)


async def test_fifty_concurrent_creations_of_one_id_number_give_one_account(pool: asyncpg.Pool) -> None:
    first = registration()
    regs = [first] + [replace(registration(), id_number=first.id_number) for _ in range(49)]
    results = await asyncio.gather(*(_create(pool, reg) for reg in regs), return_exceptions=True)
    created = [r for r in results if isinstance(r, int)]
    taken = [r for r in results if isinstance(r, IdNumberTaken)]
    assert (len(created), len(taken)) == (1, 49), [r for r in results if not isinstance(r, (int, IdNumberTaken))]
    assert await pool.fetchval("SELECT count(*) FROM candidates WHERE id_number = $1", first.id_number) == 1
    winner = await pool.fetchval("SELECT id FROM candidates WHERE id_number = $1", first.id_number)
    assert created == [winner]
    # No educations were left behind by the 49 that failed.
    assert await pool.fetchval(
        "SELECT count(*) FROM educations e JOIN candidates c ON c.id = e.candidate_id WHERE c.id_number = $1",
        first.id_number,
    ) == 2
    assert taken[0].code == "id_number_taken" and taken[0].field == "id_number"


async def test_same_number_under_another_id_type_is_another_person(pool: asyncpg.Pool) -> None:
    number = "E" + f"{secrets.randbelow(10**8):08d}"
    await _create(pool, registration(id_type="passport", id_number=number))
    await _create(pool, registration(id_type="hk_macau_permit", id_number=number.replace("E", "H")))
    await _create(pool, registration(id_type="military_officer", id_number=number))
    with pytest.raises(IdNumberTaken):
        await _create(pool, registration(id_type="passport", id_number=number))


async def test_phone_and_username_conflicts(pool: asyncpg.Pool) -> None:
    taken = registration()
    await _create(pool, taken)
    with pytest.raises(PhoneTaken) as phone:
        await _create(pool, registration(phone=taken.phone))
    with pytest.raises(UsernameTaken) as username:
        await _create(pool, registration(username=taken.username))
    assert (phone.value.code, username.value.code) == ("phone_taken", "username_taken")
    assert isinstance(phone.value, AccountConflict) and isinstance(username.value, AccountConflict)
    assert isinstance(phone.value.__cause__, asyncpg.UniqueViolationError)


async def test_concurrent_same_phone_and_same_username(pool: asyncpg.Pool) -> None:
    phone, username = registration().phone, registration().username
    by_phone = [registration(phone=phone) for _ in range(20)]
    by_name = [registration(username=username) for _ in range(20)]
    results = await asyncio.gather(*(_create(pool, r) for r in by_phone + by_name), return_exceptions=True)
    assert sum(isinstance(r, int) for r in results[:20]) == 1
    assert sum(isinstance(r, PhoneTaken) for r in results[:20]) == 19
    assert sum(isinstance(r, int) for r in results[20:]) == 1
    assert sum(isinstance(r, UsernameTaken) for r in results[20:]) == 19


async def test_a_failed_education_insert_leaves_no_candidate(pool: asyncpg.Pool) -> None:
    bad = registration(educations=(Education("C-9", "某校", date(2012, 6, 1), "某专业", "phd", "full_time"),))
    with pytest.raises(asyncpg.CheckViolationError):
        await _create(pool, bad)
    assert await pool.fetchval("SELECT count(*) FROM candidates WHERE username = $1", bad.username) == 0


async def test_create_inside_the_callers_transaction(pg: asyncpg.Connection) -> None:
    reg = registration()
    async with pg.transaction():
        candidate_id = await _create(pg, reg)
        with pytest.raises(UsernameTaken):
            async with pg.transaction():  # a savepoint keeps the outer transaction usable
                await _create(pg, registration(username=reg.username))
        assert await pg.fetchval("SELECT id FROM candidates WHERE username = $1", reg.username) == candidate_id
    assert await pg.fetchval("SELECT count(*) FROM educations WHERE candidate_id = $1", candidate_id) == 2


# -- credentials cache ----------------------------------------------------------------------------------


async def test_miss_reads_postgresql_then_hit_does_not(
    pool: asyncpg.Pool, cache: AutoPipeline, redis: aioredis.Redis
) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    expected = Credentials(candidate_id, reg.username, HASH)
    assert await credentials(cache, pool, reg.username) == expected
    key = credentials_key(reg.username)
    assert key == f"eg:cred:{reg.username}"
    assert 3500 < await redis.ttl(key) <= 3600
    # Gone from PostgreSQL, still served: the second read never reached it.
    await pool.execute("DELETE FROM candidates WHERE id = $1", candidate_id)
    assert await credentials(cache, pool, reg.username) == expected
    assert await credentials(cache, pool, reg.username.upper()) == expected  # case-insensitive


async def test_unknown_username_is_cached_briefly(
    pool: asyncpg.Pool, cache: AutoPipeline, redis: aioredis.Redis
) -> None:
    reg = registration()
    assert await credentials(cache, pool, reg.username) is None
    key = credentials_key(reg.username)
    assert await redis.get(key) == b"-"
    assert 0 < await redis.ttl(key) <= CREDENTIALS_NEGATIVE_TTL_S
    # The account appears behind the cache's back: the negative entry still answers.
    await _create(pool, reg)
    assert await credentials(cache, pool, reg.username) is None
    # Created through create(redis=…), the negative entry is dropped at once.
    other = registration()
    assert await credentials(cache, pool, other.username) is None
    other_id = await _create(pool, other, redis=cache)
    assert await credentials(cache, pool, other.username) == Credentials(other_id, other.username, HASH)


async def test_storm_of_unknown_names_reaches_postgresql_once_each(
    pool: asyncpg.Pool, cache: AutoPipeline, pg_dsn: str
) -> None:
    names = [f"ghost{secrets.token_hex(4)}" for _ in range(20)]
    for name in names:
        assert await credentials(cache, pool, name) is None
    # PostgreSQL unreachable now: every name is answered from Redis.
    closed = await db.create_pool(db.PoolSettings(pg_dsn, min_size=0, max_size=1))
    await closed.close()
    results = await asyncio.gather(*(credentials(cache, closed, name) for name in names * 10))
    assert results == [None] * 200


async def test_impossible_usernames_touch_nothing(
    pool: asyncpg.Pool, cache: AutoPipeline, redis: aioredis.Redis
) -> None:
    for name in ("", "ab", "x" * 5000, "王小明abc", "a b c d e f", "1abcdef"):
        assert await credentials(cache, pool, name) is None
    assert await redis.dbsize() == 0


async def test_update_password_refreshes_the_cached_record(
    pool: asyncpg.Pool, cache: AutoPipeline, redis: aioredis.Redis
) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    assert (await credentials(cache, pool, reg.username)).password_hash == HASH  # type: ignore[union-attr]
    await update_password(pool, cache, candidate_id, "new-hash")
    assert await pool.fetchval("SELECT password_hash FROM candidates WHERE id = $1", candidate_id) == "new-hash"
    assert await credentials(cache, pool, reg.username) == Credentials(candidate_id, reg.username, "new-hash")
    assert await redis.ttl(credentials_key(reg.username)) > 3500
    with pytest.raises(NotFound):
        await update_password(pool, cache, 10**12, "x")


async def test_fill_racing_a_password_change_cannot_cache_the_old_hash(
    pool: asyncpg.Pool, cache: AutoPipeline
) -> None:
    """A login reads the old hash from PostgreSQL; the password changes before the login fills the cache."""
    reg = registration()
    candidate_id = await _create(pool, reg)

    class ChangeDuringRead:
        """The pool, except that a password change lands between the read and the cache fill."""

        async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
            row = await pool.fetchrow(query, *args)
            await update_password(pool, cache, candidate_id, "changed")
            return row

    stale = await credentials(cache, ChangeDuringRead(), reg.username)  # type: ignore[arg-type]
    assert stale is not None and stale.password_hash == HASH  # what was true when it read
    assert (await credentials(cache, pool, reg.username)).password_hash == "changed"  # type: ignore[union-attr]


async def test_unreadable_cache_entry_is_replaced(
    pool: asyncpg.Pool, cache: AutoPipeline, redis: aioredis.Redis
) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    await redis.set(credentials_key(reg.username), b"{not json")
    assert await credentials(cache, pool, reg.username) == Credentials(candidate_id, reg.username, HASH)
    assert (await redis.get(credentials_key(reg.username))).startswith(b"{")  # type: ignore[union-attr]
    assert await credentials(cache, pool, reg.username) == Credentials(candidate_id, reg.username, HASH)


async def test_redis_down_is_storage_unavailable(pool: asyncpg.Pool) -> None:
    down = AutoPipeline("redis://127.0.0.1:1/11", timeout_ms=200)
    try:
        with pytest.raises(StorageUnavailable) as info:
            await credentials(down, pool, "zhangsan01")
        assert info.value.store == "redis"
    finally:
        await down.close()


# -- profile and recovery -----------------------------------------------------------------------------------


async def test_profile(pool: asyncpg.Pool) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    me = await profile(pool, candidate_id)
    created_at = me.pop("created_at")
    assert created_at.endswith("+08:00")
    education_ids = [e.pop("education_id") for e in me["educations"]]
    assert education_ids == sorted(education_ids)
    assert me == {
        "candidate_id": candidate_id,
        "username": reg.username,
        "name": reg.name,
        "id_type": "resident_id",
        "id_number": reg.id_number[:10] + "****" + reg.id_number[14:],
        "phone": reg.phone,
        "email": reg.email,
        "security_question": reg.security_question,
        "educations": [
            {"cert_no": "C-1", "school": "北京大学", "graduated_on": "2012-06", "major": "经济学",
             "level": "bachelor", "mode": "full_time", "status": "not_checked"},
            {"cert_no": "C-2", "school": "清华大学", "graduated_on": "2015-07", "major": "金融学",
             "level": "master", "mode": "part_time", "status": "not_checked"},
        ],
        "degrees": [],
        "agreement": {"accepted_version": None, "accepted_at": None, "current_version": None, "required": False},
    }  # fmt: skip
    with pytest.raises(NotFound):
        await profile(pool, 10**12)


async def test_profile_of_a_passport_holder_masks_too(pool: asyncpg.Pool) -> None:
    number = "G" + f"{secrets.randbelow(10**8):08d}"
    candidate_id = await _create(pool, registration(id_type="passport", id_number=number, name="JOHN SMITH"))
    assert (await profile(pool, candidate_id))["id_number"] == number[:2] + "*****" + number[-2:]


async def test_find_by_id_number(pool: asyncpg.Pool) -> None:
    reg = registration()
    candidate_id = await _create(pool, reg)
    expected = RecoveryRecord(candidate_id, reg.name, reg.phone, reg.security_question, ANSWER_HASH)
    assert await find_by_id_number(pool, reg.id_number) == expected
    full_width = "".join(chr(ord(ch) + 0xFEE0) for ch in reg.id_number.lower())
    assert await find_by_id_number(pool, f" {full_width}\u3000") == expected  # normalised
    assert await find_by_id_number(pool, reg.id_number, id_type="resident_id") == expected
    assert await find_by_id_number(pool, reg.id_number, id_type="passport") is None
    assert await find_by_id_number(pool, make_resident_id("370112", date(1959, 1, 1), 1)) is None


async def test_one_number_of_two_id_types_finds_one_account_whatever_the_name(pool: asyncpg.Pool) -> None:
    number = "E" + f"{secrets.randbelow(10**8):08d}"
    officer = await _create(pool, registration(id_type="military_officer", id_number=number, name="李四"))
    passport = await _create(pool, registration(id_type="passport", id_number=number, name="JOHN SMITH"))
    found = await find_by_id_number(pool, number)
    assert found is not None and (found.candidate_id, found.name) == (officer, "李四")
    found = await find_by_id_number(pool, number, id_type="passport")
    assert found is not None and (found.candidate_id, found.name) == (passport, "JOHN SMITH")


async def test_find_uses_the_id_number_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a tiny test table would otherwise be scanned
        rows = await conn.fetch("EXPLAIN " + candidates._FIND_FOR_RECOVERY, "x", ["resident_id", "passport"])
    plan = "\n".join(r[0] for r in rows)
    assert "candidates_id_number_key" in plan, plan


async def test_seeded_candidates_log_in_with_the_seed_password(pg_dsn: str, cache: AutoPipeline) -> None:
    """The seed's one argon2id hash: a seeded candidate is found and verifies (in a private database)."""
    dsn = db.with_database(pg_dsn, f"examgate_test_cand_{secrets.token_hex(3)}")
    await migrate.create_and_migrate(dsn)
    hasher = PasswordHasher(PasswordSettings(threads=1))
    try:
        await seed(dsn, 3)
        seeded_pool = await db.create_pool(db.PoolSettings(dsn, min_size=1, max_size=2))
        try:
            who = candidate_credentials(2)
            found = await credentials(cache, seeded_pool, who.username)
            assert found is not None and found.username == who.username
            assert await hasher.verify(found.password_hash, who.password)
            assert not await hasher.verify(found.password_hash, who.password + "x")
            recovery = await find_by_id_number(seeded_pool, who.id_number)
            assert recovery is not None and recovery.candidate_id == found.candidate_id
            assert recovery.name == who.name
            assert await hasher.verify_answer(recovery.security_answer_hash, SEED_SECURITY_ANSWER)
        finally:
            await seeded_pool.close()
    finally:
        hasher.close()
        await db.drop_database(dsn)
