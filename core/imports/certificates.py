"""Kind ``certificates``: 资格证书 from CSV ``cert_no,name,id_number,exam_code,level,approved_on,management_no``.

Certificate numbers are national: a number is one holder's for good. A row naming a number already
stored for another holder (another name or id number) is an error; the same values again change
nothing; the same holder with another exam, level, approval date or management number is a
correction and updates the certificate. Checks, every failing row reported:

1. the holder's name and id number (core/imports/people.py, stored normalised);
2. the exam exists and has the level; the approval date is not in the future (Asia/Shanghai) and not
   before the exam started;
3. no number twice in the file; no number of another holder.

Changed keys: the certificate numbers inserted or updated.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.db import Conn
from core.imports.base import ROWS_TABLE, Column, Kind
from core.imports.people import normalise_people

__all__ = ["KIND", "apply"]

_TODAY = "(now() AT TIME ZONE 'Asia/Shanghai')::date"

COLUMNS = (
    Column("cert_no", "证书编号", max_len=32, pattern="^[0-9A-Za-z]{6,32}$", pattern_hint="6 至 32 位字母或数字"),
    Column("name", "姓名", max_len=64),
    Column("id_number", "证件号码", max_len=32),
    Column("exam_code", "考试代码", max_len=32),
    Column("level", "级别代码", max_len=16),
    Column("approved_on", "批准日期", type="date"),
    Column("management_no", "管理号", max_len=64),
)

# Each row's exam and level, joined once for the checks and the apply.
PREPARE = (
    f"""CREATE TEMP TABLE import_certificates ON COMMIT DROP AS
        SELECT r.line, r.cert_no, r.exam_code, r.level, r.approved_on, e.id AS exam_id,
               (e.exam_starts_at AT TIME ZONE 'Asia/Shanghai')::date AS exam_day,
               (l.code IS NOT NULL) AS level_found
          FROM {ROWS_TABLE} r
          LEFT JOIN exams e ON e.code = r.exam_code
          LEFT JOIN exam_levels l ON l.exam_id = e.id AND l.code = r.level""",
)

CHECKS = (
    normalise_people,
    """SELECT line, '考试代码 ' || quote_literal(exam_code) || ' 不存在' FROM import_certificates
        WHERE exam_id IS NULL""",
    """SELECT line, '考试 ' || exam_code || ' 没有级别 ' || quote_literal(level) FROM import_certificates
        WHERE exam_id IS NOT NULL AND NOT level_found""",
    f"""SELECT line, '批准日期 ' || approved_on || ' 晚于今天' FROM import_certificates
         WHERE approved_on > {_TODAY}""",
    """SELECT line, '批准日期 ' || approved_on || ' 早于考试 ' || exam_code || ' 的考试日期 ' || exam_day
         FROM import_certificates WHERE approved_on < exam_day""",
    f"""SELECT line, '证书编号 ' || cert_no || ' 与第 ' || first_line || ' 行重复' FROM (
            SELECT line, cert_no, min(line) OVER (PARTITION BY cert_no) AS first_line FROM {ROWS_TABLE}) d
         WHERE line <> first_line""",
    f"""SELECT r.line, '证书编号 ' || r.cert_no || ' 已登记给其他持证人（' || c.name || '），不能改为 ' || r.name
          FROM {ROWS_TABLE} r JOIN certificates c ON c.cert_no = r.cert_no
         WHERE (c.name, c.id_number) IS DISTINCT FROM (r.name, r.id_number)""",
)


async def apply(conn: Conn, batch_id: str, actor: str) -> Sequence[str]:
    """Insert new certificates and correct the changed ones; the numbers written."""
    rows = await conn.fetch(
        f"""INSERT INTO certificates AS c (cert_no, name, id_number, exam_id, level_code, approved_on,
                                          management_no, batch_id)
            SELECT r.cert_no, r.name, r.id_number, p.exam_id, r.level, r.approved_on, r.management_no, $1
              FROM {ROWS_TABLE} r JOIN import_certificates p USING (line)
            ON CONFLICT (cert_no) DO UPDATE
               SET exam_id = EXCLUDED.exam_id, level_code = EXCLUDED.level_code,
                   approved_on = EXCLUDED.approved_on, management_no = EXCLUDED.management_no,
                   batch_id = EXCLUDED.batch_id
             WHERE (c.exam_id, c.level_code, c.approved_on, c.management_no)
                   IS DISTINCT FROM (EXCLUDED.exam_id, EXCLUDED.level_code, EXCLUDED.approved_on,
                                     EXCLUDED.management_no)
            RETURNING c.cert_no""",
        batch_id)
    return [row["cert_no"] for row in rows]


KIND = Kind(
    name="certificates",
    columns=COLUMNS,
    prepare=PREPARE,
    checks=CHECKS,
    apply=apply,
    description="资格证书：证书编号全国唯一，同一编号只属于一位持证人",
)
