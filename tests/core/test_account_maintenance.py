"""Account maintenance against real PostgreSQL and Redis: the record limits under racing requests, a delete
racing a verification, phone changes racing for one number, sessions renewed, masking."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import account_maintenance as m
from core import candidates, db, sessions
from core.accounts import Degree, Education
from core.candidates import PhoneTaken
from core.errors import NotFound
from core.phone_codes import CodeInvalid
from core.redis import AutoPipeline
from core.timeutil import utcnow
from tests.core.test_candidates import ANSWER_HASH, HASH, registration

SETTINGS = sessions.SessionSettings()


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=25))
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def cache(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[AutoPipeline]:
    client = await AutoPipeline.connect(redis_url)
    try:
        yield client
    finally:
        await client.close()


async def _candidate(pool: asyncpg.Pool, **changes: object) -> int:
    return await candidates.create(pool, registration(**changes), password_hash=HASH, answer_hash=ANSWER_HASH)


def _education(cert_no: str) -> Education:
    return Education(cert_no, "山东大学", date(2010, 7, 1), "会计学", "bachelor", "full_time")


@pytest.mark.unit
def test_masks_keep_only_what_identifies_nothing() -> None:
    assert m.mask_phone("13912345678") == "139****5678"
    assert m.mask_email("zhangsan@example.com") == "z***@example.com"


async def test_racing_adds_stop_at_the_limit(pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)  # two educations already
    results = await asyncio.gather(
        *(m.add_record(pool, m.EDUCATIONS, candidate_id, _education(f"N-{i}")) for i in range(20)),
        return_exceptions=True)
    refused = Counter(r.code for r in results if isinstance(r, m.RecordRefused))
    added = [r for r in results if isinstance(r, dict)]
    assert len(added) == m.EDUCATIONS.max_records - 2 and refused == {"too_many_educations": 20 - len(added)}
    assert await pool.fetchval("SELECT count(*) FROM educations WHERE candidate_id = $1",
                               candidate_id) == m.EDUCATIONS.max_records
    assert all(a["status"] == "not_checked" and a["added_at"] for a in added)
    # One audit row per record added, none for a refusal.
    assert await pool.fetchval("SELECT count(*) FROM account_events WHERE candidate_id = $1 AND action = "
                               "'add_education'", candidate_id) == len(added)


async def test_racing_adds_of_one_certificate_store_one(pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)
    degree = Degree("D-1", "山东大学", date(2010, 7, 1), "会计学", "bachelor", "academic")
    results = await asyncio.gather(*(m.add_record(pool, m.DEGREES, candidate_id, degree) for _ in range(10)),
                                   return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert {r.code for r in results if isinstance(r, m.RecordRefused)} == {"duplicate_cert_no"}


async def test_racing_deletes_keep_the_last_education(pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)
    await m.add_record(pool, m.EDUCATIONS, candidate_id, _education("C-3"))
    ids = [row["id"] for row in await pool.fetch("SELECT id FROM educations WHERE candidate_id = $1", candidate_id)]
    results = await asyncio.gather(*(m.delete_record(pool, m.EDUCATIONS, candidate_id, i) for i in ids),
                                   return_exceptions=True)
    assert sum(r is None for r in results) == 2
    assert [r.code for r in results if isinstance(r, m.RecordRefused)] == ["last_education"]
    assert await pool.fetchval("SELECT count(*) FROM educations WHERE candidate_id = $1", candidate_id) == 1


async def test_a_delete_racing_a_verification_never_deletes_a_verified_record(pool: asyncpg.Pool) -> None:
    for _ in range(10):
        candidate_id = await _candidate(pool)
        record = await m.add_record(pool, m.EDUCATIONS, candidate_id, _education("C-3"))
        record_id = record["education_id"]
        verified, deleted = await asyncio.gather(
            m.set_status(pool, m.EDUCATIONS, candidate_id, record_id, "verified", operator="ops", note=None,
                         scope=None),
            m.delete_record(pool, m.EDUCATIONS, candidate_id, record_id), return_exceptions=True)
        status = await pool.fetchval("SELECT status FROM educations WHERE id = $1", record_id)
        if deleted is None:  # deleted first: the operator found nothing
            assert isinstance(verified, NotFound) and status is None
        else:  # verified first: the delete was refused
            assert isinstance(deleted, m.RecordRefused) and deleted.code == "record_verified"
            assert status == "verified" and verified["checked_by"] == "ops"


async def test_status_is_scoped_and_audited_with_the_operator(pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)  # a resident id of Shandong (37)
    record_id = await pool.fetchval("SELECT min(id) FROM educations WHERE candidate_id = $1", candidate_id)
    with pytest.raises(NotFound):
        await m.set_status(pool, m.EDUCATIONS, candidate_id, record_id, "verified", operator="bj", note=None,
                           scope={"11"})
    other = await _candidate(pool)
    with pytest.raises(NotFound):  # this record named under another candidate
        await m.set_status(pool, m.EDUCATIONS, other, record_id, "verified", operator="sd", note=None, scope={"37"})
    done = await m.set_status(pool, m.EDUCATIONS, candidate_id, record_id, "needs_manual", operator="sd",
                              note="证书编号查询不到", scope={"37"})
    assert (done["status"], done["checked_by"]) == ("needs_manual", "sd") and done["checked_at"]
    back = await m.set_status(pool, m.EDUCATIONS, candidate_id, record_id, "not_checked", operator="sd", note=None,
                              scope=None)
    assert (back["status"], back["checked_by"], back["checked_at"]) == ("not_checked", None, None)
    again = await m.set_status(pool, m.EDUCATIONS, candidate_id, record_id, "not_checked", operator="sd", note=None,
                               scope=None)
    assert again == back  # the same status without a note writes nothing
    trail = await m.events(pool, candidate_id, scope={"37"})
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("create", f"candidate:{candidate_id}"), ("set_education_status", "operator:sd"),
        ("set_education_status", "operator:sd")]
    assert trail[1]["details"]["note"] == "证书编号查询不到"
    with pytest.raises(NotFound):
        await m.events(pool, candidate_id, scope={"11"})


async def test_two_accounts_racing_for_one_number_one_wins(pool: asyncpg.Pool) -> None:
    first, second = await _candidate(pool), await _candidate(pool)
    olds = {c: await pool.fetchval("SELECT phone FROM candidates WHERE id = $1", c) for c in (first, second)}
    wanted = f"137{secrets.randbelow(10**8):08d}"
    results = await asyncio.gather(*(m.change_phone(pool, c, olds[c], wanted) for c in (first, second)),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "PhoneTaken"]
    assert await pool.fetchval("SELECT count(*) FROM candidates WHERE phone = $1", wanted) == 1
    loser = second if results[1] is not None else first
    assert await pool.fetchval("SELECT phone FROM candidates WHERE id = $1", loser) == olds[loser]
    assert not await pool.fetchval("SELECT count(*) FROM account_events WHERE candidate_id = $1 AND action = "
                                   "'change_phone'", loser)
    with pytest.raises(PhoneTaken):
        await m.change_phone(pool, loser, olds[loser], wanted)


async def test_a_phone_change_from_a_number_no_longer_bound_is_refused(pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)
    old = await pool.fetchval("SELECT phone FROM candidates WHERE id = $1", candidate_id)
    await m.change_phone(pool, candidate_id, old, f"136{secrets.randbelow(10**8):08d}")
    with pytest.raises(CodeInvalid):  # a second change proven with the first number's code
        await m.change_phone(pool, candidate_id, old, f"135{secrets.randbelow(10**8):08d}")
    details = await pool.fetchval("SELECT details FROM account_events WHERE candidate_id = $1 AND action = "
                                  "'change_phone'", candidate_id)
    assert details["old"] == f"{old[:3]}****{old[-4:]}" and old not in str(details)


async def test_renewing_ends_every_session_and_starts_one(cache: AutoPipeline, pool: asyncpg.Pool) -> None:
    candidate_id = await _candidate(pool)
    username = await candidates.username_of(pool, candidate_id)
    old = [await sessions.create(cache, candidate_id, now=utcnow()) for _ in range(3)]
    epoch = await sessions.read_epoch(cache, username)  # a sign-in under way, before the change
    new = await m.renew_sessions(cache, candidate_id, username, now=utcnow(), settings=SETTINGS)
    assert [await sessions.resolve(cache, s.token) for s in old] == [None, None, None]
    assert await sessions.resolve(cache, new.token) == candidate_id
    with pytest.raises(sessions.CredentialsChanged):
        await sessions.create(cache, candidate_id, now=utcnow(), epoch=epoch)
