"""Kind ``pass_marks``: the pass mark (合格标准) of one level's subject in one exam a row.

Columns ``exam_code,level,subject_code,pass_mark``. The level and the subject must exist in
that exam, the mark be between 0 and the subject's full mark, and an (exam, level, subject)
appear once. A pass mark that differs from the published one is written with its batch; the
changed keys are exam ids.
"""

from __future__ import annotations

from core.db import Conn
from core.imports.base import Applied, Column, Kind

__all__ = ["KIND"]

COLUMNS = (
    Column("exam_code", "考试代码", max_len=32),
    Column("level", "级别代码", max_len=32),
    Column("subject_code", "科目代码", max_len=32),
    Column("pass_mark", "合格标准", type="score", minimum=0),
)

RESOLVE = """
CREATE TEMP TABLE import_pass_marks ON COMMIT DROP AS
SELECT r.line, r.exam_code, r.level, r.subject_code, r.pass_mark,
       e.id AS exam_id, (l.code IS NOT NULL) AS level_found, s.full_mark
FROM import_rows r
LEFT JOIN exams e ON e.code = r.exam_code
LEFT JOIN exam_levels l ON l.exam_id = e.id AND l.code = r.level
LEFT JOIN exam_subjects s ON s.exam_id = e.id AND s.code = r.subject_code
"""

ROW_CHECK = """
SELECT line, reason FROM (
  SELECT line, CASE
    WHEN exam_id IS NULL THEN format('考试代码 %s 不存在', exam_code)
    WHEN NOT level_found THEN format('级别代码 %s 不属于考试 %s', level, exam_code)
    WHEN full_mark IS NULL THEN format('科目代码 %s 不属于考试 %s', subject_code, exam_code)
    WHEN pass_mark > full_mark THEN format('合格标准 %s 超过科目 %s 的满分 %s', pass_mark, subject_code, full_mark)
  END AS reason
  FROM import_pass_marks
) t WHERE reason IS NOT NULL
"""

DUPLICATES = """
SELECT line, format('考试 %s 级别 %s 科目 %s 的合格标准重复（第 %s 行已有）', exam_code, level, subject_code, first)
FROM (SELECT line, exam_code, level, subject_code,
             min(line) OVER (PARTITION BY exam_code, level, subject_code) AS first
      FROM import_rows) d
WHERE line <> first
"""


async def apply(conn: Conn, batch_id: str, actor: str) -> Applied:
    """Write the pass marks that differ from the published ones."""
    rows = await conn.fetch("""
        INSERT INTO pass_marks AS p (exam_id, level_code, subject_code, pass_mark, batch_id, published_at)
        SELECT exam_id, level, subject_code, pass_mark, $1, now() FROM import_pass_marks
        ON CONFLICT (exam_id, level_code, subject_code) DO UPDATE
            SET pass_mark = EXCLUDED.pass_mark, batch_id = EXCLUDED.batch_id, published_at = EXCLUDED.published_at
            WHERE p.pass_mark IS DISTINCT FROM EXCLUDED.pass_mark
        RETURNING exam_id
    """, batch_id)
    return Applied(len(rows), sorted({r[0] for r in rows}))


KIND = Kind(
    name="pass_marks",
    columns=COLUMNS,
    prepare=(RESOLVE,),
    checks=(ROW_CHECK, DUPLICATES),
    apply=apply,
    description="合格标准：每行一个考试级别的一个科目",
)
