"""Score review requests in core: the window, subjects with scores, each subject once, answers decided once, a
correction as a one-row scores import (score_changes keeps the old value) marked in the import's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from benchmarks.import_data import ScoredExam, make_exam_with_tickets
from core import db, score_reviews
from core.db import Conn
from core.errors import NotFound
from core.score_reviews import (
    AlreadyDecided,
    AlreadyRequested,
    CorrectionConflict,
    CorrectionInvalid,
    NoScore,
    ReviewNotFound,
    WindowClosed,
    WindowNotOpen,
)
from core.timeutil import utcnow


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    made = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=6))
    try:
        yield made
    finally:
        await made.close()


async def scored(pg: asyncpg.Connection, people: int = 2, *, window: str = "open") -> tuple[ScoredExam, list[int]]:
    """An exam with ``people`` ticket holders, each scored 71.5 in 101 and 58 in 102; the candidates' ids."""
    exam = await make_exam_with_tickets(pg, people)
    await pg.execute("""INSERT INTO scores (registration_id, exam_id, subject_code, score)
                        SELECT r.id, r.exam_id, s.code, CASE s.code WHEN '101' THEN 71.5 ELSE 58 END
                          FROM registrations r CROSS JOIN (VALUES ('101'), ('102')) AS s(code)
                         WHERE r.exam_id = $1""", exam.exam_id)
    await pg.execute("UPDATE exams SET score_release_at = now() - interval '3 days' WHERE id = $1", exam.exam_id)
    await set_window(pg, exam.exam_id, window)
    candidates = [r[0] for r in await pg.fetch(
        "SELECT candidate_id FROM registrations WHERE exam_id = $1 ORDER BY id", exam.exam_id)]
    return exam, candidates


async def set_window(pg: Conn, exam_id: int, state: str) -> None:
    now = utcnow()
    opens, closes = {"open": (now - timedelta(days=1), now + timedelta(days=1)),
                     "not_open": (now + timedelta(days=1), now + timedelta(days=2)),
                     "closed": (now - timedelta(days=2), now - timedelta(days=1)),
                     "none": (None, None)}[state]
    async with pg.transaction():
        await score_reviews.set_window(pg, exam_id, opens, closes)


async def score_of(pg: asyncpg.Connection, candidate_id: int, subject: str) -> Decimal:
    return Decimal(await pg.fetchval("""SELECT s.score FROM scores s JOIN registrations r ON r.id = s.registration_id
                                        WHERE r.candidate_id = $1 AND s.subject_code = $2""", candidate_id, subject))


async def events(pg: asyncpg.Connection, review: dict[str, Any]) -> list[tuple[str, str]]:
    rows = await pg.fetch("""SELECT e.action, e.actor FROM registration_events e
                              JOIN score_reviews v ON v.registration_id = e.registration_id
                             WHERE v.id = $1 AND e.action LIKE 'score_review.%' ORDER BY e.id""", review["review_id"])
    return [(r[0], r[1]) for r in rows]


async def test_only_within_the_window(pg: asyncpg.Connection) -> None:
    exam, (alice, _) = await scored(pg, window="none")
    with pytest.raises(WindowNotOpen) as none:
        await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    assert none.value.opens_at is None
    await set_window(pg, exam.exam_id, "not_open")
    with pytest.raises(WindowNotOpen) as early:
        await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    assert early.value.opens_at is not None
    await set_window(pg, exam.exam_id, "closed")
    with pytest.raises(WindowClosed):
        await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    assert await score_reviews.mine(pg, alice) == []
    await set_window(pg, exam.exam_id, "open")
    [made] = await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    assert (made["status"], made["score_before"], made["score_after"]) == ("pending", Decimal("71.5"), None)
    with pytest.raises(NotFound):
        await score_reviews.request(pg, alice, 999_999_999, ["101"])


async def test_nothing_before_the_scores_are_released(pg: asyncpg.Connection) -> None:
    exam, (alice, _) = await scored(pg)
    release = utcnow() + timedelta(hours=5)
    await pg.execute("UPDATE exams SET score_release_at = $2 WHERE id = $1", exam.exam_id, release)
    with pytest.raises(WindowNotOpen) as early:  # the window is open, the scores are not out yet
        await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    assert early.value.opens_at == release
    assert [e for e in await score_reviews.scored_exams(pg, alice) if e["exam_id"] == exam.exam_id] == []


