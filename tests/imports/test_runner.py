"""``run_import`` on real PostgreSQL: every bad row of a file reported by line with nothing applied, a batch
applied once, a conflicting batch id, CSV and NDJSON, corrections recorded, the hook inside the transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from benchmarks.import_data import ScoredExam, id_number, score_csv, ticket_no
from core.db import Conn
from core.imports import BatchConflict, ImportRejected, UnknownKind, UnsupportedContentType, run_import

CSV = "text/csv"
NDJSON = "application/x-ndjson"
HEADER = "exam_code,ticket_no,id_number,subject_code,score"


async def scores_of(pg: asyncpg.Connection, exam: ScoredExam) -> dict[tuple[str, str], str]:
    rows = await pg.fetch("SELECT t.ticket_no, s.subject_code, s.score::text FROM scores s"
                          " JOIN admission_tickets t USING (registration_id) WHERE s.exam_id = $1", exam.exam_id)
    return {(r[0], r[1]): r[2] for r in rows}


def bad_scores_file(exam: ScoredExam) -> tuple[bytes, dict[int, str]]:
    """A scores CSV with one good row first and twenty kinds of bad rows; line → a part of its reason."""
    code, t, p = exam.code, (lambda i: ticket_no(exam.tag, i)), (lambda i: id_number(exam.tag, i))
    lines: list[bytes] = [HEADER.encode(), f"{code},{t(1)},{p(1)},101,88.5".encode()]
    expected: dict[int, str] = {}

    def add(row: str | bytes, reason: str) -> None:
        lines.append(row if isinstance(row, bytes) else row.encode())
        expected[len(lines)] = reason

    add(f"{code},{t(2)},{p(2)},101", "应有 5 列，实有 4 列")                         # too few columns
    add(f"{code},{t(2)},{p(2)},101,80,extra", "应有 5 列，实有 6 列")                # too many columns
    add(f"{code},{t(2)},{p(2)},101,八十", "不是有效的数值")                           # not a number
    add(f"{code},{t(2)},{p(2)},101,80.55", "不是有效的数值")                          # two decimals
    add(f"{code},{t(2)},{p(2)},101,-3", "小于 0")                                    # negative
    add(f"{code},{t(2)},{p(2)},101,100.5", "超过科目 101 的满分 100.0")               # above the full mark
    add(f"{code},TNOSUCH,{p(2)},101,60", "准考证号 TNOSUCH 不存在")                  # unknown ticket
    add(f"{code},{t(2)},{p(3)},101,60", f"证件号码 {p(3)} 与准考证号 {t(2)} 的考生不符")  # ticket / id mismatch
    add(f"{code},{t(2)},{p(2)},999,60", f"科目代码 999 不属于考试 {code}")           # unknown subject
    add(f"{code},{t(2)},{p(2)},103,60", f"准考证号 {t(2)} 的考生未报考科目 103")       # subject not taken
    add(f"{code},{t(1)},{p(1)},101,70", "成绩重复（第 2 行已有）")                     # duplicate of line 2
    add(f"{code},,{p(2)},102,60", "准考证号（ticket_no）为空")                        # empty field
    add(f"{code},{t(2)},{p(2)},102,", "成绩（score）为空")                            # empty score
    add(f"{code},{t(2)},{p(2)},102,7".encode() + b"\xff\xfe", "非 UTF-8")             # bad encoding
    add(f"{code},{t(2)},{'9' * 40},102,60", "证件号码（id_number）超过 32 个字符")    # over-long value
    add(f"NOEXAM,{t(2)},{p(2)},102,60", "考试代码 NOEXAM 不存在")                     # unknown exam
    add(f",{t(2)},{p(2)},102,60", "考试代码（exam_code）为空")                       # empty exam code
    add(f"{code},{t(2)},{p(2)},,60", "科目代码（subject_code）为空")                 # empty subject code
    add(f"{code},{'T' * 33},{p(2)},102,60", "准考证号（ticket_no）超过 32 个字符")   # over-long ticket number
    add(f'{code},"{t(2)},{p(2)},102,60', "CSV")                                     # unterminated quote...
    return b"\n".join(lines) + b"\n", expected


async def test_every_bad_row_is_reported_by_line_and_nothing_is_applied(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    data, expected = bad_scores_file(exam)
    with pytest.raises(ImportRejected) as caught:
        await run_import(pool, "scores", data, content_type=CSV, batch_id=f"bad-{exam.tag}", actor="t")
    reported = dict(caught.value.rows)
    for line, reason in expected.items():
        if reason == "CSV":  # the open quote swallows the rest of the file: one row, reported at its line
            assert line in reported, reported
            continue
        assert reason in reported.get(line, ""), (line, reason, reported.get(line))
    assert 2 not in reported  # the good row
    assert caught.value.total == len(reported)
    assert await scores_of(pg, exam) == {}
    assert await pg.fetchval("SELECT count(*) FROM import_batches WHERE batch_id = $1", f"bad-{exam.tag}") == 0


async def test_bad_pass_mark_rows_are_reported(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    """Unknown level, unknown subject, above the full mark, duplicate, unknown exam, not a number."""
    data = "\n".join([
        "exam_code,level,subject_code,pass_mark",
        f"{exam.code},mid,101,60",
        f"{exam.code},top,101,60",
        f"{exam.code},mid,404,60",
        f"{exam.code},adv,103,150.5",
        f"{exam.code},mid,101,61",
        "NOEXAM,mid,101,60",
        f"{exam.code},mid,102,abc",
    ]).encode()
    with pytest.raises(ImportRejected) as caught:
        await run_import(pool, "pass_marks", data, content_type=CSV, batch_id=f"pm-bad-{exam.tag}", actor="t")
    assert caught.value.rows == [
        (3, f"级别代码 top 不属于考试 {exam.code}"),
        (4, f"科目代码 404 不属于考试 {exam.code}"),
        (5, "合格标准 150.5 超过科目 103 的满分 150.0"),
        (6, f"考试 {exam.code} 级别 mid 科目 101 的合格标准重复（第 2 行已有）"),
        (7, "考试代码 NOEXAM 不存在"),
        (8, "合格标准（pass_mark） 'abc' 不是有效的数值（至多四位整数、一位小数）"),
    ]
    assert await pg.fetchval("SELECT count(*) FROM pass_marks WHERE exam_id = $1", exam.exam_id) == 0


async def test_header_must_name_exactly_the_columns(pool: asyncpg.Pool, exam: ScoredExam) -> None:
    data = f"exam_code,ticket,id_number,subject_code,score,comment\n{exam.code},x,y,101,1,z\n".encode()
    with pytest.raises(ImportRejected) as caught:
        await run_import(pool, "scores", data, content_type=CSV, batch_id=f"hdr-{exam.tag}", actor="t")
    [(line, reason)] = caught.value.rows
    assert line == 1
    assert "未知的列 ticket、comment" in reason and "缺少列 ticket_no" in reason


async def test_columns_in_another_order_and_a_bom_are_read(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    t, p = ticket_no(exam.tag, 1), id_number(exam.tag, 1)
    data = f"\ufeffscore,subject_code,id_number,ticket_no,exam_code\r\n75,102,{p},{t},{exam.code}\r\n".encode()
    result = await run_import(pool, "scores", data, content_type="text/csv; charset=utf-8",
                              batch_id=f"order-{exam.tag}", actor="t")
    assert (result.rows, result.applied) == (1, 1)
    assert await scores_of(pg, exam) == {(t, "102"): "75.0"}


async def test_a_batch_is_applied_once_and_a_conflicting_id_refused(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    data = score_csv(exam, range(1, 6))
    batch = f"once-{exam.tag}"
    first = await run_import(pool, "scores", data, content_type=CSV, batch_id=batch, actor="alice")
    assert (first.rows, first.applied, first.already_applied) == (5, 5, False)
    again = await run_import(pool, "scores", data, content_type=CSV, batch_id=batch, actor="alice")
    assert (again.rows, again.applied, again.already_applied) == (5, 5, True)
    assert await pg.fetchval("SELECT count(*) FROM scores WHERE batch_id = $1", batch) == 5
    row = await pg.fetchrow("SELECT kind, rows, applied, created_by FROM import_batches WHERE batch_id = $1", batch)
    assert dict(row) == {"kind": "scores", "rows": 5, "applied": 5, "created_by": "alice"}
    with pytest.raises(BatchConflict):
        await run_import(pool, "scores", score_csv(exam, range(1, 6), offset=1), content_type=CSV, batch_id=batch,
                         actor="alice")
    with pytest.raises(BatchConflict):
        await run_import(pool, "pass_marks", b"exam_code,level,subject_code,pass_mark\n", content_type=CSV,
                         batch_id=batch, actor="alice")
    assert await pg.fetchval("SELECT count(*) FROM scores WHERE batch_id = $1", batch) == 5


async def test_the_same_batch_posted_twice_at_once_is_applied_once(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    data = score_csv(exam, range(1, 6))
    results = await asyncio.gather(*[run_import(pool, "scores", data, content_type=CSV, batch_id=f"twice-{exam.tag}",
                                                actor="t") for _ in range(2)])
    assert sorted(r.already_applied for r in results) == [False, True]
    assert await pg.fetchval("SELECT count(*) FROM scores WHERE batch_id = $1", f"twice-{exam.tag}") == 5


async def test_a_correction_changes_only_what_differs_and_records_old_and_new(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    await run_import(pool, "scores", score_csv(exam, range(1, 6)), content_type=CSV, batch_id=f"c1-{exam.tag}",
                     actor="t")
    seen: list[Sequence[Any]] = []

    async def hook(conn: Conn, keys: Sequence[Any]) -> None:
        # Inside the transaction: the new score is visible here, before COMMIT.
        assert conn.is_in_transaction()
        seen.append(list(keys))
        assert await conn.fetchval("SELECT score::text FROM scores WHERE registration_id = $1 AND subject_code = '101'",
                                   keys[0]) == "9.5"

    t2, p2 = ticket_no(exam.tag, 2), id_number(exam.tag, 2)
    t3, p3 = ticket_no(exam.tag, 3), id_number(exam.tag, 3)
    fix = f"{HEADER}\n{exam.code},{t2},{p2},101,9.5\n{exam.code},{t3},{p3},101,21.0\n".encode()  # line 3 unchanged
    result = await run_import(pool, "scores", fix, content_type=CSV, batch_id=f"c2-{exam.tag}", actor="bob",
                              hooks={"scores": hook})
    assert (result.rows, result.applied) == (2, 1)
    reg2 = await pg.fetchval("SELECT registration_id FROM admission_tickets WHERE ticket_no = $1", t2)
    assert seen == [[reg2]]
    change = await pg.fetchrow("SELECT old_score::text, new_score::text FROM score_changes WHERE batch_id = $1",
                               f"c2-{exam.tag}")
    assert tuple(change) == ("14.0", "9.5")
    row = await pg.fetchrow("SELECT score::text, batch_id FROM scores WHERE registration_id = $1", reg2)
    assert tuple(row) == ("9.5", f"c2-{exam.tag}")


async def test_a_failing_hook_rolls_everything_back(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    async def hook(conn: Conn, keys: Sequence[Any]) -> None:
        raise RuntimeError("cache unreachable")

    with pytest.raises(RuntimeError):
        await run_import(pool, "scores", score_csv(exam, range(1, 3)), content_type=CSV, batch_id=f"h-{exam.tag}",
                         actor="t", hooks={"scores": hook})
    assert await scores_of(pg, exam) == {}
    assert await pg.fetchval("SELECT count(*) FROM import_batches WHERE batch_id = $1", f"h-{exam.tag}") == 0


async def test_ndjson_rows_with_wrong_keys_and_types_are_reported(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    def row(i: int, **change: Any) -> str:
        base: dict[str, Any] = {"exam_code": exam.code, "ticket_no": ticket_no(exam.tag, i),
                                "id_number": id_number(exam.tag, i), "subject_code": "101", "score": 61.5}
        base.update(change)
        return json.dumps({k: v for k, v in base.items() if v is not ...}, ensure_ascii=False)

    lines = [row(1), row(2, score="61"), row(3, subject_code=101), row(4, extra=1), row(5, score=...), "",
             "[1, 2]", "{not json", row(2, score=True), row(3, score=101)]
    data = "\n".join(lines).encode()
    with pytest.raises(ImportRejected) as caught:
        await run_import(pool, "scores", data, content_type=NDJSON, batch_id=f"nd-{exam.tag}", actor="t")
    reported = dict(caught.value.rows)
    assert sorted(reported) == [2, 3, 4, 5, 7, 8, 9, 10]
    assert "应为数字" in reported[2] and "应为字符串" in reported[3]
    assert "未知字段 extra" in reported[4] and "缺少字段 score" in reported[5]
    assert "JSON 对象" in reported[7] and "不是有效的 JSON" in reported[8]
    assert "布尔值" in reported[9] and "超过科目 101 的满分" in reported[10]
    assert await scores_of(pg, exam) == {}
    good = "\n".join([row(1), row(2, score=70)]).encode()
    result = await run_import(pool, "scores", good, content_type="application/jsonl", batch_id=f"nd2-{exam.tag}",
                              actor="t")
    assert (result.rows, result.applied) == (2, 2)
    assert (await scores_of(pg, exam))[(ticket_no(exam.tag, 2), "101")] == "70.0"


async def test_pass_marks_apply_and_only_changes_count(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    keys: list[Sequence[Any]] = []

    async def hook(conn: Conn, changed: Sequence[Any]) -> None:
        keys.append(list(changed))

    data = f"exam_code,level,subject_code,pass_mark\n{exam.code},mid,101,60\n{exam.code},mid,102,55.5\n".encode()
    first = await run_import(pool, "pass_marks", data, content_type=CSV, batch_id=f"pm1-{exam.tag}", actor="t",
                             hooks={"pass_marks": hook})
    assert first.applied == 2 and keys == [[exam.exam_id]]
    data2 = f"exam_code,level,subject_code,pass_mark\n{exam.code},mid,101,60\n{exam.code},mid,102,58\n".encode()
    second = await run_import(pool, "pass_marks", data2, content_type=CSV, batch_id=f"pm2-{exam.tag}", actor="t",
                              hooks={"pass_marks": hook})
    assert second.applied == 1
    rows = await pg.fetch("SELECT subject_code, pass_mark::text, batch_id FROM pass_marks WHERE exam_id = $1"
                          " ORDER BY subject_code", exam.exam_id)
    assert [tuple(r) for r in rows] == [("101", "60.0", f"pm1-{exam.tag}"), ("102", "58.0", f"pm2-{exam.tag}")]


async def test_a_dry_run_validates_and_applies_nothing(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    result = await run_import(pool, "scores", score_csv(exam, range(1, 6)), content_type=CSV,
                              batch_id=f"dry-{exam.tag}", actor="t", dry_run=True)
    assert (result.rows, result.applied, result.already_applied) == (5, 0, False)
    assert await scores_of(pg, exam) == {}
    assert await pg.fetchval("SELECT count(*) FROM import_batches WHERE batch_id = $1", f"dry-{exam.tag}") == 0


async def test_unknown_kind_and_content_type(pool: asyncpg.Pool) -> None:
    with pytest.raises(UnknownKind):
        await run_import(pool, "grades", b"a\n", content_type=CSV, batch_id="x1", actor="t")
    with pytest.raises(UnsupportedContentType):
        await run_import(pool, "scores", b"a\n", content_type="application/json", batch_id="x1", actor="t")


async def test_the_report_is_capped_and_counts_the_rest(pool: asyncpg.Pool, exam: ScoredExam) -> None:
    data = (HEADER + "\n" + "\n".join(f"{exam.code},T{i},P{i},101,1" for i in range(1500)) + "\n").encode()
    with pytest.raises(ImportRejected) as caught:
        await run_import(pool, "scores", data, content_type=CSV, batch_id=f"cap-{exam.tag}", actor="t")
    assert (len(caught.value.rows), caught.value.total, caught.value.more) == (1000, 1500, 500)
    assert caught.value.rows[0] == (2, "准考证号 T0 不存在")


async def test_two_corrections_at_once_apply_one_after_the_other(
        pool: asyncpg.Pool, pg: asyncpg.Connection, exam: ScoredExam) -> None:
    await run_import(pool, "scores", score_csv(exam, range(1, 3)), content_type=CSV, batch_id=f"r0-{exam.tag}",
                     actor="t")
    t, p = ticket_no(exam.tag, 1), id_number(exam.tag, 1)
    files = {f"r{n}-{exam.tag}": f"{HEADER}\n{exam.code},{t},{p},101,{n}0\n".encode() for n in (1, 2)}
    await asyncio.gather(*[run_import(pool, "scores", data, content_type=CSV, batch_id=batch, actor="t")
                           for batch, data in files.items()])
    chain = await pg.fetch("SELECT old_score::text, new_score::text FROM score_changes c"
                           " JOIN admission_tickets a USING (registration_id)"
                           " WHERE a.ticket_no = $1 AND c.subject_code = '101' ORDER BY c.id", t)
    # Each correction starts from the score the one before it wrote: the kind's lock kept them apart
    # (the first score, 7.0, was new: its origin is its batch, not a change).
    assert chain[0]["old_score"] == "7.0"
    assert len(chain) == 2 and chain[0]["new_score"] == chain[1]["old_score"]
    assert (await scores_of(pg, exam))[(t, "101")] == chain[1]["new_score"]
