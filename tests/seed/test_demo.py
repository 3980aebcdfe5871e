"""Demo seed: counts, validity and uniqueness, agreement with the pure per-index functions,
determinism, idempotence, reset, and an unchanged schema afterwards.

Each test database here is private (seeding the shared test database would hand other tests
thousands of candidates and two exams they did not ask for).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

from core import db, migrate
from core.idcards import is_valid_resident_id
from seed import (
    EXAM_A_CODE,
    EXAM_B_CODE,
    SeedError,
    SeedMismatch,
    candidate_credentials,
    lookup_keys,
    seed,
)
from seed import data as seed_data
from seed import queries as seed_queries
from seed import reset as seed_reset

N = 2_000

_SCHEMA = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1, 2, 3
"""


@pytest.fixture(scope="module")
def databases(pg_dsn: str) -> Iterator[dict[str, str]]:
    """Fresh migrated databases: 'a' and 'b' seeded with N candidates, 'reset' with 300, and 'empty'."""
    stem = f"examgate_test_seed_{secrets.token_hex(3)}"
    dsns = {key: db.with_database(pg_dsn, f"{stem}_{key}") for key in ("a", "b", "reset", "empty")}

    async def setup() -> None:
        for dsn in dsns.values():
            await migrate.create_and_migrate(dsn)
        await seed(dsns["a"], N)
        await seed(dsns["b"], N)
        await seed(dsns["reset"], 300)

    asyncio.run(setup())
    yield dsns
    for dsn in dsns.values():
        asyncio.run(db.drop_database(dsn))


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_counts(databases: dict[str, str]) -> None:
    (row,) = await _fetch(
        databases["a"],
        """SELECT (SELECT count(*) FROM candidates) AS candidates, (SELECT count(*) FROM educations) AS educations,
                  (SELECT count(*) FROM registrations r JOIN exams e ON e.id = r.exam_id
                   WHERE e.code = $1 AND r.status = 'paid' AND r.site_id IS NOT NULL) AS paid,
                  (SELECT count(*) FROM registrations r JOIN exams e ON e.id = r.exam_id WHERE e.code = $2) AS b_regs,
                  (SELECT count(*) FROM admission_tickets) AS tickets, (SELECT count(*) FROM scores) AS scores,
                  (SELECT sum(cardinality(subjects)) FROM registrations) AS subjects""",
        EXAM_A_CODE,
        EXAM_B_CODE,
    )
    assert dict(row) == {"candidates": N, "educations": N, "paid": N, "b_regs": 0, "tickets": N,
                         "scores": 2 * N, "subjects": 2 * N}  # fmt: skip


async def test_ids_and_phones_are_valid_and_unique(databases: dict[str, str]) -> None:
    rows = await _fetch(databases["a"], "SELECT id_type, id_number, phone FROM candidates")
    assert all(r["id_type"] == "resident_id" and is_valid_resident_id(r["id_number"]) for r in rows)
    assert len({r["id_number"] for r in rows}) == len({r["phone"] for r in rows}) == N


async def test_every_paid_registration_has_one_ticket_at_its_site(databases: dict[str, str]) -> None:
    rows = await _fetch(
        databases["a"],
        """SELECT r.id, count(t.ticket_no) AS tickets, bool_and(t.site_id = r.site_id) AS same_site,
                  bool_and(t.room <= s.rooms AND t.seat_no <= s.seats_per_room) AS seat_exists,
                  bool_and(s.province = r.province AND s.city = r.city) AS where_registered
           FROM registrations r JOIN exam_sites s ON s.id = r.site_id
           LEFT JOIN admission_tickets t ON t.registration_id = r.id
           WHERE r.status = 'paid' GROUP BY r.id""",
    )
    assert len(rows) == N
    assert all(r["tickets"] == 1 and r["same_site"] and r["seat_exists"] and r["where_registered"] for r in rows)
    (seats,) = await _fetch(
        databases["a"],
        "SELECT count(DISTINCT ticket_no) AS tickets, count(DISTINCT (site_id, room, seat_no)) AS seats"
        " FROM admission_tickets",
    )
    assert seats["tickets"] == seats["seats"] == N


async def test_scores_cover_each_registered_subject_once(databases: dict[str, str]) -> None:
    rows = await _fetch(
        databases["a"],
        """SELECT r.subjects, array_agg(s.subject_code ORDER BY s.subject_code) AS scored,
                  bool_and(s.score BETWEEN 0 AND 140) AS in_range
           FROM registrations r JOIN scores s ON s.registration_id = r.id GROUP BY r.id""",
    )
    assert len(rows) == N
    assert all(sorted(r["subjects"]) == r["scored"] and r["in_range"] for r in rows)


