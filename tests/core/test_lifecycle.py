"""The registration lifecycle in PostgreSQL: every transition and refusal, the automatic review, one decision each."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from core import db, documents, lifecycle, qualification
from core.errors import NotFound
from core.lifecycle import (
    AlreadyDecided,
    CommitmentNotAllowed,
    CommitmentRequired,
    MajorMismatch,
    StaleVersion,
    TransitionRefused,
)
from core.registrations import RegistrationRequest, create, get
from tests.core.test_registrations import exam_request, make_candidate
from tests.factories import give_approved_photos

RULES = {
    "paths": [{"education": "bachelor", "min_work_years": 4}, {"education": "college", "min_work_years": 6}],
    "majors_same": ["金融学"], "majors_related": ["经济学"],
    "required_subjects": ["101", "102"],
    "exemptions": [{"subjects": ["102"], "min_education": "master", "min_work_years": 2}],
}


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=25))
    try:
        yield p
    finally:
        await p.close()


async def education(pg: asyncpg.Connection, candidate_id: int, level: str, major: str) -> None:
    await pg.execute("""INSERT INTO educations (candidate_id, cert_no, school, graduated_on, major, level, mode)
                        VALUES ($1, 'C1', '某大学', '2015-07-01', $2, $3, 'full_time')""", candidate_id, major, level)


async def registration(pg: asyncpg.Connection, *, rules: dict[str, Any] | None = None, level: str = "bachelor",
                       major: str = "金融学", subjects: tuple[str, ...] = ("101",),
                       photo: bool = True) -> tuple[int, int, int]:
    """(candidate, registration, exam): a draft of a fresh exam, the candidate with one education record and
    (unless ``photo`` is false) an approved photo."""
    candidate_id = await make_candidate(pg)
    if photo:
        await give_approved_photos(pg, [candidate_id])
    request = dataclasses.replace(await exam_request(pg), subjects=subjects)
    registration_id = await create(pg, candidate_id, request)
    await education(pg, candidate_id, level, major)
    if rules is not None:
        await qualification.save_rules(pg, request.exam_id, "mid", qualification.parse_rules(rules, ["101", "102"]),
                                       actor="test")
    return candidate_id, registration_id, request.exam_id


async def request_for(pg: asyncpg.Connection, exam_id: int, **changes: Any) -> RegistrationRequest:
    return dataclasses.replace(await exam_request(pg), exam_id=exam_id, **changes)


async def status_of(pg: asyncpg.Connection, registration_id: int) -> tuple[str, int]:
    row = await pg.fetchrow("SELECT status, version FROM registrations WHERE id = $1", registration_id)
    return row["status"], row["version"]


async def test_confirm_without_rules_approves_and_is_audited(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, _ = await registration(pg)
    moved = await lifecycle.confirm(pg, registration_id, candidate_id, address="127.0.0.9")
    assert (moved.previous, moved.status, moved.version, moved.reasons) == ("draft", "approved", 2, ())
    again = await lifecycle.confirm(pg, registration_id, candidate_id)
    assert (again.status, again.changed) == ("approved", False)
    assert [(e["action"], e["from"], e["to"], e["version"], e["actor"])
            for e in await lifecycle.events(pg, registration_id)] == [
        ("confirm", "draft", "approved", 2, f"candidate:{candidate_id}")]
    record = await get(pg, registration_id, candidate_id)
    assert record is not None
    assert (record["status"], record["review_mode"], record["version"]) == ("approved", "auto", 2)


async def test_rules_reject_with_every_reason(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, exam_id = await registration(pg, rules=RULES, level="college")
    moved = await lifecycle.confirm(pg, registration_id, candidate_id)
    assert moved.status == "rejected"
    assert [r["code"] for r in moved.reasons] == ["education_insufficient", "exemption_not_met"]
    assert all(r["message"] for r in moved.reasons)
    # Rejected: the candidate sees why, edits and confirms again.
    fixed = await request_for(pg, exam_id, subjects=("101", "102"), work_years=8)
    with pytest.raises(NotFound):
        await lifecycle.edit(pg, registration_id, candidate_id + 1000, fixed, None)
    edited = await lifecycle.edit(pg, registration_id, candidate_id, fixed, None)
    assert (edited.previous, edited.status) == ("rejected", "draft")
    assert (await lifecycle.confirm(pg, registration_id, candidate_id)).status == "approved"


async def test_major_mismatch_needs_acknowledgement_then_goes_to_a_person(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, _ = await registration(pg, rules=RULES, major="历史学", subjects=("101", "102"))
    with pytest.raises(MajorMismatch) as caught:
        await lifecycle.confirm(pg, registration_id, candidate_id)
    assert caught.value.same == ["金融学"] and caught.value.related == ["经济学"]
    assert await status_of(pg, registration_id) == ("draft", 1)  # nothing written
    moved = await lifecycle.confirm(pg, registration_id, candidate_id, acknowledge_major_mismatch=True)
    assert (moved.status, [r["code"] for r in moved.reasons]) == ("under_review", ["major_mismatch"])


async def test_exemption_met_and_related_major_approve(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, _ = await registration(pg, rules=RULES, level="master", major="经济学")
    assert (await lifecycle.confirm(pg, registration_id, candidate_id)).status == "approved"


async def test_review_modes_and_withdraw_rules(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, exam_id = await registration(pg)
    await pg.execute("""INSERT INTO exam_review_rules VALUES ($1, '11', 'onsite', 'onsite', false, 'locked')""",
                     exam_id)
    moved = await lifecycle.confirm(pg, registration_id, candidate_id)
    assert (moved.status, [r["code"] for r in moved.reasons]) == ("onsite_review", ["manual_review"])
    with pytest.raises(TransitionRefused) as caught:
        await lifecycle.withdraw(pg, registration_id, candidate_id)
    assert (caught.value.code, caught.value.status) == ("withdraw_not_allowed", "onsite_review")
    assert "不能撤回" in caught.value.message
    await pg.execute("UPDATE exam_review_rules SET withdraw_rule = 'until_review' WHERE exam_id = $1", exam_id)
    assert (await lifecycle.withdraw(pg, registration_id, candidate_id)).status == "draft"


async def test_commitment_route_archive_and_withdrawal(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, exam_id = await registration(pg)
    text = await documents.publish(pg, exam_id, "commitment", "告知承诺书", "本人承诺……", actor="test")
    with pytest.raises(CommitmentRequired):
        await lifecycle.confirm(pg, registration_id, candidate_id)
    signed_at = await lifecycle.sign_commitment(pg, registration_id, candidate_id, version=text.version,
                                                text_sha256=text.sha256, address="10.0.0.1")
    assert signed_at is not None
    stored = await pg.fetchrow("SELECT version, text_sha256, address FROM registration_commitments "
                               "WHERE registration_id = $1", registration_id)
    assert tuple(stored.values()) == (1, text.sha256, "10.0.0.1")
    again = await lifecycle.sign_commitment(pg, registration_id, candidate_id, version=text.version,
                                            text_sha256=text.sha256, address="10.0.0.9")
    assert again == signed_at  # the same text signed again: nothing written, one audit row
    assert await pg.fetchval("SELECT count(*) FROM registration_events WHERE registration_id = $1 "
                             "AND action = 'sign_commitment'", registration_id) == 1
    assert (await lifecycle.confirm(pg, registration_id, candidate_id)).status == "approved"
    moved = await lifecycle.withdraw_commitment(pg, registration_id, candidate_id)
    assert (moved.previous, moved.status) == ("approved", "cancelled")
    with pytest.raises(TransitionRefused):
        await lifecycle.confirm(pg, registration_id, candidate_id)

    # A candidate in the archive within the period: no commitment, a person reviews instead.
    other, other_registration, _ = await registration(pg)
    await pg.execute("UPDATE registrations SET exam_id = $2 WHERE id = $1", other_registration, exam_id)
    id_number = await pg.fetchval("SELECT id_number FROM candidates WHERE id = $1", other)
    today = date.today()
    await documents.add_records(pg, [documents.ArchiveEntry(id_number, "*", "替考", today - timedelta(days=10),
                                                            today + timedelta(days=300))], actor="test")
    with pytest.raises(CommitmentNotAllowed) as refused:
        await lifecycle.sign_commitment(pg, other_registration, other, version=1, text_sha256=text.sha256,
                                        address="10.0.0.2")
    assert refused.value.reason == "integrity_record"
    moved = await lifecycle.confirm(pg, other_registration, other)
    assert (moved.status, [r["code"] for r in moved.reasons]) == ("under_review", ["integrity_record"])


async def test_decisions_are_scoped_versioned_and_single(pool: asyncpg.Pool, pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, exam_id = await registration(pg)
    await pg.execute("INSERT INTO exam_review_rules VALUES ($1, '11', 'online', 'online', true, 'until_payment')",
                     exam_id)
    moved = await lifecycle.confirm(pg, registration_id, candidate_id)
    assert moved.status == "under_review"
    with pytest.raises(NotFound):  # another province's reviewer
        await lifecycle.decide(pg, registration_id, approve=True, reasons=(), operator="sd", provinces={"37"},
                               expected_version=None)
    with pytest.raises(StaleVersion):
        await lifecycle.decide(pg, registration_id, approve=True, reasons=(), operator="bj", provinces={"11"},
                               expected_version=moved.version - 1)
    results = await asyncio.gather(*(
        lifecycle.decide(pool, registration_id, approve=i % 2 == 0, reasons=(), operator=f"op{i}", provinces=None,
                         expected_version=None) for i in range(8)), return_exceptions=True)
    decided = [r for r in results if isinstance(r, lifecycle.Moved)]
    assert len(decided) == 1 and all(isinstance(r, AlreadyDecided) for r in results if r not in decided)
    assert await pg.fetchval("SELECT count(*) FROM registration_events WHERE registration_id = $1 "
                             "AND action = 'decide'", registration_id) == 1


async def test_cancel_before_and_after_payment(pg: asyncpg.Connection) -> None:
    candidate_id, registration_id, exam_id = await registration(pg)
    await lifecycle.confirm(pg, registration_id, candidate_id)
    site_id = await pg.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", exam_id)
    await pg.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at)
                        VALUES ('EGTEST1', $1, 'alipay', 100, now() + interval '1 hour')""", registration_id)
    moved = await lifecycle.cancel(pg, registration_id, candidate_id)
    assert (moved.previous, moved.status) == ("approved", "cancelled")
    assert await pg.fetchval("SELECT status FROM orders WHERE order_no = 'EGTEST1'") == "closed"
    with pytest.raises(TransitionRefused) as caught:
        await lifecycle.cancel(pg, registration_id, candidate_id)
    assert caught.value.status == "cancelled"

    paid_candidate, paid, _ = await registration(pg)
    await pg.execute("UPDATE registrations SET status = 'paid', site_id = $2 WHERE id = $1", paid, site_id)
    request = await lifecycle.cancel(pg, paid, paid_candidate)
    assert (request.status, request.changed) == ("paid", True)
    assert (await lifecycle.cancel(pg, paid, paid_candidate)).changed is False
    assert await pg.fetchval("SELECT status FROM cancellation_requests WHERE registration_id = $1", paid) == "pending"


async def test_only_the_listed_states_allow_each_action(pg: asyncpg.Connection) -> None:
    for status in ("paid", "cancelled", "expired", "under_review", "approved"):
        candidate_id, registration_id, exam_id = await registration(pg)
        site_id = await pg.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", exam_id)
        await pg.execute("UPDATE registrations SET status = $2, site_id = $3 WHERE id = $1", registration_id,
                         status, site_id)
        with pytest.raises(TransitionRefused) as caught:
            await lifecycle.edit(pg, registration_id, candidate_id, await request_for(pg, exam_id), None)
        assert (caught.value.code, caught.value.status) == ("registration_locked", status)
        if status not in ("approved", "under_review"):
            with pytest.raises(TransitionRefused):
                await lifecycle.withdraw(pg, registration_id, candidate_id)
