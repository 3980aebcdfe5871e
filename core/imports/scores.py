"""Kind ``scores``: one subject's score of one admission ticket a row.

Columns ``exam_code,ticket_no,id_number,subject_code,score``. The ticket and the id number must
name the same registration of that exam, the subject be one the registration takes, the score
be between 0 and the subject's full mark, and a (ticket, subject) appear once. A score that
changes is written with its batch and time; a correction of a stored score also goes into
score_changes (old → new), a new score's origin is its batch. The changed keys are registration ids.
"""

from __future__ import annotations

from core.db import Conn
from core.imports.base import Applied, Column, Kind

__all__ = ["KIND"]

COLUMNS = (
    Column("exam_code", "考试代码", max_len=32),
    Column("ticket_no", "准考证号", max_len=32),
    Column("id_number", "证件号码", max_len=32),
    Column("subject_code", "科目代码", max_len=32),
    Column("score", "成绩", type="score", minimum=0),
)

# The rows joined once to their exam, ticket, registration, holder, subject and stored score, with the
# first line of their (ticket, subject): the checks, the duplicates and the apply all read this table.
RESOLVE = """
CREATE TEMP TABLE import_scores ON COMMIT DROP AS
SELECT r.line, r.exam_code, r.ticket_no, r.id_number, r.subject_code, r.score,
       e.id AS exam_id, t.registration_id, t.exam_id AS ticket_exam_id,
       c.id_number AS holder_id_number, (r.subject_code = ANY (g.subjects)) AS taken, s.full_mark,
       o.score AS old_score, (o.registration_id IS NOT NULL) AS stored,
       min(r.line) OVER (PARTITION BY r.ticket_no, r.subject_code) AS first_line
FROM import_rows r
LEFT JOIN exams e ON e.code = r.exam_code
LEFT JOIN admission_tickets t ON t.ticket_no = r.ticket_no
LEFT JOIN registrations g ON g.id = t.registration_id
LEFT JOIN candidates c ON c.id = g.candidate_id
LEFT JOIN exam_subjects s ON s.exam_id = e.id AND s.code = r.subject_code
LEFT JOIN scores o ON o.registration_id = t.registration_id AND o.subject_code = r.subject_code
"""

ROW_CHECK = """
SELECT line, reason FROM (
  SELECT line, CASE
    WHEN exam_id IS NULL THEN format('考试代码 %s 不存在', exam_code)
    WHEN registration_id IS NULL THEN format('准考证号 %s 不存在', ticket_no)
    WHEN ticket_exam_id <> exam_id THEN format('准考证号 %s 不属于考试 %s', ticket_no, exam_code)
    WHEN upper(holder_id_number) <> upper(id_number)
      THEN format('证件号码 %s 与准考证号 %s 的考生不符', id_number, ticket_no)
    WHEN full_mark IS NULL THEN format('科目代码 %s 不属于考试 %s', subject_code, exam_code)
    WHEN taken IS NOT TRUE THEN format('准考证号 %s 的考生未报考科目 %s', ticket_no, subject_code)
    WHEN score > full_mark THEN format('成绩 %s 超过科目 %s 的满分 %s', score, subject_code, full_mark)
  END AS reason
  FROM import_scores
) t WHERE reason IS NOT NULL
"""

DUPLICATES = """
SELECT line, format('准考证号 %s 科目 %s 的成绩重复（第 %s 行已有）', ticket_no, subject_code, first_line)
FROM import_scores WHERE line <> first_line
"""

# What the apply writes: rows whose score is new or differs from the stored one.
CHANGED = "(NOT stored OR old_score <> score)"


async def apply(conn: Conn, batch_id: str, actor: str) -> Applied:
    """Write the scores that are new or differ from the stored ones, and each change."""
    # New scores by a plain INSERT, changed ones by an UPDATE: no speculative insertion per row (ON
    # CONFLICT). The kind's advisory lock, held since before RESOLVE read the stored scores, keeps other
    # imports out; a score written meanwhile by anything else fails the INSERT, and the batch with it.
    await conn.execute("""
        INSERT INTO scores (registration_id, exam_id, subject_code, score, batch_id, updated_at)
        SELECT registration_id, exam_id, subject_code, score, $1, now() FROM import_scores WHERE NOT stored
    """, batch_id)
    await conn.execute("""
        UPDATE scores AS s SET score = c.score, batch_id = $1, updated_at = now()
        FROM import_scores c
        WHERE c.stored AND c.old_score <> c.score
          AND s.registration_id = c.registration_id AND s.subject_code = c.subject_code
    """, batch_id)
    await conn.execute("""
        INSERT INTO score_changes (registration_id, subject_code, old_score, new_score, batch_id)
        SELECT registration_id, subject_code, old_score, score, $1
          FROM import_scores WHERE stored AND old_score <> score
    """, batch_id)
    rows = await conn.fetch(f"SELECT registration_id FROM import_scores WHERE {CHANGED} ORDER BY registration_id")
    keys = sorted({r[0] for r in rows})
    return Applied(len(rows), keys)


KIND = Kind(
    name="scores",
    columns=COLUMNS,
    # A whole exam's file is a million rows: its joins, the duplicates' sort and the diff hash in memory
    # (for this transaction only) rather than spilling in 4 MB batches to disk.
    prepare=("SET LOCAL work_mem = '256MB'", RESOLVE, "ANALYZE import_scores"),
    checks=(ROW_CHECK, DUPLICATES),
    apply=apply,
    description="成绩：每行一个准考证的一个科目",
)
