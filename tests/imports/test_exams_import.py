"""Kind ``exams``: whole exams from NDJSON, upserted by code, guarded where registrations depend on them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.imports import ImportRejected
from core.imports.parse import FormatNotAccepted
from tests.imports.catalogue_data import (
    NDJSON,
    closed_exam_line,
    exam_line,
    imported,
    iso,
    make_registrations,
    ndjson,
    new_code,
    open_pool,
)


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async for p in open_pool(pg_dsn):
        yield p


async def import_exams(pool: asyncpg.Pool, *lines: dict[str, Any] | str, batch_id: str | None = None) -> Any:
    return await imported(pool, "exams", ndjson(*lines), content_type=NDJSON, batch_id=batch_id)


async def structure(pool: asyncpg.Pool, code: str) -> dict[str, Any]:
    """The stored exam as plain data, for comparisons."""
    exam = await pool.fetchrow("SELECT * FROM exams WHERE code = $1", code)
    assert exam is not None
    exam_id = exam["id"]

    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in await pool.fetch(sql, exam_id)]

    return {
        "exam": {k: v for k, v in dict(exam).items() if k != "id"},
        "levels": await rows("SELECT code, name, position FROM exam_levels WHERE exam_id = $1 ORDER BY code"),
        "specialties": await rows("""SELECT level_code, code, name, position FROM exam_specialties
                                      WHERE exam_id = $1 ORDER BY 1, 2"""),
        "subjects": await rows("""SELECT code, name, starts_at, ends_at, full_mark, pass_mark, position
                                    FROM exam_subjects WHERE exam_id = $1 ORDER BY code"""),
        "links": await rows("""SELECT level_code, specialty_code, subject_code FROM exam_specialty_subjects
                                WHERE exam_id = $1 ORDER BY 1, 2, 3"""),
        "rules": await rows("""SELECT province, review_mode, manual_mode, commitment, withdraw_rule
                                 FROM exam_review_rules WHERE exam_id = $1 ORDER BY province"""),
    }


async def test_a_new_exam_is_written_whole(pool: asyncpg.Pool) -> None:
    code = new_code()
    line = exam_line(code, family="ECON-T")
    result = await import_exams(pool, line)
    assert (result.rows, result.applied, result.already_applied) == (1, 1, False)
    stored = await structure(pool, code)
    assert stored["exam"]["family"] == "ECON-T"
    assert stored["exam"]["fee_per_subject_fen"] == 5600
    assert stored["exam"]["score_review_opens_at"] is not None
    assert [lvl[0] for lvl in stored["levels"]] == ["CJ", "ZJ"]
    assert stored["specialties"] == [("CJ", "JR", "金融", 0), ("ZJ", "GS", "工商管理", 1), ("ZJ", "JR", "金融", 0)]
    assert stored["links"] == [("CJ", "JR", "CJ01"), ("CJ", "JR", "CJ11"), ("ZJ", "GS", "ZJ01"),
                               ("ZJ", "JR", "ZJ01"), ("ZJ", "JR", "ZJ11")]
    marks = {s[0]: (float(s[4]), float(s[5])) for s in stored["subjects"]}
    assert marks == {"CJ01": (140, 84), "CJ11": (140, 84), "ZJ01": (140, 84), "ZJ11": (100, 60)}
    assert stored["rules"] == [("11", "auto", "online", True, "until_payment"),
                               ("37", "onsite", "onsite", False, "until_review")]
    batch = await pool.fetchrow("SELECT kind, rows, applied, created_by FROM import_batches WHERE batch_id = $1",
                                result.batch_id)
    assert tuple(batch.values()) == ("exams", 1, 1, "importer")


async def test_reimporting_is_idempotent(pool: asyncpg.Pool) -> None:
    code = new_code()
    data = exam_line(code)
    first = await import_exams(pool, data, batch_id=f"same-{code}")
    before = await structure(pool, code)
    again = await import_exams(pool, data, batch_id=f"same-{code}")
    assert again.already_applied and again.applied == first.applied == 1
    fresh = await import_exams(pool, data)  # another batch, the same content: nothing to change
    assert (fresh.applied, fresh.already_applied) == (0, False)
    assert await structure(pool, code) == before


async def test_an_update_replaces_the_structure(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, closed_exam_line(code))
    changed = closed_exam_line(code, name="改过名字的考试", fee_per_subject_fen=6000, review_rules=[
        {"province": "37", "review_mode": "online", "manual_mode": "online", "commitment": True,
         "withdraw_rule": "locked"}])
    changed["levels"] = [changed["levels"][1]]  # 初级 goes, with its subjects
    changed["subjects"] = [s for s in changed["subjects"] if s["code"].startswith("ZJ")]
    changed["subjects"][0]["pass_mark"] = 80
    result = await import_exams(pool, changed)
    assert result.applied == 1
    stored = await structure(pool, code)
    assert stored["exam"]["name"] == "改过名字的考试" and stored["exam"]["fee_per_subject_fen"] == 6000
    assert [lvl[0] for lvl in stored["levels"]] == ["ZJ"]
    assert [s[0] for s in stored["subjects"]] == ["ZJ01", "ZJ11"]
    assert float(stored["subjects"][0][5]) == 80
    assert stored["rules"] == [("37", "online", "online", True, "locked")]


async def test_bad_lines_are_reported_by_line_and_nothing_is_applied(pool: asyncpg.Pool) -> None:
    good, bad_windows, bad_refs, bad_shape, duplicate = (new_code() for _ in range(5))
    windows = exam_line(bad_windows)
    windows["windows"]["registration_closes_at"] = windows["windows"]["registration_opens_at"]
    windows["windows"]["score_review_closes_at"] = None
    refs = exam_line(bad_refs, fee_per_subject_fen=0, review_rules=[
        {"province": "99", "review_mode": "auto", "manual_mode": "online", "commitment": True,
         "withdraw_rule": "until_payment"}])
    refs["levels"][0]["specialties"][0]["subjects"].append("NOPE")
    refs["subjects"][0]["starts_at"] = refs["subjects"][0]["ends_at"]
    refs["subjects"][1]["pass_mark"] = 150
    shape = exam_line(bad_shape)
    shape["windows"]["exam_starts_at"] = "2026-05-01 09:00"  # no offset
    shape["levels"][0]["code"] = "初级"
    lines: list[dict[str, Any] | str] = [exam_line(good), windows, refs, shape, "{not json", exam_line(good),
                                         exam_line(duplicate, fee_per_subject_fen="5600")]
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, *lines)
    reasons = dict(caught.value.rows)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    assert "报名开始时间应早于报名截止时间" in reasons[2] and "成绩复核的开始和截止时间应同时给出" in reasons[2]
    assert "每科报名费" in reasons[3] and "小于 1" in reasons[3]  # fee 0: refused by the column check
    shape_reasons = reasons[4]
    assert "windows.exam_starts_at" in shape_reasons and "levels[0].code" in shape_reasons
    assert "不是有效的 JSON" in reasons[5]
    assert "与第 1 行重复" in reasons[6]
    assert "应为数字" in reasons[7]
    assert await pool.fetchval("SELECT count(*) FROM exams WHERE code = ANY($1::text[])",
                               [good, bad_windows, bad_refs, bad_shape, duplicate]) == 0


async def test_an_exam_on_its_own_is_checked_in_full(pool: asyncpg.Pool) -> None:
    code = new_code()
    line = exam_line(code, review_rules=[
        {"province": "99", "review_mode": "auto", "manual_mode": "online", "commitment": True,
         "withdraw_rule": "until_payment"},
        {"province": "11", "review_mode": "auto", "manual_mode": "online", "commitment": True,
         "withdraw_rule": "until_payment"},
        {"province": "11", "review_mode": "auto", "manual_mode": "online", "commitment": True,
         "withdraw_rule": "until_payment"}])
    line["levels"][0]["specialties"][0]["subjects"].append("NOPE")
    line["levels"][1]["specialties"].append(copy.deepcopy(line["levels"][1]["specialties"][0]))
    line["subjects"][0]["starts_at"] = line["subjects"][0]["ends_at"]
    line["subjects"][1]["pass_mark"] = 150
    line["subjects"].append({**line["subjects"][2], "code": "SPARE"})
    early = datetime.fromisoformat(line["windows"]["exam_starts_at"]) - timedelta(days=1)
    line["subjects"].append({**line["subjects"][2], "starts_at": iso(early)})
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, line)
    ((lineno, reason),) = caught.value.rows
    assert lineno == 1
    for part in ("级别 CJ 专业 JR 的科目 NOPE 不在 subjects 中", "级别 ZJ 的专业代码 JR 重复",
                 "科目 CJ01 的开始时间应早于结束时间", "科目 CJ11 的合格分 150 高于满分 140",
                 "科目 SPARE 没有任何专业报考", "科目代码 ZJ01 重复", "科目 ZJ01 的开始时间早于考试开始时间",
                 "省份 11 的审核规则重复", "省份代码 99 无效"):
        assert part in reason, part


async def test_csv_is_refused_for_exams(pool: asyncpg.Pool) -> None:
    with pytest.raises(FormatNotAccepted) as caught:
        await imported(pool, "exams", b"code,name\nX,Y\n")
    assert caught.value.accepted == (NDJSON,)


async def test_registrations_keep_what_they_name(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, closed_exam_line(code))
    exam_id = await pool.fetchval("SELECT id FROM exams WHERE code = $1", code)
    await make_registrations(pool, exam_id, 2, level="ZJ", specialty="JR", subjects=["ZJ01", "ZJ11"])
    await make_registrations(pool, exam_id, 1, level="CJ", specialty="JR", subjects=["CJ01"])
    before = await structure(pool, code)

    no_cj = closed_exam_line(code)
    no_cj["levels"] = [no_cj["levels"][1]]
    no_cj["subjects"] = [s for s in no_cj["subjects"] if s["code"].startswith("ZJ")]
    narrower = closed_exam_line(code, family="OTHER")
    narrower["levels"][1]["specialties"][0]["subjects"] = ["ZJ01"]  # ZJ/JR no longer takes ZJ11
    narrower["levels"][1]["specialties"][1]["subjects"] = ["ZJ01", "ZJ11"]  # GS takes it instead
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, no_cj, exam_line(other := new_code()))
    reasons = dict(caught.value.rows)
    assert list(reasons) == [1]  # the good second line is not reported, and not applied either
    assert "级别 CJ 已有报名，不能删除（1 个报名）" in reasons[1]
    assert await pool.fetchval("SELECT count(*) FROM exams WHERE code = $1", other) == 0
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, narrower)
    reason = caught.value.rows[0][1]
    assert "级别 ZJ 专业 JR 的报名报考了科目 ZJ11，不能从该专业去掉（2 个报名）" in reason
    assert "不能改变考试类别" in reason
    assert await structure(pool, code) == before

    # What keeps the registrations valid is allowed: a new specialty, new subject, other times and names.
    wider = closed_exam_line(code, name="新名称")
    wider["subjects"].append({**wider["subjects"][3], "code": "ZJ12", "name": "新科目"})
    wider["levels"][1]["specialties"].append({"code": "RL", "name": "人力资源管理", "subjects": ["ZJ01", "ZJ12"]})
    assert (await import_exams(pool, wider)).applied == 1
    assert ("ZJ", "RL", "ZJ12") in (await structure(pool, code))["links"]


async def test_the_fee_stays_once_an_order_exists(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, exam_line(code))
    exam_id = await pool.fetchval("SELECT id FROM exams WHERE code = $1", code)
    (registration,) = await make_registrations(pool, exam_id, 1)
    await pool.execute("""INSERT INTO orders (order_no, registration_id, provider, amount_fen, expires_at)
                          VALUES ($1, $2, 'alipay', 11200, now() + interval '1 hour')""", f"O{code}", registration)
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, exam_line(code, fee_per_subject_fen=7000))
    assert "不能修改每科报名费（现为 5600 分）" in caught.value.rows[0][1]
    assert (await import_exams(pool, exam_line(code, name="只改名称"))).applied == 1


async def test_levels_with_certificates_and_subjects_with_scores_stay(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, closed_exam_line(code))
    exam_id = await pool.fetchval("SELECT id FROM exams WHERE code = $1", code)
    (registration,) = await make_registrations(pool, exam_id, 1, level="ZJ", specialty="GS", subjects=["ZJ01"],
                                               status="cancelled")
    await pool.execute("INSERT INTO scores (registration_id, exam_id, subject_code, score) VALUES ($1, $2, 'ZJ01', 90)",
                       registration, exam_id)
    await pool.execute("""INSERT INTO certificates (cert_no, name, id_number, exam_id, level_code, approved_on,
                                                    management_no) VALUES ($1, '张三', 'E12345678', $2, 'CJ',
                                                    '2026-01-01', 'M1')""", f"C{exam_id}X{code[-4:]}", exam_id)
    line = closed_exam_line(code)
    line["levels"] = [line["levels"][1]]
    line["levels"][0]["specialties"] = [{"code": "GS", "name": "工商管理", "subjects": ["ZJ11"]}]
    line["subjects"] = [s for s in line["subjects"] if s["code"] == "ZJ11"]
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, line)
    reason = caught.value.rows[0][1]
    assert "级别 CJ 已有证书，不能删除" in reason
    assert "科目 ZJ01 已有成绩，不能删除" in reason


async def test_nothing_is_removed_while_registration_is_open(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, exam_line(code))  # registration opened an hour ago
    line = exam_line(code)
    line["levels"][1]["specialties"] = line["levels"][1]["specialties"][:1]  # ZJ/GS goes
    with pytest.raises(ImportRejected) as caught:
        await import_exams(pool, line)
    assert "报名期间不能删除级别、专业、科目或专业的科目（ZJ/GS/ZJ01）" in caught.value.rows[0][1]
    wider = exam_line(code)
    wider["levels"][1]["specialties"].append({"code": "RL", "name": "人力资源管理", "subjects": ["ZJ01"]})
    assert (await import_exams(pool, wider)).applied == 1


async def test_a_registration_being_written_is_waited_for_and_counted(pool: asyncpg.Pool) -> None:
    code = new_code()
    await import_exams(pool, closed_exam_line(code))
    exam_id = await pool.fetchval("SELECT id FROM exams WHERE code = $1", code)
    no_cj = closed_exam_line(code)
    no_cj["levels"] = no_cj["levels"][1:]
    no_cj["subjects"] = [s for s in no_cj["subjects"] if s["code"].startswith("ZJ")]
    async with pool.acquire() as writer:
        registering = writer.transaction()
        await registering.start()
        await make_registrations(writer, exam_id, 1, level="CJ", specialty="JR", subjects=["CJ01"])
        importing = asyncio.create_task(import_exams(pool, no_cj))
        while not await pool.fetchval(  # the import waits for the registration's transaction
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                    AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'"""):
            assert not importing.done(), importing
            await asyncio.sleep(0.01)
        await registering.commit()
    with pytest.raises(ImportRejected) as caught:
        await importing
    assert "级别 CJ 已有报名，不能删除（1 个报名）" in caught.value.rows[0][1]