async def test_exams_sites_and_windows(databases: dict[str, str]) -> None:
    exams = {r["code"]: r for r in await _fetch(databases["a"], "SELECT * FROM exams")}
    now = datetime.now(UTC)
    a, b = exams[EXAM_A_CODE], exams[EXAM_B_CODE]
    assert a["ticket_print_opens_at"] < now < a["ticket_print_closes_at"]
    assert a["score_release_at"] <= now and a["exam_starts_at"] < now
    assert b["registration_opens_at"] < now < b["registration_closes_at"]
    sites = await _fetch(databases["a"], "SELECT exam_id, province, capacity, rooms, seats_per_room FROM exam_sites")
    for exam in (a, b):
        mine = [s for s in sites if s["exam_id"] == exam["id"]]
        assert len({s["province"] for s in mine}) >= 20
        assert sum(s["capacity"] for s in mine) >= N
        assert all(s["capacity"] == s["rooms"] * s["seats_per_room"] == s["rooms"] * 30 for s in mine)
    structure = await _fetch(
        databases["a"],
        """SELECT l.name AS level, count(DISTINCT sp.code) AS specialties, count(DISTINCT ss.subject_code) AS subjects
           FROM exam_levels l JOIN exam_specialties sp ON sp.exam_id = l.exam_id AND sp.level_code = l.code
           JOIN exam_specialty_subjects ss ON ss.exam_id = l.exam_id AND ss.level_code = l.code
           WHERE l.exam_id = $1 GROUP BY l.name""",
        a["id"],
    )
    # one shared 经济基础知识 per level plus one 专业知识和实务 per specialty
    assert {r["level"] for r in structure} == {"初级", "中级"}
    assert all(r["subjects"] == r["specialties"] + 1 for r in structure)


async def test_educations_follow_the_birth_year(databases: dict[str, str]) -> None:
    rows = await _fetch(
        databases["a"],
        """SELECT c.id_number, e.graduated_on, e.cert_no, e.level, e.mode
           FROM educations e JOIN candidates c ON c.id = e.candidate_id""",
    )
    age = {"doctorate": 29, "master": 25, "bachelor": 22, "college": 21, "secondary": 18}
    latest = datetime.now(UTC).year - 1
    for r in rows:
        delay = 0 if r["mode"] == "full_time" else 3
        assert r["graduated_on"].year == min(latest, int(r["id_number"][6:10]) + age[r["level"]] + delay)
        assert len(r["cert_no"]) == 18 and r["cert_no"][6:10] == str(r["graduated_on"].year)
    assert {r["level"] for r in rows} == set(age)


async def test_pure_functions_match_the_rows(databases: dict[str, str]) -> None:
    rows = await _fetch(
        databases["a"],
        """SELECT c.username, c.name, c.id_number, c.phone, c.email, t.ticket_no
           FROM candidates c JOIN registrations r ON r.candidate_id = c.id
           JOIN admission_tickets t ON t.registration_id = r.id ORDER BY c.id""",
    )
    assert len(rows) == N
    for index in [0, 1, N - 1, *random.sample(range(N), 20)]:
        row, creds, keys = rows[index], candidate_credentials(index), lookup_keys(index)
        assert (creds.username, creds.name, creds.id_number, creds.phone, creds.email) == (
            row["username"], row["name"], row["id_number"], row["phone"], row["email"])  # fmt: skip
        assert keys == (EXAM_A_CODE, row["name"], row["id_number"], row["ticket_no"])
    assert all(lookup_keys(i).ticket_no == r["ticket_no"] for i, r in enumerate(rows))


async def test_candidate_query_matches_the_pure_functions_up_to_the_maximum(databases: dict[str, str]) -> None:
    conn = await asyncpg.connect(databases["empty"])
    try:
        for start, stop in [(0, 3_000), (seed_data.MAX_CANDIDATES - 3_000, seed_data.MAX_CANDIDATES)]:
            rows = await conn.fetch(
                seed_queries.CANDIDATES.query, start, stop, 1, "h", "a", seed_data.CREATED_EPOCH,
                [int(d) for d in seed_data.BIRTH_DATE_DIGITS], list(seed_data.BIRTH_DATE_WEIGHTED),
            )  # fmt: skip
            for index, row in zip(range(start, stop), rows, strict=True):
                creds = candidate_credentials(index)
                assert tuple(row)[1:8] == (creds.username, "h", creds.name, "resident_id", creds.id_number,
                                           creds.phone, creds.email)  # fmt: skip
                assert row[8] == seed_data.security_question(index) and row[10] == seed_data.created_at(index)
    finally:
        await conn.close()


def test_identities_are_unique_by_construction() -> None:
    sample = [*range(0, 150_000), *range(seed_data.MAX_CANDIDATES - 50_000, seed_data.MAX_CANDIDATES)]
    ids = [seed_data.resident_id(i) for i in sample]
    phones = [seed_data.phone(i) for i in sample]
    assert len(set(ids)) == len(set(phones)) == len(sample)
    assert all(is_valid_resident_id(x) for x in ids[::97])
    assert phones == sorted(phones) and all(p[1] in "3456789" and len(p) == 11 for p in phones[::97])


async def test_same_count_gives_identical_rows(databases: dict[str, str]) -> None:
    for sql in (
        "SELECT * FROM candidates ORDER BY id",
        (
            "SELECT id, candidate_id, province, city, level_code, specialty_code, subjects, work_years, site_id"
            " FROM registrations ORDER BY id"
        ),
        "SELECT ticket_no, registration_id, site_id, room, seat_no FROM admission_tickets ORDER BY ticket_no",
        "SELECT * FROM scores ORDER BY registration_id, subject_code",
        "SELECT * FROM educations ORDER BY id",
    ):
        assert await _fetch(databases["a"], sql) == await _fetch(databases["b"], sql)


