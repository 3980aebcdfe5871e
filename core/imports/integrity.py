"""Kind ``integrity_records``: the integrity archive (诚信档案库) from CSV
``id_number,name,exam_family,violation,recorded_on,until``.

A row is one person's record in an exam family from ``recorded_on`` to ``until`` (both days
included; ``starts_on`` and ``ends_on`` in ``integrity_records``). A record is identified by (id
number, family, start): the same values again change nothing; another name, violation or end date
updates it. A record an operator removed stays removed: a row naming it is an error (the removal is
deliberate; a new period is a new record with its own start). Checks, every failing row reported:

1. the person's name and id number (core/imports/people.py, stored normalised);
2. the family is ``*`` (every exam) or one the catalogue knows: an exam's family, an exam code (an
   exam without a family is its own), or a family in ``exam_families``; a record for an unknown
   family would never apply to anyone;
3. ``recorded_on`` not in the future (Asia/Shanghai), ``until`` not before it;
4. no record twice in the file.

Rows are written with ``created_by`` the importing operator and the batch id. Changed keys: the id
numbers whose records were inserted or updated.
"""

from __future__ import annotations

from core.db import Conn
from core.imports.base import ROWS_TABLE, Applied, Column, Kind
from core.imports.people import normalise_people

__all__ = ["KIND", "apply"]

_TODAY = "(now() AT TIME ZONE 'Asia/Shanghai')::date"

COLUMNS = (
    Column("id_number", "证件号码", max_len=32),
    Column("name", "姓名", max_len=64),
    Column("exam_family", "考试类别", max_len=64, pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]*)$",
           pattern_hint="* 或字母、数字、点、下划线和连字符"),
    Column("violation", "违纪违规情形", max_len=200),
    Column("recorded_on", "记录日期", type="date"),
    Column("until", "截止日期", type="date"),
)

CHECKS = (
    normalise_people,
    f"""SELECT r.line, '考试类别 ' || quote_literal(r.exam_family) || ' 不存在（应为 * 或某考试的类别、考试代码）'
          FROM {ROWS_TABLE} r
         WHERE r.exam_family <> '*'
           AND NOT EXISTS (SELECT 1 FROM exams e WHERE COALESCE(e.family, e.code) = r.exam_family)
           AND NOT EXISTS (SELECT 1 FROM exam_families f WHERE f.family = r.exam_family)""",
    f"""SELECT line, '记录日期 ' || recorded_on || ' 晚于今天' FROM {ROWS_TABLE} WHERE recorded_on > {_TODAY}""",
    f"""SELECT line, '截止日期 ' || until || ' 早于记录日期 ' || recorded_on FROM {ROWS_TABLE}
         WHERE until < recorded_on""",
    f"""SELECT line, '同一人、同一考试类别、同一记录日期的记录与第 ' || first_line || ' 行重复' FROM (
            SELECT line, min(line) OVER (PARTITION BY id_number, exam_family, recorded_on) AS first_line
              FROM {ROWS_TABLE}) d
         WHERE line <> first_line""",
    f"""SELECT r.line, '该记录已于 ' || to_char(i.removed_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD')
                   || ' 被 ' || i.removed_by || ' 撤销，不能再导入（新的记录期请用新的记录日期）'
          FROM {ROWS_TABLE} r
          JOIN integrity_records i ON (i.id_number, i.exam_family, i.starts_on) = (r.id_number, r.exam_family,
                                                                                   r.recorded_on)
         WHERE i.removed_at IS NOT NULL""",
)


async def apply(conn: Conn, batch_id: str, actor: str) -> Applied:
    """Insert new records and update changed ones; the rows written and their distinct id numbers."""
    rows = await conn.fetch(
        f"""INSERT INTO integrity_records AS i (id_number, name, exam_family, violation, starts_on, ends_on,
                                                created_by, batch_id)
            SELECT id_number, name, exam_family, violation, recorded_on, until, $2, $1 FROM {ROWS_TABLE}
            ON CONFLICT (id_number, exam_family, starts_on) DO UPDATE
               SET name = EXCLUDED.name, violation = EXCLUDED.violation, ends_on = EXCLUDED.ends_on,
                   batch_id = EXCLUDED.batch_id
             WHERE (i.name, i.violation, i.ends_on) IS DISTINCT FROM
                   (EXCLUDED.name, EXCLUDED.violation, EXCLUDED.ends_on)
            RETURNING i.id_number""",
        batch_id, actor)
    return Applied(len(rows), sorted({row["id_number"] for row in rows}))


KIND = Kind(
    name="integrity_records",
    columns=COLUMNS,
    checks=CHECKS,
    apply=apply,
    description="诚信档案：同一人、同一考试类别、同一记录日期为一条记录",
)