async def test_only_subjects_with_a_score(pg: asyncpg.Connection) -> None:
    exam, (alice, bob) = await scored(pg)
    await pg.execute("DELETE FROM scores s USING registrations r WHERE r.id = s.registration_id "
                     "AND r.candidate_id = $1 AND s.subject_code = '102'", alice)
    for subjects, missing in ((["102"], ["102"]), (["101", "102"], ["102"]), (["103"], ["103"]),
                              (["999", "101"], ["999"])):
        with pytest.raises(NoScore) as refused:
            await score_reviews.request(pg, alice, exam.exam_id, subjects)
        assert refused.value.subjects == missing
    other, (carol, _) = await scored(pg)
    with pytest.raises(NoScore):  # no registration of this exam at all
        await score_reviews.request(pg, carol, exam.exam_id, ["101"])
    assert await score_reviews.mine(pg, alice) == []
    assert len(await score_reviews.request(pg, bob, exam.exam_id, ["101", "102"])) == 2
    assert other.exam_id != exam.exam_id


async def test_each_subject_once_all_or_nothing(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    exam, (alice, bob) = await scored(pg)
    await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    with pytest.raises(AlreadyRequested) as again:
        await score_reviews.request(pg, alice, exam.exam_id, ["102", "101"])
    assert again.value.subjects == ["101"]
    assert [r["subject"] for r in await score_reviews.mine(pg, alice)] == ["101"]  # 102 was not stored either
    # Racing requests for the same subject: exactly one is stored.
    outcomes = await asyncio.gather(*(score_reviews.request(pool, bob, exam.exam_id, ["102"]) for _ in range(6)),
                                    return_exceptions=True)
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert sum(isinstance(o, AlreadyRequested) for o in outcomes) == 5
    assert [r["subject"] for r in await score_reviews.mine(pg, bob)] == ["102"]
    [exam_seen] = [e for e in await score_reviews.scored_exams(pg, alice) if e["exam_id"] == exam.exam_id]
    assert exam_seen["window"] == "open"
    assert [(s["subject"], s["requested"]) for s in exam_seen["subjects"]] == [("101", True), ("102", False)]


async def test_unchanged_decided_once(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    exam, (alice, _) = await scored(pg)
    [review] = await score_reviews.request(pg, alice, exam.exam_id, ["102"])
    review_id = review["review_id"]
    with pytest.raises(ReviewNotFound):  # another province's reviewer does not see it
        await score_reviews.keep(pool, review_id, reason="复核无误", operator="r37", scope={"37"})
    outcomes = await asyncio.gather(
        *(score_reviews.keep(pool, review_id, reason=f"复核无误 {i}", operator=f"op{i}", scope={"11"})
          for i in range(5)), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, dict)]
    assert len(won) == 1 and sum(isinstance(o, AlreadyDecided) for o in outcomes) == 4
    [answer] = await score_reviews.mine(pg, alice)
    assert (answer["status"], answer["score_after"], answer["reason"]) == ("unchanged", None, won[0]["reason"])
    assert answer["decided_at"] is not None
    assert await score_of(pg, alice, "102") == Decimal("58")
    assert await events(pg, review) == [("score_review.requested", "candidate"),
                                        ("score_review.unchanged", won[0]["decided_by"])]


async def test_a_correction_is_a_scores_import(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    exam, (alice, bob) = await scored(pg)
    [review] = await score_reviews.request(pg, alice, exam.exam_id, ["102"])
    review_id = review["review_id"]
    with pytest.raises(CorrectionInvalid) as same:
        await score_reviews.correct(pool, review_id, Decimal("58"), reason="复核", operator="ops", scope=None)
    assert same.value.problem == "same_score"
    with pytest.raises(CorrectionInvalid) as above:
        await score_reviews.correct(pool, review_id, Decimal("100.5"), reason="复核", operator="ops", scope=None)
    assert above.value.problem == "above_full_mark"

    seen: list[Sequence[Any]] = []

    async def lookups_hook(conn: Conn, changed: Sequence[Any]) -> None:
        # Runs after the review is marked, in the same transaction.
        assert await conn.fetchval("SELECT status FROM score_reviews WHERE id = $1", review_id) == "corrected"
        seen.append(changed)

    answered, result = await score_reviews.correct(pool, review_id, Decimal("61"), reason="漏评一题，加 3 分",
                                                   operator="ops", scope={"11"}, hooks={"scores": lookups_hook})
    assert (result.batch_id, result.applied, result.already_applied) == (f"review-{review_id}", 1, False)
    assert (answered["status"], answered["score_after"], answered["batch_id"]) == (
        "corrected", Decimal("61.0"), f"review-{review_id}")
    assert seen == [[answered["registration_id"]]]
    assert await score_of(pg, alice, "102") == Decimal("61")
    assert await score_of(pg, bob, "102") == Decimal("58")
    change = await pg.fetchrow("SELECT old_score, new_score, batch_id FROM score_changes WHERE batch_id = $1",
                               f"review-{review_id}")
    assert (change["old_score"], change["new_score"]) == (Decimal("58"), Decimal("61"))
    assert await pg.fetchval("SELECT created_by FROM import_batches WHERE batch_id = $1",
                             f"review-{review_id}") == "ops"
    [mine] = await score_reviews.mine(pg, alice)
    assert (mine["status"], mine["score_before"], mine["score_after"], mine["reason"]) == (
        "corrected", Decimal("58"), Decimal("61"), "漏评一题，加 3 分")
    assert await events(pg, review) == [("score_review.requested", "candidate"), ("score_review.corrected", "ops")]
    with pytest.raises(AlreadyDecided):
        await score_reviews.correct(pool, review_id, Decimal("61"), reason="再次", operator="ops2", scope=None)


async def test_racing_answers_leave_one_decision_and_one_score(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    exam, (alice, _) = await scored(pg)
    [review] = await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    review_id = review["review_id"]
    decisions = [score_reviews.correct(pool, review_id, Decimal(score), reason=f"更正为 {score}",
                                       operator=f"c{score}", scope=None) for score in ("75", "76", "77")]
    decisions += [score_reviews.keep(pool, review_id, reason="维持", operator=f"k{i}", scope=None) for i in range(3)]
    outcomes = await asyncio.gather(*decisions, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 5, outcomes
    assert all(isinstance(o, AlreadyDecided) for o in refused), refused
    [answer] = await score_reviews.mine(pg, alice)
    changes = await pg.fetch("SELECT new_score FROM score_changes WHERE batch_id = $1", f"review-{review_id}")
    if answer["status"] == "unchanged":
        assert changes == [] and await score_of(pg, alice, "101") == Decimal("71.5")
    else:
        assert [c[0] for c in changes] == [answer["score_after"]]
        assert await score_of(pg, alice, "101") == answer["score_after"]


async def test_a_retry_after_the_import_applied_marks_the_review(pg: asyncpg.Connection,
                                                                   pool: asyncpg.Pool) -> None:
    """The batch applied but the answer not stored (as after a crash between them): the same correction again is
    already_applied and answers the request; another score is a conflict naming the one applied."""
    from core import imports

    exam, (alice, _) = await scored(pg)
    [review] = await score_reviews.request(pg, alice, exam.exam_id, ["101"])
    review_id = review["review_id"]
    names = await pg.fetchrow(score_reviews._CORRECTION, review_id)
    data = score_reviews.correction_csv(names["exam_code"], names["ticket_no"], names["id_number"], "101",
                                        Decimal("80"))
    await imports.run_import(pool, "scores", data, content_type="text/csv", batch_id=f"review-{review_id}",
                             actor="ops")
    assert (await score_reviews.mine(pg, alice))[0]["status"] == "pending"
    with pytest.raises(CorrectionConflict) as other:
        await score_reviews.correct(pool, review_id, Decimal("81"), reason="更正", operator="ops", scope=None)
    assert other.value.applied == Decimal("80")
    answered, result = await score_reviews.correct(pool, review_id, Decimal("80"), reason="更正", operator="ops",
                                                   scope=None)
    assert result.already_applied and answered["status"] == "corrected"
    assert answered["score_after"] == Decimal("80") and await score_of(pg, alice, "101") == Decimal("80")
    assert await pg.fetchval("SELECT count(*) FROM score_changes WHERE batch_id = $1", f"review-{review_id}") == 1


async def test_operators_queue(pg: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    exam, (alice, bob) = await scored(pg)
    first = await score_reviews.request(pg, alice, exam.exam_id, ["101", "102"])
    await score_reviews.request(pg, bob, exam.exam_id, ["101"])
    await score_reviews.keep(pool, first[0]["review_id"], reason="维持", operator="ops", scope=None)
    pending = await score_reviews.queue(pg, exam_id=exam.exam_id, status="pending", scope=None)
    assert [r["review_id"] for r in pending] == [first[1]["review_id"], first[1]["review_id"] + 1]
    assert pending[0]["id_number"].count("*") > 0 and pending[0]["full_mark"] == Decimal("100")
    page = await score_reviews.queue(pg, exam_id=exam.exam_id, status=None, scope=None, limit=2)
    assert len(page) == 2
    rest = await score_reviews.queue(pg, exam_id=exam.exam_id, status=None, scope=None, after=page[-1]["review_id"])
    assert len(rest) == 1
    assert await score_reviews.queue(pg, exam_id=exam.exam_id, status=None, scope={"37"}) == []
