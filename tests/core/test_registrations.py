"""Enrolment: the body checked against the catalogue and the window; the repository against real PostgreSQL
(one registration per candidate and exam under concurrency, a candidate sees only their own, confirm rules)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core import db
from core.catalogue import Exam, Site, Subject, load_catalogue
from core.registrations import (
    AlreadyRegistered,
    RegistrationClosed,
    RegistrationError,
    RegistrationInvalid,
    RegistrationRequest,
    check_window,
    create,
    get,
    parse_request,
)
from tests.factories import make_exam

NOW = datetime(2030, 3, 1, 2, 0, tzinfo=UTC)
EXAM_ID = 7


def _subject(code: str) -> Subject:
    return Subject(code, f"科目 {code}", NOW + timedelta(days=60), NOW + timedelta(days=60, hours=2), 60.0, 100.0)


def _site(site_id: int, province: str) -> Site:
    return Site(site_id, EXAM_ID, province, "测试市", f"第{site_id}考点", "测试路 1 号", 30, 1, 30)


EXAM = Exam(
    id=EXAM_ID, code="T-7", name="测试考试",
    registration_opens_at=NOW - timedelta(days=1), registration_closes_at=NOW + timedelta(days=10),
    ticket_print_opens_at=NOW + timedelta(days=50), ticket_print_closes_at=NOW + timedelta(days=60),
    exam_starts_at=NOW + timedelta(days=60), score_release_at=NOW + timedelta(days=90),
    fee_per_subject_fen=5600,
    levels=[
        {"code": "mid", "name": "中级", "specialties": [
            {"code": "fin", "name": "金融", "subjects": [{"code": "101", "name": ""}, {"code": "102", "name": ""}]},
            {"code": "acc", "name": "财政税收", "subjects": [{"code": "101", "name": ""}, {"code": "103", "name": ""}]},
        ]},
        {"code": "jr", "name": "初级", "specialties": [
            {"code": "fin", "name": "金融", "subjects": [{"code": "201", "name": ""}]},
        ]},
    ],
    subjects={code: _subject(code) for code in ("101", "102", "103", "201")},
    sites={1: _site(1, "11"), 2: _site(2, "37")},
)  # fmt: skip
EXAMS = {EXAM_ID: EXAM}


def body(**changes: Any) -> dict[str, Any]:
    """A valid body with ``changes`` applied (a value of ``...`` removes the field)."""
    base: dict[str, Any] = {
        "exam_id": EXAM_ID, "province": "11", "city": "北京市", "level": "mid", "specialty": "fin",
        "subjects": ["102", "101"], "work_years": 5, "commitment": True,
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def problems(value: Any, *, now: datetime = NOW) -> dict[str, str]:
    with pytest.raises(RegistrationInvalid) as caught:
        parse_request(value, EXAMS, now=now)
    return caught.value.fields


# -- validation --------------------------------------------------------------------------------------


def test_a_valid_body() -> None:
    request = parse_request(body(city="  济南 市 ", captcha={"kind": "pow"}), EXAMS, now=NOW)
    assert request == RegistrationRequest(EXAM_ID, "11", "济南 市", "mid", "fin", ("101", "102"), 5)
    assert parse_request(body(subjects=["102"], work_years=0), EXAMS, now=NOW).subjects == ("102",)
    assert parse_request(body(work_years=60), EXAMS, now=NOW).work_years == 60
    assert parse_request(body(level="jr", subjects=["201"], province="37"), EXAMS, now=NOW).level == "jr"
    # JSON's integers may be written 5.0, as the gateway's request models take them.
    assert parse_request(body(exam_id=float(EXAM_ID), work_years=5.0), EXAMS, now=NOW) == parse_request(
        body(), EXAMS, now=NOW)


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"exam_id": ...}, "exam_id", "required"),
        ({"exam_id": "7"}, "exam_id", "must_be_integer"),
        ({"exam_id": True}, "exam_id", "must_be_integer"),
        ({"exam_id": 8}, "exam_id", "unknown_exam"),
        ({"province": "44"}, "province", "invalid_choice"),
        ({"province": 11}, "province", "must_be_string"),
        ({"province": ...}, "province", "required"),
        ({"city": ""}, "city", "required"),
        ({"city": "   "}, "city", "required"),
        ({"city": "市" * 33}, "city", "too_long"),
        ({"city": "北京\x00"}, "city", "invalid_characters"),
        ({"level": "senior"}, "level", "invalid_choice"),
        ({"specialty": "law"}, "specialty", "invalid_choice"),
        ({"level": "jr", "specialty": "acc"}, "specialty", "invalid_choice"),  # acc exists, not at this level
        ({"subjects": ["101", "103"]}, "subjects.1", "invalid_choice"),  # 103 belongs to another specialty
        ({"subjects": ["101", "999"]}, "subjects.1", "invalid_choice"),
        ({"subjects": ["101", "101"]}, "subjects.1", "duplicate"),
        ({"subjects": ["101", 102]}, "subjects.1", "must_be_string"),
        ({"subjects": []}, "subjects", "required"),
        ({"subjects": "101"}, "subjects", "must_be_list"),
        ({"subjects": ...}, "subjects", "required"),
        ({"work_years": -1}, "work_years", "out_of_range"),
        ({"work_years": 61}, "work_years", "out_of_range"),
        ({"work_years": "5"}, "work_years", "must_be_integer"),
        ({"work_years": 5.5}, "work_years", "must_be_integer"),
        ({"exam_id": 7.5}, "exam_id", "must_be_integer"),
        ({"work_years": False}, "work_years", "must_be_integer"),
        ({"work_years": ...}, "work_years", "required"),
        ({"review_point": "1"}, "review_point", "must_be_integer"),
        ({"review_point": 10**6}, "review_point", "invalid_choice"),
        ({"site_id": 1}, "site_id", "unknown_field"),
    ],
)
def test_one_bad_field(changes: dict[str, Any], field: str, code: str) -> None:
    assert problems(body(**changes)) == {field: code}


def test_every_problem_is_reported_at_once() -> None:
    assert problems(body(province="99", city="", level="mid", specialty="x", subjects=["1", "1"],
                         work_years=100, commitment=False, extra=1)) == {  # fmt: skip
        "extra": "unknown_field", "province": "invalid_choice", "city": "required", "specialty": "invalid_choice",
        "subjects.0": "invalid_choice", "subjects.1": "invalid_choice", "work_years": "out_of_range",
    }  # fmt: skip


@pytest.mark.parametrize("commitment", [True, False, "true", 1, ...])
def test_commitment_is_accepted_and_ignored(commitment: Any) -> None:
    assert parse_request(body(commitment=commitment), EXAMS, now=NOW) == parse_request(body(), EXAMS, now=NOW)


def test_unknown_exam_still_checks_the_rest() -> None:
    assert problems(body(exam_id=999, subjects=["x", "x"], work_years=-3)) == {
        "exam_id": "unknown_exam", "subjects.1": "duplicate", "work_years": "out_of_range",
    }  # fmt: skip


@pytest.mark.parametrize("value", [None, [], "body", 3])
def test_body_not_an_object(value: Any) -> None:
    assert problems(value) == {"body": "must_be_object"}


def test_errors_share_a_base_and_carry_codes() -> None:
    assert issubclass(RegistrationInvalid, RegistrationError)
    assert RegistrationClosed.code == "registration_closed" and AlreadyRegistered.code == "already_registered"


# -- window ------------------------------------------------------------------------------------------


def test_outside_the_window_is_closed_whatever_the_body() -> None:
    for now in (EXAM.registration_opens_at - timedelta(seconds=1), EXAM.registration_closes_at):
        with pytest.raises(RegistrationClosed) as caught:
            parse_request(body(city=""), EXAMS, now=now)
        assert caught.value.exam_id == EXAM_ID
        window = (caught.value.opens_at, caught.value.closes_at)
        assert window == (EXAM.registration_opens_at, EXAM.registration_closes_at)
    check_window(EXAM, now=EXAM.registration_opens_at)
    check_window(EXAM, now=EXAM.registration_closes_at - timedelta(microseconds=1))


def test_window_defaults_to_the_current_time() -> None:
    with pytest.raises(RegistrationClosed):
        check_window(replace(EXAM, registration_closes_at=datetime.now(UTC) - timedelta(seconds=1)))
    check_window(replace(EXAM, registration_opens_at=datetime.now(UTC) - timedelta(seconds=5),
                         registration_closes_at=datetime.now(UTC) + timedelta(days=1)))  # fmt: skip


# -- repository --------------------------------------------------------------------------------------


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=25))
    try:
        yield p
    finally:
        await p.close()


async def make_candidate(pg: asyncpg.Connection) -> int:
    """A candidate row (straight SQL: these tests are about registrations)."""
    tag = secrets.token_hex(5)
    phone = "13" + str(secrets.randbelow(10**9)).zfill(9)
    return int(await pg.fetchval(
        """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                   security_question, security_answer_hash)
           VALUES ($1, 'x', '张三', 'passport', $2, $3, 'a@example.com', '问题', 'x') RETURNING id""",
        f"u{tag}", f"E{tag}", phone,
    ))  # fmt: skip


async def exam_request(pg: asyncpg.Connection) -> RegistrationRequest:
    """A valid request for a fresh exam made by the factory, validated through the loaded catalogue."""
    exam_id = await make_exam(pg)
    catalogue = await load_catalogue(pg)
    return parse_request(body(exam_id=exam_id, subjects=["101"]), catalogue.exams)


async def test_the_factory_exam_validates_through_the_catalogue(pg: asyncpg.Connection) -> None:
    request = await exam_request(pg)
    assert (request.province, request.level, request.specialty, request.subjects) == ("11", "mid", "fin", ("101",))


async def test_create_and_get(pg: asyncpg.Connection) -> None:
    candidate_id = await make_candidate(pg)
    request = await exam_request(pg)
    registration_id = await create(pg, candidate_id, request)

    record = await get(pg, registration_id, candidate_id)
    assert record is not None
    assert {k: record[k] for k in ("registration_id", "exam_id", "status", "site_id", "hold_expires_at",
                                   "order_no", "ticket_no", "subjects", "work_years", "city")} == {  # fmt: skip
        "registration_id": registration_id, "exam_id": request.exam_id, "status": "draft", "site_id": None,
        "hold_expires_at": None, "order_no": None, "ticket_no": None, "subjects": ["101"], "work_years": 5,
        "city": "北京市",
    }  # fmt: skip
    assert record["created_at"].endswith("+08:00")
    with pytest.raises(AlreadyRegistered) as caught:
        await create(pg, candidate_id, request)
    assert (caught.value.candidate_id, caught.value.exam_id) == (candidate_id, request.exam_id)


async def test_a_candidate_sees_only_their_own(pg: asyncpg.Connection) -> None:
    owner, other = await make_candidate(pg), await make_candidate(pg)
    registration_id = await create(pg, owner, await exam_request(pg))
    assert await get(pg, registration_id, other) is None
    assert await get(pg, registration_id + 10_000, owner) is None


async def test_concurrent_creates_make_exactly_one(pool: asyncpg.Pool, pg: asyncpg.Connection) -> None:
    candidate_id = await make_candidate(pg)
    request = await exam_request(pg)
    results = await asyncio.gather(*(create(pool, candidate_id, request) for _ in range(50)), return_exceptions=True)
    ids = [r for r in results if isinstance(r, int)]
    assert len(ids) == 1
    assert all(isinstance(r, AlreadyRegistered) for r in results if not isinstance(r, int))
    count = await pg.fetchval(
        "SELECT count(*) FROM registrations WHERE candidate_id = $1 AND exam_id = $2", candidate_id, request.exam_id
    )
    assert count == 1


async def test_get_shows_seat_order_and_ticket(pg: asyncpg.Connection) -> None:
    candidate_id = await make_candidate(pg)
    request = await exam_request(pg)
    registration_id = await create(pg, candidate_id, request)
    site_id = await pg.fetchval("SELECT min(id) FROM exam_sites WHERE exam_id = $1", request.exam_id)
    hold_until = datetime(2030, 1, 1, 4, 30, tzinfo=UTC)
    await pg.execute("UPDATE registrations SET site_id = $2, hold_expires_at = $3 WHERE id = $1",
                     registration_id, site_id, hold_until)  # fmt: skip
    await pg.execute(
        """INSERT INTO orders (order_no, registration_id, provider, amount_fen, status, expires_at, created_at)
           VALUES ('OLD-1', $1, 'alipay', 5600, 'closed', now(), now() - interval '1 hour'),
                  ('NEW-2', $1, 'wechat', 5600, 'pending', now() + interval '15 minutes', now())""",
        registration_id,
    )
    record = await get(pg, registration_id, candidate_id)
    assert record is not None
    assert (record["site_id"], record["hold_expires_at"], record["order_no"]) == (
        site_id, "2030-01-01T12:30:00+08:00", "NEW-2")  # fmt: skip

    await pg.execute("UPDATE orders SET status = 'paid', paid_at = now() WHERE order_no = 'OLD-1'")
    await pg.execute("UPDATE registrations SET status = 'paid' WHERE id = $1", registration_id)
    await pg.execute(
        """INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no)
           VALUES ('T2030000001', $1, $2, $3, 1, 1)""",
        registration_id, request.exam_id, site_id,
    )
    record = await get(pg, registration_id, candidate_id)
    assert record is not None
    assert (record["status"], record["order_no"], record["ticket_no"]) == ("paid", "OLD-1", "T2030000001")
