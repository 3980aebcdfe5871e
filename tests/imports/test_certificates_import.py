"""Kind ``certificates``: national certificate numbers, one holder each, checked against the exam and its level."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.accounts import shanghai_today
from core.idcards import make_resident_id
from core.imports import ImportRejected
from tests.imports.catalogue_data import NDJSON, csv_body, exam_line, imported, ndjson, new_code, open_pool

HEADER = ("cert_no", "name", "id_number", "exam_code", "level", "approved_on", "management_no")
ID_A = make_resident_id("110101", date(1990, 3, 7), 123)
ID_B = make_resident_id("370102", date(1985, 11, 30), 456)


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for p in open_pool(pg_dsn):
        yield p


@pytest.fixture
async def exam(pool: asyncpg.Pool) -> str:
    """An exam that took place 100 days ago."""
    code = new_code("CERT")
    start = datetime.fromisoformat((shanghai_today() - timedelta(days=100)).isoformat() + "T09:00:00+08:00")
    await imported(pool, "exams", ndjson(exam_line(code, start=start)), content_type=NDJSON)
    return code


def cert_no() -> str:
    return "ZS" + secrets.token_hex(6).upper()


async def import_certs(pool: asyncpg.Pool, rows: list[tuple[Any, ...]], **kwargs: Any) -> Any:
    return await imported(pool, "certificates", csv_body(HEADER, rows), **kwargs)


async def test_certificates_are_written_and_corrected(pool: asyncpg.Pool, exam: str) -> None:
    yesterday = (shanghai_today() - timedelta(days=1)).isoformat()
    a, b = cert_no(), cert_no()
    seen: list[Any] = []

    async def hook(conn: Any, keys: Any) -> None:
        seen.extend(keys)

    rows = [(a, " 张三 ", ID_A.lower(), exam, "ZJ", yesterday, "M-001"),
            (b, "Smith John", "E12345678", exam, "CJ", yesterday, "M-002")]
    result = await import_certs(pool, rows, hooks={"certificates": hook})
    assert (result.rows, result.applied) == (2, 2)
    assert sorted(seen) == sorted([a, b])
    stored = await pool.fetchrow("SELECT name, id_number, level_code, management_no, batch_id FROM certificates "
                                 "WHERE cert_no = $1", a)
    assert tuple(stored.values()) == ("张三", ID_A, "ZJ", "M-001", result.batch_id)  # normalised
    assert (await import_certs(pool, rows)).applied == 0
    corrected = await import_certs(pool, [(a, "张三", ID_A, exam, "ZJ", yesterday, "M-001-A")])
    assert corrected.applied == 1
    assert await pool.fetchval("SELECT management_no FROM certificates WHERE cert_no = $1", a) == "M-001-A"


async def test_bad_rows_are_reported_and_nothing_applied(pool: asyncpg.Pool, exam: str) -> None:
    today = shanghai_today()
    taken = cert_no()
    await import_certs(pool, [(taken, "李四", ID_B, exam, "ZJ", today.isoformat(), "M-1")])
    good = cert_no()
    bad_check = ID_A[:17] + ("0" if ID_A[17] != "0" else "1")
    rows = [
        (good, "王五", ID_A, exam, "ZJ", today.isoformat(), "M-2"),
        (cert_no(), "王五", bad_check, exam, "ZJ", today.isoformat(), "M-3"),
        (cert_no(), "王五", ID_A, "NOPE", "ZJ", today.isoformat(), "M-4"),
        (cert_no(), "王五", ID_A, exam, "GJ", today.isoformat(), "M-5"),
        (cert_no(), "王五", ID_A, exam, "ZJ", (today + timedelta(days=1)).isoformat(), "M-6"),
        (cert_no(), "王五", ID_A, exam, "ZJ", (today - timedelta(days=400)).isoformat(), "M-7"),
        (good, "王五", ID_A, exam, "ZJ", today.isoformat(), "M-2"),
        (taken, "王五", ID_A, exam, "ZJ", today.isoformat(), "M-8"),
        (cert_no(), "王5", "12", exam, "ZJ", "2026-02-30", "M-9"),
        ("短", "王五", ID_A, exam, "ZJ", today.isoformat(), ""),
    ]
    with pytest.raises(ImportRejected) as caught:
        await import_certs(pool, rows)
    reasons = dict(caught.value.rows)
    assert sorted(reasons) == list(range(3, 12))
    assert "校验码不符" in reasons[3]
    assert "考试代码 'NOPE' 不存在" in reasons[4]
    assert f"考试 {exam} 没有级别 'GJ'" in reasons[5]
    assert "晚于今天" in reasons[6]
    assert "早于考试" in reasons[7]
    assert "与第 2 行重复" in reasons[8]
    assert "已登记给其他持证人（李四）" in reasons[9]
    assert "不是有效的日期" in reasons[10]
    assert "证书编号（cert_no） '短' 格式有误（6 至 32 位字母或数字）" in reasons[11]
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE cert_no = $1", good) == 0


async def test_a_bad_name_or_id_number_is_named(pool: asyncpg.Pool, exam: str) -> None:
    today = shanghai_today().isoformat()
    rows = [(cert_no(), "王5", ID_A, exam, "ZJ", today, "M"), (cert_no(), "王五", "12AB", exam, "ZJ", today, "M")]
    with pytest.raises(ImportRejected) as caught:
        await import_certs(pool, rows)
    reasons = dict(caught.value.rows)
    assert "姓名 王5 含有不允许的字符" in reasons[2]
    assert "证件号码 12AB 格式有误" in reasons[3]
