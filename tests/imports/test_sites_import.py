"""Kind ``sites``: exam sites and review points from CSV, upserted, never below the seats taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from core.imports import ImportRejected
from tests.imports.catalogue_data import (
    NDJSON,
    csv_body,
    exam_line,
    imported,
    make_registrations,
    ndjson,
    new_code,
    open_pool,
)

HEADER = ("exam_code", "province", "city", "name", "address", "capacity", "rooms", "seats_per_room", "kind")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for p in open_pool(pg_dsn):
        yield p


@pytest.fixture
async def exam(pool: asyncpg.Pool) -> tuple[str, int]:
    code = new_code("SITE")
    await imported(pool, "exams", ndjson(exam_line(code)), content_type=NDJSON)
    return code, await pool.fetchval("SELECT id FROM exams WHERE code = $1", code)


async def import_sites(pool: asyncpg.Pool, rows: list[tuple[Any, ...]], **kwargs: Any) -> Any:
    return await imported(pool, "sites", csv_body(HEADER, rows), **kwargs)


async def sites_of(pool: asyncpg.Pool, exam_id: int) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("""SELECT province, city, name, address, capacity, rooms, seats_per_room FROM exam_sites
                               WHERE exam_id = $1 ORDER BY name""", exam_id)
    return [tuple(r.values()) for r in rows]


async def points_of(pool: asyncpg.Pool, exam_id: int) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT province, city, name, address FROM review_points WHERE exam_id = $1 ORDER BY name",
                            exam_id)
    return [tuple(r.values()) for r in rows]


async def test_sites_and_review_points_are_upserted(pool: asyncpg.Pool, exam: tuple[str, int]) -> None:
    code, exam_id = exam
    rows = [
        (code, "11", "北京市", "北京第一考点", "海淀区学院路 1 号", 120, 4, None, "site"),
        (code, "37", "济南市", "济南第一考点", "历下区泉城路 2 号", 50, 2, 25, ""),
        (code, "37", "济南市", "济南审核点", "历下区 3 号", None, None, None, "review_point"),
    ]
    result = await import_sites(pool, rows)
    assert (result.rows, result.applied) == (3, 3)
    assert await sites_of(pool, exam_id) == [
        ("11", "北京市", "北京第一考点", "海淀区学院路 1 号", 120, 4, 30),
        ("37", "济南市", "济南第一考点", "历下区泉城路 2 号", 50, 2, 25),
    ]
    assert await points_of(pool, exam_id) == [("37", "济南市", "济南审核点", "历下区 3 号")]
    assert (await import_sites(pool, rows)).applied == 0  # the same again changes nothing
    rows[0] = (code, "11", "北京市", "北京第一考点", "海淀区学院路 1 号", 150, 5, None, "site")
    rows[2] = (code, "37", "济南市", "济南审核点", "历下区 4 号", None, None, None, "review_point")
    result = await import_sites(pool, rows[:1] + rows[2:])
    assert result.applied == 2
    assert (await sites_of(pool, exam_id))[0][4:6] == (150, 5)
    assert (await sites_of(pool, exam_id))[1][2] == "济南第一考点"  # not in the file: left as it is
    assert (await points_of(pool, exam_id))[0][3] == "历下区 4 号"


async def test_the_changed_keys_are_exam_ids(pool: asyncpg.Pool, exam: tuple[str, int]) -> None:
    code, exam_id = exam
    seen: list[Any] = []

    async def hook(conn: Any, keys: Any) -> None:
        seen.extend(keys)

    rows = [(code, "11", "北京市", f"考点{i}", "地址", 30, 1, None, "site") for i in range(3)]
    await import_sites(pool, rows, hooks={"sites": hook})
    assert seen == [exam_id]


async def test_bad_rows_are_reported_and_nothing_applied(pool: asyncpg.Pool, exam: tuple[str, int]) -> None:
    code, exam_id = exam
    rows = [
        (code, "11", "北京市", "好考点", "地址", 30, 1, None, "site"),  # good, but not applied
        ("NO-SUCH-EXAM", "11", "北京市", "甲", "地址", 30, 1, None, "site"),
        (code, "99", "某市", "乙", "地址", 30, 1, None, "site"),
        (code, "11", "北京市", "丙", "地址", 100, 3, None, "site"),
        (code, "11", "北京市", "丁", "地址", None, 3, None, "site"),
        (code, "11", "北京市", "戊", "地址", 10, 1, None, "kiosk"),
        (code, "11", "北京市", "己", "地址", 30, 1, None, "review_point"),
        (code, "11", "北京市", "好考点", "地址", 30, 1, None, "site"),
        (code, "11", "北京市", "庚", "", 30, 1, None, "site"),
        (code, "11", "北京市", "辛", "地址", "三十", 1, None, "site"),
    ]
    with pytest.raises(ImportRejected) as caught:
        await import_sites(pool, rows)
    reasons = dict(caught.value.rows)
    assert sorted(reasons) == list(range(3, 12))
    assert "考试代码 'NO-SUCH-EXAM' 不存在" in reasons[3]
    assert "省份代码 99 无效" in reasons[4]
    assert "容量 100 超过考场数 × 每考场座位数（3 × 30 = 90）" in reasons[5]
    assert "考点须填写容量（capacity）" in reasons[6]
    assert "site 或 review_point" in reasons[7]
    assert "审核点不填写容量" in reasons[8]
    assert "考点 好考点 与第 2 行重复" in reasons[9]
    assert "考点须填写地址" in reasons[10]
    assert "不是整数" in reasons[11]
    assert await sites_of(pool, exam_id) == []


async def test_capacity_never_drops_below_the_seats_taken(pool: asyncpg.Pool, exam: tuple[str, int]) -> None:
    code, exam_id = exam
    await import_sites(pool, [(code, "11", "北京市", "考点A", "地址", 60, 2, None, "site")])
    site_id = await pool.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    await make_registrations(pool, exam_id, 5, site_id=site_id, status="paid")
    await make_registrations(pool, exam_id, 3, site_id=site_id, status="cancelled")  # seats given back
    with pytest.raises(ImportRejected) as caught:
        await import_sites(pool, [(code, "11", "北京市", "考点A", "地址", 4, 2, None, "site")])
    assert "考点已有 5 个座位被占用，容量不能减到 4" in caught.value.rows[0][1]
    with pytest.raises(ImportRejected) as caught:
        await import_sites(pool, [(code, "37", "济南市", "考点A", "地址", 60, 2, None, "site")])
    assert "不能改变所在省份和城市（现为 11 北京市）" in caught.value.rows[0][1]
    assert (await import_sites(pool, [(code, "11", "北京市", "考点A", "新地址", 5, 1, None, "site")])).applied == 1
    assert (await sites_of(pool, exam_id))[0][3:6] == ("新地址", 5, 1)


async def test_a_seat_being_taken_is_waited_for_and_counted(pool: asyncpg.Pool, exam: tuple[str, int]) -> None:
    code, exam_id = exam
    await import_sites(pool, [(code, "11", "北京市", "考点B", "地址", 30, 1, None, "site")])
    site_id = await pool.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    async with pool.acquire() as writer:
        holding = writer.transaction()
        await holding.start()
        await make_registrations(writer, exam_id, 3, site_id=site_id)
        importing = asyncio.create_task(
            import_sites(pool, [(code, "11", "北京市", "考点B", "地址", 2, 1, None, "site")]))
        while not await pool.fetchval(  # the import waits for the seats' transaction
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                    AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE OF s%'"""):
            assert not importing.done(), importing
            await asyncio.sleep(0.01)
        await holding.commit()
    with pytest.raises(ImportRejected) as caught:
        await importing
    assert "考点已有 3 个座位被占用，容量不能减到 2" in caught.value.rows[0][1]