async def test_schema_is_restored_exactly(databases: dict[str, str]) -> None:
    assert await _fetch(databases["a"], _SCHEMA) == await _fetch(databases["empty"], _SCHEMA)


async def test_sequences_continue_after_the_seed(databases: dict[str, str]) -> None:
    (row,) = await _fetch(
        databases["a"],
        """SELECT nextval(pg_get_serial_sequence('candidates', 'id')) > (SELECT max(id) FROM candidates) AS c,
                  nextval(pg_get_serial_sequence('registrations', 'id')) > (SELECT max(id) FROM registrations) AS r,
                  nextval(pg_get_serial_sequence('exam_sites', 'id')) > (SELECT max(id) FROM exam_sites) AS s""",
    )
    assert all(row.values())


async def test_second_run_with_same_count_changes_nothing(databases: dict[str, str]) -> None:
    sql = "SELECT (SELECT count(*) FROM candidates), (SELECT max(id) FROM registrations), (SELECT count(*) FROM exams)"
    before = await _fetch(databases["a"], sql)
    report = await seed(databases["a"], N)
    assert report.already_seeded and str(report).startswith("already seeded: 2,000 candidates")
    assert (report.candidates, report.registrations, report.tickets, report.scores) == (N, N, N, 2 * N)
    assert await _fetch(databases["a"], sql) == before


async def test_other_count_needs_reset(databases: dict[str, str]) -> None:
    with pytest.raises(SeedMismatch) as caught:
        await seed(databases["a"], N + 1)
    assert caught.value.existing == N and caught.value.requested == N + 1


async def test_reset_replaces_seed_and_keeps_other_candidates(
    databases: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = databases["reset"]
    assert (await seed(dsn, 400, reset=True)).candidates == 400  # only seeded data: the TRUNCATE path
    # someone who signed up for real, and registered for the open exam B
    await _fetch(
        dsn,
        """WITH c AS (
               INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               VALUES ('zhang.san', 'x', '张三', 'passport', 'E12345678', '19912345678', 'z@example.com', 'q', 'a')
               RETURNING id)
           INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                      subjects, work_years)
           SELECT c.id, e.id, '11', '北京市', 'ZJ', 'GS', '{ZJ01,ZJ11}', 5 FROM c, exams e WHERE e.code = $1""",
        EXAM_B_CODE,
    )
    seen: list[tuple[int, int]] = []
    report = await seed(dsn, 500, reset=True, progress=lambda done, total: seen.append((done, total)))
    assert not report.already_seeded and report.candidates == 500
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    counts = """SELECT (SELECT count(*) FROM candidates) AS candidates, (SELECT count(*) FROM registrations) AS regs,
                       (SELECT count(*) FROM exams) AS exams, (SELECT count(*) FROM scores) AS scores,
                       (SELECT count(*) FROM candidates WHERE username = 'zhang.san') AS kept"""
    expected = {"candidates": 501, "regs": 500, "exams": 2, "scores": 1000, "kept": 1}
    assert dict((await _fetch(dsn, counts))[0]) == expected
    # reset with the same count starts over too (after a load test, say), also row by row
    assert not (await seed(dsn, 500, reset=True)).already_seeded
    assert dict((await _fetch(dsn, counts))[0]) == expected
    monkeypatch.setattr(seed_reset, "_MAX_KEPT", 0)
    assert not (await seed(dsn, 500, reset=True)).already_seeded
    assert dict((await _fetch(dsn, counts))[0]) == expected
    keys = lookup_keys(499)
    (ticket,) = await _fetch(dsn, "SELECT ticket_no FROM admission_tickets t JOIN registrations r"
                                  " ON r.id = t.registration_id JOIN candidates c ON c.id = r.candidate_id"
                                  " WHERE c.id_number = $1", keys.id_number)  # fmt: skip
    assert ticket["ticket_no"] == keys.ticket_no
    assert await _fetch(dsn, _SCHEMA) == await _fetch(databases["empty"], _SCHEMA)


async def test_failure_changes_nothing(databases: dict[str, str]) -> None:
    dsn = databases["empty"]
    taken = candidate_credentials(10).phone  # a real account already holds a seeded candidate's phone
    await _fetch(
        dsn,
        """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                  security_question, security_answer_hash)
           VALUES ('li.si', 'x', '李四', 'passport', 'E7654321', $1, 'l@example.com', 'q', 'a')""",
        taken,
    )
    try:
        with pytest.raises(SeedError, match="candidates_phone_key"):
            await seed(dsn, 100)
        assert await _fetch(dsn, "SELECT count(*) FROM candidates") == await _fetch(dsn, "SELECT 1")
        assert await _fetch(dsn, "SELECT * FROM exams") == []
    finally:
        await _fetch(dsn, "DELETE FROM candidates")
