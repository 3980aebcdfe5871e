"""Kind ``integrity_records``: the integrity archive, one record per person, family and start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from core.accounts import shanghai_today
from core.idcards import make_resident_id
from core.imports import ImportRejected
from tests.imports.catalogue_data import NDJSON, csv_body, exam_line, imported, ndjson, new_code, open_pool

HEADER = ("id_number", "name", "exam_family", "violation", "recorded_on", "until")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for p in open_pool(pg_dsn):
        yield p


@pytest.fixture
async def family(pool: asyncpg.Pool) -> str:
    """The family of a fresh exam."""
    name = new_code("FAM")
    await imported(pool, "exams", ndjson(exam_line(new_code("INT"), family=name)), content_type=NDJSON)
    return name


def person(seq: int) -> str:
    return make_resident_id("440305", date(1992, 6, 1) + timedelta(days=seq % 3000), seq % 1000)


async def import_records(pool: asyncpg.Pool, rows: list[tuple[Any, ...]], **kwargs: Any) -> Any:
    return await imported(pool, "integrity_records", csv_body(HEADER, rows), **kwargs)


async def test_records_are_written_with_their_batch_and_operator(pool: asyncpg.Pool, family: str) -> None:
    a, b = person(1), person(2)
    seen: list[Any] = []

    async def hook(conn: Any, keys: Any) -> None:
        seen.extend(keys)

    rows = [(a, "赵六", family, "考试作弊", "2025-11-15", "2027-11-14"),
            (a, "赵六", "*", "扰乱考场秩序", "2025-11-15", "2026-11-14"),
            (b.lower(), " 钱七 ", family, "替考", "2025-10-01", "2030-09-30")]
    result = await import_records(pool, rows, hooks={"integrity_records": hook})
    assert (result.rows, result.applied) == (3, 3)
    assert seen == sorted([a, b])  # each id number once
    stored = await pool.fetch(
        """SELECT id_number, name, exam_family, violation, starts_on, ends_on, created_by, batch_id
             FROM integrity_records WHERE id_number = ANY($1::text[]) ORDER BY id_number, exam_family""", [a, b])
    assert [tuple(r.values()) for r in stored] == [
        (a, "赵六", "*", "扰乱考场秩序", date(2025, 11, 15), date(2026, 11, 14), "importer", result.batch_id),
        (a, "赵六", family, "考试作弊", date(2025, 11, 15), date(2027, 11, 14), "importer", result.batch_id),
        (b, "钱七", family, "替考", date(2025, 10, 1), date(2030, 9, 30), "importer", result.batch_id),
    ]
    assert (await import_records(pool, rows)).applied == 0
    rows[0] = (a, "赵六", family, "考试作弊", "2025-11-15", "2028-11-14")  # the period extended
    assert (await import_records(pool, rows)).applied == 1
    assert await pool.fetchval("""SELECT ends_on FROM integrity_records WHERE id_number = $1 AND exam_family = $2""",
                               a, family) == date(2028, 11, 14)


async def test_bad_rows_are_reported_and_nothing_applied(pool: asyncpg.Pool, family: str) -> None:
    today = shanghai_today()
    removed = person(10)
    await import_records(pool, [(removed, "孙八", family, "作弊", "2025-01-01", "2026-01-01")])
    await pool.execute("UPDATE integrity_records SET removed_by = 'ops', removed_at = now() WHERE id_number = $1",
                       removed)
    good = person(11)
    rows = [
        (good, "周九", family, "作弊", "2025-01-01", "2026-01-01"),
        (person(12), "周九", "NO-SUCH-FAMILY", "作弊", "2025-01-01", "2026-01-01"),
        (person(13), "周九", family, "作弊", (today + timedelta(days=1)).isoformat(), "2099-01-01"),
        (person(14), "周九", family, "作弊", "2025-01-01", "2024-12-31"),
        (good, "周九", family, "另一违纪", "2025-01-01", "2027-01-01"),
        (removed, "孙八", family, "作弊", "2025-01-01", "2026-01-01"),
        ("110101199003071234", "周九", family, "作弊", "2025-01-01", "2026-01-01"),
        (person(15), "周九", "fam ily", "作弊", "2025-01-01", "2026-01-01"),
        (person(16), "周九", family, "", "2025-01-01", "2026-01-01"),
    ]
    with pytest.raises(ImportRejected) as caught:
        await import_records(pool, rows)
    reasons = dict(caught.value.rows)
    assert sorted(reasons) == list(range(3, 11))
    assert "考试类别 'NO-SUCH-FAMILY' 不存在" in reasons[3]
    assert "晚于今天" in reasons[4]
    assert "截止日期 2024-12-31 早于记录日期 2025-01-01" in reasons[5]
    assert "与第 2 行重复" in reasons[6]
    assert "被 ops 撤销" in reasons[7]
    assert "身份证号 110101199003071234" in reasons[8]
    assert "考试类别（exam_family） 'fam ily' 格式有误" in reasons[9]
    assert "违纪违规情形（violation）为空" in reasons[10]
    assert await pool.fetchval("SELECT count(*) FROM integrity_records WHERE id_number = $1", good) == 0


async def test_a_family_known_only_by_exam_code_or_families_table(pool: asyncpg.Pool) -> None:
    code = new_code("OWN")
    await imported(pool, "exams", ndjson(exam_line(code)), content_type=NDJSON)  # no family: its own, the code
    await pool.execute("INSERT INTO exam_families (family, name, validity_years) VALUES ($1, '测试类别', 2)",
                       f"F-{code}")
    rows = [(person(20), "吴十", code, "作弊", "2025-01-01", "2026-01-01"),
            (person(21), "吴十", f"F-{code}", "作弊", "2025-01-01", "2026-01-01")]
    assert (await import_records(pool, rows)).applied == 2
