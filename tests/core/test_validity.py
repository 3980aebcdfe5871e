"""Rolling validity and the archive against real PostgreSQL: earlier passes still valid are carried and refused
at enrolment, expired ones offered again, the level's pass mark decides, a specialty completed within the window
qualifies, and the archive number is assigned once per candidate and family, concurrent first registrations
included."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import db, validity
from core.catalogue import Exam, load_catalogue
from core.registrations import RegistrationRequest, create, get
from tests.core.validity_data import (
    THIS_YEAR,
    family_code,
    make_candidate,
    make_family_exam,
    set_validity,
    sit,
)


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    made = await db.create_pool(db.PoolSettings(pg_dsn, min_size=2, max_size=4))
    try:
        yield made
    finally:
        await made.close()


async def _exam(pg: asyncpg.Connection, exam_id: int) -> Exam:
    exam = (await load_catalogue(pg)).exam(exam_id)
    assert exam is not None
    return exam


def _request(exam_id: int, subjects: tuple[str, ...]) -> RegistrationRequest:
    return RegistrationRequest(exam_id, "11", "测试市", "mid", "fin", subjects, 5)


async def test_two_of_four_passed_last_year_are_carried_refused_and_complete_the_level(pg: asyncpg.Connection) -> None:
    family = family_code()
    await set_validity(pg, family, 2)
    last = await make_family_exam(pg, family, THIS_YEAR - 1)
    this = await make_family_exam(pg, family, THIS_YEAR)
    candidate = await make_candidate(pg)
    await sit(pg, candidate, last, {"101": 75, "102": 60, "103": 59.5, "104": 20})
    exam = await _exam(pg, this)
    assert (exam.family_code, exam.year, exam.validity_years) == (family, THIS_YEAR, 2)

    passes = await validity.earlier_passes(pg, candidate, exam)
    assert [(p.subject, p.exam_id, p.year, p.score, p.valid_until) for p in passes] == [
        ("101", last, THIS_YEAR - 1, 75.0, THIS_YEAR), ("102", last, THIS_YEAR - 1, 60.0, THIS_YEAR)]
    assert validity.qualifications(exam, passes) == []

    with pytest.raises(validity.SubjectsStillValid) as refused:
        validity.check_not_carried(exam, "mid", ("101", "103"), passes)
    assert [p.subject for p in refused.value.passes] == ["101"]
    assert "经济基础知识" in refused.value.message and f"有效至{THIS_YEAR}年" in refused.value.message
    validity.check_not_carried(exam, "mid", ("103", "104"), passes)  # the failed ones are offered again

    # This year the rest are passed: the level's specialty is complete within one window.
    own = [validity.Pass(code, "mid", this, THIS_YEAR, 80.0, 60.0, THIS_YEAR + 1) for code in ("103", "104")]
    [qualified] = validity.qualifications(exam, passes + own)
    assert (qualified.level, qualified.specialty) == ("mid", "fin")
    assert [(p.subject, p.year) for p in qualified.passes] == [
        ("101", THIS_YEAR - 1), ("102", THIS_YEAR - 1), ("103", THIS_YEAR), ("104", THIS_YEAR)]


async def test_expired_passes_are_offered_again(pg: asyncpg.Connection) -> None:
    family = family_code()
    await set_validity(pg, family, 2)
    old = await make_family_exam(pg, family, THIS_YEAR - 2)
    last = await make_family_exam(pg, family, THIS_YEAR - 1)
    this = await make_family_exam(pg, family, THIS_YEAR)
    candidate = await make_candidate(pg)
    await sit(pg, candidate, old, {"101": 90, "102": 90})  # valid until THIS_YEAR - 1: expired
    await sit(pg, candidate, last, {"103": 70})
    exam = await _exam(pg, this)
    passes = await validity.earlier_passes(pg, candidate, exam)
    assert [(p.subject, p.year) for p in passes] == [("103", THIS_YEAR - 1)]
    validity.check_not_carried(exam, "mid", ("101", "102", "104"), passes)

    # Without a row in exam_families the period is one year: last year's pass does not count either.
    other = family_code()
    await pg.execute("UPDATE exams SET family = $2 WHERE id = ANY($1::bigint[])", [old, last, this], other)
    exam = await _exam(pg, this)
    assert exam.validity_years == 1
    assert await validity.earlier_passes(pg, candidate, exam) == []


async def test_the_level_pass_mark_decides_over_the_subjects_own(pg: asyncpg.Connection) -> None:
    family = family_code()
    await set_validity(pg, family, 3)
    last = await make_family_exam(pg, family, THIS_YEAR - 1)
    this = await make_family_exam(pg, family, THIS_YEAR)
    candidate = await make_candidate(pg)
    await sit(pg, candidate, last, {"101": 70, "102": 70})
    await pg.execute("INSERT INTO pass_marks (exam_id, level_code, subject_code, pass_mark) "
                     "VALUES ($1, 'mid', '101', 72), ($1, 'mid', '102', 66)", last)
    exam = await _exam(pg, this)
    passes = await validity.earlier_passes(pg, candidate, exam)
    assert [(p.subject, p.pass_mark, p.valid_until) for p in passes] == [("102", 66.0, THIS_YEAR + 1)]
    earlier = await _exam(pg, last)
    assert earlier.level_pass_mark("mid", "101") == 72.0 and earlier.level_pass_mark("mid", "103") == 60.0
    assert earlier.level_pass_mark(None, "101") == 60.0


async def test_the_archive_number_is_assigned_once_at_the_first_registration(pg: asyncpg.Connection) -> None:
    family = family_code()
    first = await make_family_exam(pg, family, THIS_YEAR)
    second = await make_family_exam(pg, family, THIS_YEAR)
    elsewhere = await make_family_exam(pg, family_code(), THIS_YEAR)
    candidate = await make_candidate(pg)
    one = await create(pg, candidate, _request(first, ("101",)))
    two = await create(pg, candidate, _request(second, ("102",)))
    three = await create(pg, candidate, _request(elsewhere, ("101",)))
    shown = [(await get(pg, rid, candidate) or {})["archive_no"] for rid in (one, two, three)]
    assert shown[0] == shown[1] and shown[2] != shown[0]
    assert re.fullmatch(rf"{family}{THIS_YEAR}[0-9]{{8}}", shown[0])
    row = await pg.fetchrow("SELECT registration_id, family FROM archive_numbers WHERE archive_no = $1", shown[0])
    assert (row["registration_id"], row["family"]) == (one, family)
    assert await validity.archive_no(pg, candidate, await _exam(pg, second)) == shown[0]
    assert await validity.archive_no(pg, await make_candidate(pg), await _exam(pg, second)) is None


async def test_concurrent_first_registrations_in_one_family_get_one_number(pool: asyncpg.Pool) -> None:
    family = family_code()
    exams = [await make_family_exam(pool, family, THIS_YEAR) for _ in range(2)]
    candidates = [await make_candidate(pool) for _ in range(6)]

    async def enrol_both(candidate: int) -> list[int]:
        return list(await asyncio.gather(*(create(pool, candidate, _request(e, ("101",))) for e in exams)))

    made = await asyncio.gather(*(enrol_both(c) for c in candidates))
    rows = await pool.fetch("SELECT candidate_id, archive_no, registration_id FROM archive_numbers WHERE family = $1",
                            family)
    assert sorted(r["candidate_id"] for r in rows) == sorted(candidates)
    for candidate, registrations in zip(candidates, made, strict=True):
        numbers = {(await get(pool, rid, candidate) or {})["archive_no"] for rid in registrations}
        [row] = [r for r in rows if r["candidate_id"] == candidate]
        assert numbers == {row["archive_no"]} and row["registration_id"] in registrations
