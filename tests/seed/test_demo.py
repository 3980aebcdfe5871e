"""Demo seed: counts, validity and uniqueness, agreement with the pure per-index functions,
the open exam's lifecycle data (rules the seeded candidates mostly pass, review rules and points,
texts, the archive), determinism, idempotence, reset, and an unchanged schema afterwards.

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

from core import db, migrate, qualification
from core.documents import text_hash
from core.idcards import is_valid_resident_id
from core.timeutil import SHANGHAI
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
from seed import lifecycle as seed_lifecycle
from seed import photos as seed_photos
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


async def test_education_function_matches_the_rows(databases: dict[str, str]) -> None:
    rows = await _fetch(databases["a"], """SELECT e.level, e.major FROM educations e
                                           JOIN candidates c ON c.id = e.candidate_id ORDER BY c.id""")
    assert [tuple(r) for r in rows] == [tuple(seed_data.education(i)) for i in range(N)]


async def test_open_exam_carries_its_lifecycle(databases: dict[str, str]) -> None:
    dsn = databases["a"]
    exams = {r["code"]: r for r in await _fetch(dsn, "SELECT id, code, family FROM exams")}
    assert {e["family"] for e in exams.values()} == {seed_data.EXAM_FAMILY}
    exam_b = exams[EXAM_B_CODE]["id"]
    rules = {r["level_code"]: qualification.EligibilityRules.model_validate_json(r["rules"])
             for r in await _fetch(dsn, "SELECT level_code, rules::text AS rules FROM eligibility_rules"
                                        " WHERE exam_id = $1", exam_b)}
    assert set(rules) == {"CJ", "ZJ"}
    assert {p.education: p.min_work_years for p in rules["ZJ"].paths} == {"college": 6, "bachelor": 4, "master": 1,
                                                                          "doctorate": 0}
    # every seeded major is in the lists but one: 其他专业
    seeded_majors = {r["major"] for r in await _fetch(dsn, "SELECT DISTINCT major FROM educations")}
    listed = set(rules["ZJ"].majors_same) | set(rules["ZJ"].majors_related)
    assert seeded_majors - listed == {"土木工程"} and listed <= seeded_majors

    modes = {r["province"]: r for r in await _fetch(dsn, "SELECT * FROM exam_review_rules WHERE exam_id = $1", exam_b)}
    provinces = {r["province"] for r in await _fetch(dsn, "SELECT DISTINCT province FROM exam_sites"
                                                          " WHERE exam_id = $1", exam_b)}
    assert set(modes) == provinces
    auto = [p for p, r in modes.items() if r["review_mode"] == "auto"]
    assert len(auto) >= len(provinces) - 3 and all(modes[p]["commitment"] for p in auto)
    assert sorted(p for p, r in modes.items() if r["review_mode"] == "online") == ["46", "63"]
    (onsite,) = [r for r in modes.values() if r["review_mode"] == "onsite"]
    assert onsite["withdraw_rule"] == "until_review" and not onsite["commitment"]

    points = await _fetch(dsn, "SELECT province, city, name, address FROM review_points WHERE exam_id = $1", exam_b)
    site_cities = {(r["province"], r["city"]) for r in await _fetch(
        dsn, "SELECT DISTINCT province, city FROM exam_sites WHERE exam_id = $1", exam_b)}
    assert site_cities <= {(r["province"], r["city"]) for r in points}
    assert all(r["name"].endswith("审核点") and r["address"] for r in points)

    documents = await _fetch(dsn, "SELECT kind, version, title, body, sha256 FROM exam_documents WHERE exam_id = $1",
                             exam_b)
    assert sorted(d["kind"] for d in documents) == ["commitment", "instructions", "notice"]
    assert all(d["version"] == 1 and d["sha256"] == text_hash(d["title"], d["body"]) for d in documents)


async def test_most_seeded_candidates_pass_the_automatic_review(databases: dict[str, str]) -> None:
    dsn = databases["a"]
    conn = await db.connect(dsn)
    try:
        exam_b = await conn.fetchval("SELECT id FROM exams WHERE code = $1", EXAM_B_CODE)
        candidates = await conn.fetch("SELECT id, id_number FROM candidates ORDER BY id")
        rules = {level: await qualification.load_rules(conn, exam_b, level) for level in ("CJ", "ZJ")}
        today = datetime.now(UTC).astimezone(SHANGHAI).date()
        verdicts: dict[str, list[str]] = {"CJ": [], "ZJ": []}
        for index, candidate in enumerate(candidates):
            province = candidate["id_number"][:2]
            rule = await qualification.review_rule(conn, exam_b, province)
            archived = await qualification.archive_record(conn, candidate["id"], exam_b, today) is not None
            assert archived == seed_lifecycle.in_archive(index), index
            records = await qualification.educations(conn, candidate["id"])
            for level, work_years in (("CJ", 0), ("ZJ", 6)):
                verdict = qualification.review(rules[level], records, work_years=work_years,
                                               subjects=[f"{level}01", f"{level}11"], rule=rule, archived=archived,
                                               acknowledged_major=True)
                verdicts[level].append(verdict.status)
                assert (verdict.status != "rejected") == seed_lifecycle.qualifies(index, level, work_years), index
    finally:
        await conn.close()
    for level, statuses in verdicts.items():
        assert statuses.count("approved") > 0.8 * N, (level, statuses.count("approved"))
        assert 0 < statuses.count("under_review") < 0.15 * N  # 其他专业, the archive, the online provinces
    assert verdicts["CJ"].count("rejected") == 0 < verdicts["ZJ"].count("rejected")  # 中专 cannot sit 中级


async def test_three_seeded_candidates_in_four_have_one_approved_locked_photo_kept_once(
        databases: dict[str, str]) -> None:
    rows = await _fetch(databases["a"], """SELECT count(*) AS photos, count(DISTINCT sha256) AS blobs,
                                                  bool_and(status = 'approved' AND locked AND current) AS approved,
                                                  (SELECT count(*) FROM candidates) AS candidates,
                                                  (SELECT count(*) FROM photo_blobs) AS stored
                                             FROM photos""")
    with_photo = [index for index in range(N) if seed_photos.has_photo(index)]
    assert 0.7 * N < len(with_photo) < 0.8 * N
    assert dict(rows[0]) == {"photos": len(with_photo), "blobs": 1, "approved": True, "candidates": N, "stored": 1}
    owners = await _fetch(databases["a"], "SELECT c.username FROM photos p JOIN candidates c ON c.id = p.candidate_id")
    assert sorted(r["username"] for r in owners) == [seed_data.username(index) for index in with_photo]


async def test_integrity_records_of_a_few_seeded_candidates(databases: dict[str, str]) -> None:
    rows = await _fetch(databases["a"], "SELECT id_number, exam_family, violation, starts_on, ends_on, created_by"
                                        " FROM integrity_records ORDER BY id")
    entries = seed_lifecycle.archive_entries(N)
    assert 0 < len(rows) == len(entries) < N / 100
    assert [(r["id_number"], r["exam_family"], r["violation"]) for r in rows] == [
        (seed_data.resident_id(e.candidate), e.family, e.violation) for e in entries]
    assert all(r["created_by"] == seed_lifecycle.SEED_ACTOR and r["starts_on"] < r["ends_on"] for r in rows)
    assert sum(e.in_force for e in entries) > 0 and sum(not e.in_force for e in entries) > 0


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
        # (updated_at is when the row was written: each database its own moment)
        ("SELECT registration_id, exam_id, subject_code, score, batch_id FROM scores ORDER BY registration_id,"
         " subject_code"),
        "SELECT * FROM educations ORDER BY id",
        "SELECT province, city, name, address FROM review_points ORDER BY province, name",
        "SELECT * FROM exam_review_rules ORDER BY exam_id, province",
        "SELECT exam_id, level_code, rules FROM eligibility_rules ORDER BY exam_id, level_code",
        "SELECT exam_id, kind, version, title, body, sha256 FROM exam_documents ORDER BY exam_id, kind",
        "SELECT id_number, exam_family, violation, ends_on - starts_on FROM integrity_records ORDER BY id_number",
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
    sql = """SELECT (SELECT count(*) FROM candidates), (SELECT max(id) FROM registrations),
                    (SELECT count(*) FROM exams), (SELECT count(*) FROM review_points),
                    (SELECT count(*) FROM exam_review_rules),
                    (SELECT count(*) FROM eligibility_rules), (SELECT count(*) FROM integrity_records),
                    (SELECT array_agg(published_at ORDER BY kind) FROM exam_documents)"""
    before = await _fetch(databases["a"], sql)
    report = await seed(databases["a"], N)
    assert report.already_seeded and str(report).startswith("already seeded: 2,000 candidates")
    assert (report.candidates, report.registrations, report.tickets, report.scores) == (N, N, N, 2 * N)
    assert await _fetch(databases["a"], sql) == before


async def test_a_demo_seeded_before_the_lifecycle_data_and_photos_gets_them(databases: dict[str, str]) -> None:
    dsn = databases["b"]
    lifecycle_rows = """SELECT (SELECT count(*) FROM review_points), (SELECT count(*) FROM exam_review_rules),
                               (SELECT count(*) FROM eligibility_rules), (SELECT count(*) FROM exam_documents),
                               (SELECT count(*) FROM integrity_records), (SELECT count(*) FROM exams
                                                                          WHERE family IS NOT NULL),
                               (SELECT count(*) FROM photos)"""
    before = await _fetch(dsn, lifecycle_rows)
    await _fetch(dsn, """WITH a AS (DELETE FROM review_points), b AS (DELETE FROM exam_review_rules),
                              c AS (DELETE FROM eligibility_rules), d AS (DELETE FROM exam_documents),
                              e AS (DELETE FROM integrity_records), f AS (DELETE FROM photos)
                         UPDATE exams SET family = NULL""")
    assert list((await _fetch(dsn, lifecycle_rows))[0]) == [0] * 7
    assert (await seed(dsn, N)).already_seeded
    assert await _fetch(dsn, lifecycle_rows) == before


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
    await _lifecycle_rows(dsn)
    seen: list[tuple[int, int]] = []
    report = await seed(dsn, 500, reset=True, progress=lambda done, total: seen.append((done, total)))
    assert not report.already_seeded and report.candidates == 500
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    counts = """SELECT (SELECT count(*) FROM candidates) AS candidates, (SELECT count(*) FROM registrations) AS regs,
                       (SELECT count(*) FROM exams) AS exams, (SELECT count(*) FROM scores) AS scores,
                       (SELECT count(*) FROM candidates WHERE username = 'zhang.san') AS kept,
                       (SELECT count(*) FROM registration_events) + (SELECT count(*) FROM registration_commitments)
                       + (SELECT count(*) FROM cancellation_requests) + (SELECT count(*) FROM orders)
                       + (SELECT count(*) FROM refunds) + (SELECT count(*) FROM refund_events) AS lifecycle_rows,
                       (SELECT count(*) FROM integrity_records) AS archive,
                       (SELECT count(*) FROM photos WHERE status = 'approved' AND locked AND current) AS photos,
                       (SELECT count(*) FROM photos p JOIN candidates c ON c.id = p.candidate_id
                         WHERE c.username = 'zhang.san') AS kept_photo,
                       (SELECT count(*) FROM photo_change_requests) + (SELECT count(*) FROM photo_events)
                         AS photo_rows"""
    expected = {"candidates": 501, "regs": 500, "exams": 2, "scores": 1000, "kept": 1, "lifecycle_rows": 0,
                "archive": len(seed_lifecycle.archive_entries(500)) + 1,
                "photos": sum(map(seed_photos.has_photo, range(500))) + 1, "kept_photo": 1,
                "photo_rows": 0}
    assert dict((await _fetch(dsn, counts))[0]) == expected
    # reset with the same count starts over too (after a load test, say), also row by row
    await _lifecycle_rows(dsn)
    assert not (await seed(dsn, 500, reset=True)).already_seeded
    assert dict((await _fetch(dsn, counts))[0]) == expected
    monkeypatch.setattr(seed_reset, "_MAX_KEPT", 0)
    await _lifecycle_rows(dsn)
    assert not (await seed(dsn, 500, reset=True)).already_seeded
    assert dict((await _fetch(dsn, counts))[0]) == expected
    keys = lookup_keys(499)
    (ticket,) = await _fetch(dsn, "SELECT ticket_no FROM admission_tickets t JOIN registrations r"
                                  " ON r.id = t.registration_id JOIN candidates c ON c.id = r.candidate_id"
                                  " WHERE c.id_number = $1", keys.id_number)  # fmt: skip
    assert ticket["ticket_no"] == keys.ticket_no
    assert await _fetch(dsn, _SCHEMA) == await _fetch(databases["empty"], _SCHEMA)


async def _lifecycle_rows(dsn: str) -> None:
    """What a load test and operators leave behind: zhang.san's exam-B registration with its events, commitment,
    cancellation request, a closed order and its refund; a seeded candidate's order and refund; an operator's
    integrity record (which a reset keeps)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            registration = await conn.fetchval(
                """INSERT INTO registrations (candidate_id, exam_id, province, city, level_code, specialty_code,
                                              subjects, work_years, status)
                   SELECT c.id, e.id, '11', '北京市', 'ZJ', 'GS', '{ZJ01,ZJ11}', 5, 'approved'
                     FROM candidates c, exams e WHERE c.username = 'zhang.san' AND e.code = $1
                   ON CONFLICT (candidate_id, exam_id) DO UPDATE SET status = 'approved'
                   RETURNING id""", EXAM_B_CODE)
            seeded = await conn.fetchval("SELECT min(id) FROM registrations WHERE status = 'paid'")
            await conn.execute("""INSERT INTO registration_events (registration_id, action, from_status, to_status,
                                                                   version, actor)
                                  VALUES ($1, 'confirm', 'draft', 'approved', 2, 'candidate:1')""", registration)
            await conn.execute("""INSERT INTO registration_commitments (registration_id, candidate_id, version,
                                                                        text_sha256, address)
                                  SELECT id, candidate_id, 1, $2, '10.0.0.1' FROM registrations WHERE id = $1""",
                               registration, "0" * 64)
            await conn.execute("INSERT INTO cancellation_requests (registration_id) VALUES ($1)", registration)
            for registration_id in (registration, seeded):
                order_no = f"T{secrets.token_hex(8)}"
                await conn.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, status,
                                                          provider_trade_no, expires_at)
                                      VALUES ($1, $2, 'alipay', 12000, 'closed', 'T1', now())""",
                                   order_no, registration_id)
                refund_id = "RF" + "".join(random.choice("0123456789") for _ in range(24))
                await conn.execute("""INSERT INTO refunds (refund_id, order_no, provider, provider_trade_no,
                                                           amount_fen, reason, requested_by)
                                      VALUES ($1, $2, 'alipay', 'T1', 12000, 'cancellation', 'admin')""",
                                   refund_id, order_no)
                await conn.execute("INSERT INTO refund_events (refund_id, kind, actor) VALUES ($1, 'created', 'x')",
                                   refund_id)
            await conn.execute(
                """INSERT INTO integrity_records (id_number, exam_family, violation, starts_on, ends_on, created_by)
                   VALUES ('E12345678', '*', '替考', '2025-01-01', '2028-01-01', 'operator:admin')
                   ON CONFLICT DO NOTHING""")
            # zhang.san's photo (kept by a reset); a seeded candidate's change request and its audit (not kept).
            await seed_photos.give_photos(conn, "^zhang[.]san$", seeded=False)
            request = await conn.fetchval(
                """INSERT INTO photo_change_requests (candidate_id, photo_id, reason)
                   SELECT candidate_id, id, '换照片' FROM photos
                    WHERE candidate_id = (SELECT min(id) FROM candidates WHERE username ~ $1) RETURNING id""",
                seed_reset.SEEDED_USERNAME_PATTERN)
            await conn.execute("""INSERT INTO photo_events (candidate_id, photo_id, request_id, action, actor)
                                  SELECT candidate_id, photo_id, id, 'change_request', 'candidate:1'
                                    FROM photo_change_requests WHERE id = $1""", request)
    finally:
        await conn.close()


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
