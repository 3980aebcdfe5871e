"""Photo review in PostgreSQL: the lock, operators' decisions, change requests, the audit, the confirmation gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import lifecycle, photo_review, photos
from core.db import PoolSettings, create_pool
from core.errors import NotFound
from tests import photo_images
from tests.core.test_lifecycle import registration
from tests.core.test_registrations import make_candidate


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    made = await create_pool(PoolSettings(pg_dsn, min_size=1, max_size=4))
    try:
        yield made
    finally:
        await made.close()


APPROVED = photos.process(photo_images.portrait())
NEEDS_REVIEW = photos.process(photo_images.portrait(background=(160, 160, 160)))


async def events_of(pg: asyncpg.Pool, candidate_id: int) -> list[tuple[str, str]]:
    return [(e["action"], e["actor"]) for e in await photo_review.events(pg, candidate_id)]


async def test_an_approved_photo_is_locked_until_a_granted_change_allows_exactly_one_upload(
        pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        candidate = await make_candidate(conn)
    store = photos.PgPhotoStore(pool)
    first = await store.save(candidate, APPROVED)
    assert (first.status, first.locked) == ("approved", True)
    with pytest.raises(photos.PhotoLocked):
        await store.save(candidate, APPROVED)

    asked = await photo_review.request_change(pool, candidate, "照片太旧")
    with pytest.raises(photo_review.PhotoConflict) as twice:
        await photo_review.request_change(pool, candidate, "再问一次")
    assert (twice.value.code, twice.value.details["status"]) == ("change_request_open", "pending")
    with pytest.raises(photos.PhotoLocked):  # asked, not yet granted
        await store.save(candidate, APPROVED)
    granted = await photo_review.decide_change(pool, asked["request_id"], grant=True, operator="ops", reason=None,
                                               scope=None)
    assert granted["status"] == "granted"
    with pytest.raises(photo_review.PhotoConflict) as again:
        await photo_review.decide_change(pool, asked["request_id"], grant=False, operator="ops", reason="x",
                                         scope=None)
    assert again.value.code == "already_decided"

    # Two uploads at once after the grant: exactly one gets in.
    results = await asyncio.gather(store.save(candidate, APPROVED), store.save(candidate, APPROVED),
                                   return_exceptions=True)
    saved = [r for r in results if isinstance(r, photos.PhotoRow)]
    assert len(saved) == 1 and sum(isinstance(r, photos.PhotoLocked) for r in results) == 1
    request = await pool.fetchrow("SELECT status, new_photo_id FROM photo_change_requests WHERE id = $1",
                                  asked["request_id"])
    assert (request["status"], request["new_photo_id"]) == ("used", saved[0].photo_id)
    assert await pool.fetchval("SELECT count(*) FROM photos WHERE candidate_id = $1 AND current", candidate) == 1
    actor = photos.candidate_actor(candidate)
    assert await events_of(pool, candidate) == [
        ("upload", actor), ("change_request", actor), ("change_grant", "ops"), ("upload", actor),
        ("change_used", actor)]


async def test_review_approves_or_rejects_once_and_a_rejected_photo_can_be_replaced(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        candidate = await make_candidate(conn)
    store = photos.PgPhotoStore(pool)
    flagged = await store.save(candidate, NEEDS_REVIEW)
    assert (flagged.status, flagged.locked) == ("needs_review", False)
    queued = await photo_review.queue(pool, "needs_review", scope=None)
    assert flagged.photo_id in [p["photo_id"] for p in queued]
    with pytest.raises(photo_review.PhotoConflict) as not_locked:
        await photo_review.request_change(pool, candidate, "换一张")
    assert not_locked.value.code == "photo_not_locked"

    rejected = await photo_review.decide(pool, flagged.photo_id, approve=False, reason="background", operator="ops",
                                         scope=None)
    assert (rejected["status"], rejected["locked"], rejected["review_reason"]) == (
        "rejected", False, photo_review.REJECT_REASONS["background"])
    with pytest.raises(photo_review.PhotoConflict) as twice:
        await photo_review.decide(pool, flagged.photo_id, approve=True, reason=None, operator="ops", scope=None)
    assert twice.value.code == "already_reviewed"
    assert flagged.photo_id not in [p["photo_id"] for p in await photo_review.queue(pool, "pending", scope=None)]

    second = await store.save(candidate, NEEDS_REVIEW)  # rejected: not locked, the candidate uploads again
    with pytest.raises(photo_review.PhotoConflict) as superseded:
        await photo_review.decide(pool, flagged.photo_id, approve=True, reason=None, operator="ops", scope=None)
    assert superseded.value.code == "photo_superseded"
    approved = await photo_review.decide(pool, second.photo_id, approve=True, reason=None, operator="ops",
                                         scope=None)
    assert (approved["status"], approved["locked"], approved["reviewed_by"]) == ("approved", True, "ops")
    with pytest.raises(photos.PhotoLocked):
        await store.save(candidate, APPROVED)


async def test_a_sample_of_approved_photos_waits_for_a_look_and_scope_hides_other_provinces(
        pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        candidate = await make_candidate(conn)  # a passport: no province, seen only nationally
    made = await photos.PgPhotoStore(pool).save(candidate, APPROVED, sampled=True)
    sampled = await photo_review.queue(pool, "sampled", scope=None)
    assert next(p for p in sampled if p["photo_id"] == made.photo_id)["status"] == "approved"
    assert made.photo_id not in [p["photo_id"] for p in await photo_review.queue(pool, "sampled", scope={"11"})]
    with pytest.raises(NotFound):
        await photo_review.decide(pool, made.photo_id, approve=False, reason="x", operator="ops", scope={"11"})
    assert await photo_review.photo(pool, made.photo_id, scope={"11"}) is None


async def test_confirmation_needs_an_approved_photo(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        candidate, registration_id, _ = await registration(conn, photo=False)
    with pytest.raises(photo_review.PhotoRequired) as none:
        await lifecycle.confirm(pool, registration_id, candidate)
    assert none.value.status is None
    store = photos.PgPhotoStore(pool)
    flagged = await store.save(candidate, NEEDS_REVIEW)
    with pytest.raises(photo_review.PhotoRequired) as pending:
        await lifecycle.confirm(pool, registration_id, candidate)
    assert pending.value.status == "needs_review"
    assert await pool.fetchval("SELECT status FROM registrations WHERE id = $1", registration_id) == "draft"
    await photo_review.decide(pool, flagged.photo_id, approve=True, reason=None, operator="ops", scope=None)
    assert (await lifecycle.confirm(pool, registration_id, candidate)).status == "approved"
