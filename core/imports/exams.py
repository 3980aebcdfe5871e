"""Kind ``exams``: whole exams (windows, fee, family, levels, specialties, subjects, review rules), NDJSON only.

One JSON object a line describes one exam completely (docs/api.md has the fields); the exam with
that ``code`` is created or made to match it (upsert by code). An exam is a tree — a subject shared
by several specialties, review rules per province — so the kind takes no CSV: flat rows would
repeat the windows on every line and let two lines disagree (a CSV upload is answered 415).

Checks, every failing line reported with Chinese reasons, nothing applied on any:

1. the shape (exam_shape.ExamLine) and the exam on its own (exam_shape.exam_problems);
2. no exam code twice in the file;
3. an exam already stored must keep its registrations, certificates and scores valid: while its
   registration is open nothing may be removed from its structure (a gateway may accept a registration
   from the catalogue it read before the import, up to ``EXAMGATE_CATALOGUE_REFRESH_S`` ago); no level,
   specialty or subject a registration names may go, nor a subject from a specialty whose
   registrations take it; no level with certificates, no subject with scores, no subject a level's
   eligibility rules name; the family stays once there are registrations (archive numbers and the
   integrity archive are per family); the fee stays once an order exists (candidates of one exam
   pay one fee). Windows, names, subject times and marks, and review rules may change.

The stored exams named are locked (``FOR UPDATE``) before step 3 reads what depends on them: a
registration being written then (its foreign key shares the exam's row) is waited for and counted,
and one begun later waits for the import's COMMIT, so none slips between the checks and the apply.

Applying makes the stored exam equal to the line: the exam row, then levels, subjects,
specialties, which subjects each specialty takes, and the per-province review rules — rows not in
the line are deleted (step 3 made sure nothing depends on them), the others inserted or updated
only where they differ. Sites and review points are the ``sites`` kind's. Changed keys: the ids of
the exams created or changed. The gateways read the catalogue again every
``EXAMGATE_CATALOGUE_REFRESH_S`` (5 s by default), so a new or changed exam shows there within that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from core.db import Conn
from core.imports.base import ROWS_TABLE, Column, Kind
from core.imports.exam_shape import EXAM_CODE, ExamLine, exam_problems, shape_reasons
from core.imports.parse import NDJSON

__all__ = ["KIND", "apply", "check_exams"]

JSON_MAX_CHARS = 1_000_000

COLUMNS = (
    Column("code", "考试代码", max_len=32, pattern=EXAM_CODE,
           pattern_hint="字母或数字开头，至多 32 个字母、数字、点、下划线、连字符"),
    Column("name", "考试名称", max_len=100),
    Column("family", "考试类别", max_len=64, required=False),
    Column("windows", "时间安排", type="json", max_len=JSON_MAX_CHARS),
    Column("fee_per_subject_fen", "每科报名费（分）", type="int", minimum=1),
    Column("levels", "级别", type="json", max_len=JSON_MAX_CHARS),
    Column("subjects", "科目", type="json", max_len=JSON_MAX_CHARS),
    Column("review_rules", "各省审核规则", type="json", max_len=JSON_MAX_CHARS, required=False),
)


async def _lines(conn: Conn) -> list[tuple[int, ExamLine | None, list[str]]]:
    """Every staged line parsed: (line, the exam or None, its reasons)."""
    rows = await conn.fetch(
        f"""SELECT line, code, name, family, windows::text, fee_per_subject_fen, levels::text, subjects::text,
                   review_rules::text FROM {ROWS_TABLE} ORDER BY line""")
    parsed: list[tuple[int, ExamLine | None, list[str]]] = []
    for row in rows:
        document: dict[str, Any] = {
            "code": row["code"], "name": row["name"], "family": row["family"],
            "fee_per_subject_fen": row["fee_per_subject_fen"],
            "windows": orjson.loads(row["windows"]), "levels": orjson.loads(row["levels"]),
            "subjects": orjson.loads(row["subjects"]),
            "review_rules": [] if row["review_rules"] is None else orjson.loads(row["review_rules"]),
        }
        try:
            exam = ExamLine.model_validate(document)
        except ValidationError as exc:
            parsed.append((row["line"], None, shape_reasons(exc)))
            continue
        parsed.append((row["line"], exam, exam_problems(exam)))
    return parsed


@dataclass
class _Stored:
    """What depends on a stored exam's structure."""

    exam_id: int
    family: str  # the exam's family, its code when it has none
    fee_per_subject_fen: int
    registrations: int
    orders: int
    # (level, specialty, subjects) → how many registrations
    choices: dict[tuple[str, str, tuple[str, ...]], int]
    certified_levels: set[str]
    scored_subjects: set[str]
    rule_subjects: dict[str, set[str]]  # level → subjects its eligibility rules name
    registration_open: bool  # now within the stored registration window
    links: set[tuple[str, str, str]]  # the stored (level, specialty, subject) of every specialty


async def _stored(conn: Conn, code: str) -> _Stored | None:
    exam = await conn.fetchrow(
        """SELECT id, COALESCE(family, code) AS family, fee_per_subject_fen,
                  now() BETWEEN registration_opens_at AND registration_closes_at AS registration_open
             FROM exams WHERE code = $1""", code)
    if exam is None:
        return None
    exam_id = exam["id"]
    choices = await conn.fetch(
        """SELECT level_code, specialty_code, subjects, count(*) AS n FROM registrations WHERE exam_id = $1
           GROUP BY level_code, specialty_code, subjects""", exam_id)
    orders = await conn.fetchval(
        """SELECT count(*) FROM orders o JOIN registrations r ON r.id = o.registration_id
            WHERE r.exam_id = $1""", exam_id)
    certified = await conn.fetch("SELECT DISTINCT level_code FROM certificates WHERE exam_id = $1", exam_id)
    scored = await conn.fetch("SELECT DISTINCT subject_code FROM scores WHERE exam_id = $1", exam_id)
    rules = await conn.fetch(
        """SELECT level_code, s.code FROM eligibility_rules,
                  LATERAL (SELECT jsonb_array_elements_text(COALESCE(rules -> 'required_subjects', '[]'))
                           UNION
                           SELECT jsonb_array_elements_text(COALESCE(x -> 'subjects', '[]'))
                             FROM jsonb_array_elements(COALESCE(rules -> 'exemptions', '[]')) AS x) AS s (code)
            WHERE exam_id = $1""", exam_id)
    links = await conn.fetch(
        "SELECT level_code, specialty_code, subject_code FROM exam_specialty_subjects WHERE exam_id = $1", exam_id)
    rule_subjects: dict[str, set[str]] = defaultdict(set)
    for row in rules:
        rule_subjects[row["level_code"]].add(row["code"])
    return _Stored(
        exam_id=exam_id, family=exam["family"], fee_per_subject_fen=exam["fee_per_subject_fen"],
        registrations=sum(r["n"] for r in choices), orders=orders,
        choices={(r["level_code"], r["specialty_code"], tuple(r["subjects"])): r["n"] for r in choices},
        certified_levels={r["level_code"] for r in certified},
        scored_subjects={r["subject_code"] for r in scored},
        rule_subjects=dict(rule_subjects), registration_open=exam["registration_open"],
        links={(r["level_code"], r["specialty_code"], r["subject_code"]) for r in links},
    )


def _taken(exam: ExamLine) -> dict[tuple[str, str], set[str]]:
    """(level, specialty) → the subjects it takes, as the line says."""
    return {(level.code, spec.code): set(spec.subjects) for level in exam.levels for spec in level.specialties}


def stored_problems(exam: ExamLine, stored: _Stored) -> list[str]:
    """What the line would break in the stored exam (step 3 of the module docstring), in Chinese."""
    problems: list[str] = []
    levels = {level.code for level in exam.levels}
    taken = _taken(exam)
    subjects = {s.code for s in exam.subjects}
    lost: dict[str, int] = defaultdict(int)  # problem → registrations
    for (level, specialty, chosen), n in stored.choices.items():
        if level not in levels:
            lost[f"级别 {level} 已有报名，不能删除"] += n
        elif (level, specialty) not in taken:
            lost[f"级别 {level} 的专业 {specialty} 已有报名，不能删除"] += n
        else:
            for code in chosen:
                if code not in subjects:
                    lost[f"科目 {code} 已有报名，不能删除"] += n
                elif code not in taken[(level, specialty)]:
                    lost[f"级别 {level} 专业 {specialty} 的报名报考了科目 {code}，不能从该专业去掉"] += n
    problems += [f"{problem}（{n} 个报名）" for problem, n in sorted(lost.items())]
    problems += [f"级别 {code} 已有证书，不能删除" for code in sorted(stored.certified_levels - levels)]
    problems += [f"科目 {code} 已有成绩，不能删除" for code in sorted(stored.scored_subjects - subjects)]
    for level, named in sorted(stored.rule_subjects.items()):
        if level not in levels:
            continue  # the level goes with its rules
        offered = set().union(*(codes for (lvl, _), codes in taken.items() if lvl == level))
        problems += [f"级别 {level} 的报考条件用到科目 {code}，不能从该级别去掉" for code in sorted(named - offered)]
    if stored.registration_open:
        kept = {(level, spec, code) for (level, spec), codes in taken.items() for code in codes}
        if dropped := sorted(stored.links - kept):
            shown = "、".join("/".join(link) for link in dropped[:5]) + ("等" if len(dropped) > 5 else "")
            problems.append(f"报名期间不能删除级别、专业、科目或专业的科目（{shown}）：各网关仍可能按现有目录接受报名")
    if stored.registrations and (exam.family or exam.code) != stored.family:
        problems.append(f"考试已有 {stored.registrations} 个报名，不能改变考试类别（现为 {stored.family}）")
    if stored.orders and exam.fee_per_subject_fen != stored.fee_per_subject_fen:
        problems.append(f"考试已有缴费订单，不能修改每科报名费（现为 {stored.fee_per_subject_fen} 分）")
    return problems


async def check_exams(conn: Conn) -> list[tuple[int, str]]:
    """Every reason of every line (steps 1–3 of the module docstring)."""
    bad: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    lines = await _lines(conn)
    # The stored exams stay locked until COMMIT: a registration (its foreign key shares the exam's row)
    # waits, so none can appear between these checks and the apply naming what the apply deletes.
    await conn.execute("SELECT 1 FROM exams WHERE code = ANY($1::text[]) ORDER BY id FOR UPDATE",
                       [exam.code for _, exam, _ in lines if exam is not None])
    for line, exam, reasons in lines:
        bad += [(line, reason) for reason in reasons]
        if exam is None:
            continue
        if exam.code in first:
            bad.append((line, f"考试代码 {exam.code} 与第 {first[exam.code]} 行重复"))
            continue
        first[exam.code] = line
        if not reasons and (stored := await _stored(conn, exam.code)) is not None:
            bad += [(line, reason) for reason in stored_problems(exam, stored)]
    return bad


def _count(status: str) -> int:
    """Rows a command touched, from its status ("INSERT 0 2", "UPDATE 1", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])


async def _upsert_exam(conn: Conn, exam: ExamLine) -> tuple[int, bool]:
    """The exam row made equal to the line: its id and whether it changed."""
    w = exam.windows
    values = (exam.code, exam.name, exam.family, w.registration_opens_at, w.registration_closes_at,
              w.ticket_print_opens_at, w.ticket_print_closes_at, w.exam_starts_at, w.score_release_at,
              exam.fee_per_subject_fen, w.score_review_opens_at, w.score_review_closes_at)
    row = await conn.fetchrow(
        """INSERT INTO exams AS e (code, name, family, registration_opens_at, registration_closes_at,
                                   ticket_print_opens_at, ticket_print_closes_at, exam_starts_at, score_release_at,
                                   fee_per_subject_fen, score_review_opens_at, score_review_closes_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (code) DO UPDATE
              SET name = EXCLUDED.name, family = EXCLUDED.family,
                  registration_opens_at = EXCLUDED.registration_opens_at,
                  registration_closes_at = EXCLUDED.registration_closes_at,
                  ticket_print_opens_at = EXCLUDED.ticket_print_opens_at,
                  ticket_print_closes_at = EXCLUDED.ticket_print_closes_at,
                  exam_starts_at = EXCLUDED.exam_starts_at, score_release_at = EXCLUDED.score_release_at,
                  fee_per_subject_fen = EXCLUDED.fee_per_subject_fen,
                  score_review_opens_at = EXCLUDED.score_review_opens_at,
                  score_review_closes_at = EXCLUDED.score_review_closes_at
            WHERE (e.name, e.family, e.registration_opens_at, e.registration_closes_at, e.ticket_print_opens_at,
                   e.ticket_print_closes_at, e.exam_starts_at, e.score_release_at, e.fee_per_subject_fen,
                   e.score_review_opens_at, e.score_review_closes_at)
                  IS DISTINCT FROM
                  (EXCLUDED.name, EXCLUDED.family, EXCLUDED.registration_opens_at, EXCLUDED.registration_closes_at,
                   EXCLUDED.ticket_print_opens_at, EXCLUDED.ticket_print_closes_at, EXCLUDED.exam_starts_at,
                   EXCLUDED.score_release_at, EXCLUDED.fee_per_subject_fen, EXCLUDED.score_review_opens_at,
                   EXCLUDED.score_review_closes_at)
           RETURNING e.id""", *values)
    if row is not None:
        return row["id"], True
    return await conn.fetchval("SELECT id FROM exams WHERE code = $1", exam.code), False


async def _replace_structure(conn: Conn, exam_id: int, exam: ExamLine) -> int:
    """Levels, subjects, specialties, their subjects and review rules made equal to the line; rows touched."""
    levels = [(lvl.code, lvl.name, pos) for pos, lvl in enumerate(exam.levels)]
    specs = [(lvl.code, spec.code, spec.name, pos) for lvl in exam.levels for pos, spec in enumerate(lvl.specialties)]
    links = [(lvl.code, spec.code, code) for lvl in exam.levels for spec in lvl.specialties for code in spec.subjects]
    subjects = [(s.code, s.name, s.starts_at, s.ends_at, s.full_mark, s.pass_mark, pos)
                for pos, s in enumerate(exam.subjects)]
    rules = [(r.province, r.review_mode, r.manual_mode, r.commitment, r.withdraw_rule) for r in exam.review_rules]

    def column(rows: Sequence[tuple[Any, ...]], i: int) -> list[Any]:
        return [row[i] for row in rows]

    touched = 0
    # Deletions first, children before parents (cascades would do it, but the counts say what changed).
    statements: list[tuple[str, tuple[Any, ...]]] = [
        ("""DELETE FROM exam_specialty_subjects WHERE exam_id = $1 AND (level_code, specialty_code, subject_code)
              NOT IN (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))""",
         (column(links, 0), column(links, 1), column(links, 2))),
        ("""DELETE FROM exam_specialties WHERE exam_id = $1 AND (level_code, code)
              NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))""", (column(specs, 0), column(specs, 1))),
        ("DELETE FROM exam_subjects WHERE exam_id = $1 AND code <> ALL($2::text[])", (column(subjects, 0),)),
        ("DELETE FROM exam_levels WHERE exam_id = $1 AND code <> ALL($2::text[])", (column(levels, 0),)),
        ("DELETE FROM exam_review_rules WHERE exam_id = $1 AND province <> ALL($2::text[])", (column(rules, 0),)),
        ("""INSERT INTO exam_levels AS l (exam_id, code, name, position)
            SELECT $1, * FROM unnest($2::text[], $3::text[], $4::integer[])
            ON CONFLICT (exam_id, code) DO UPDATE SET name = EXCLUDED.name, position = EXCLUDED.position
             WHERE (l.name, l.position) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.position)""",
         tuple(column(levels, i) for i in range(3))),
        ("""INSERT INTO exam_subjects AS s (exam_id, code, name, starts_at, ends_at, full_mark, pass_mark, position)
            SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                                     $6::numeric[], $7::numeric[], $8::integer[])
            ON CONFLICT (exam_id, code) DO UPDATE
               SET name = EXCLUDED.name, starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
                   full_mark = EXCLUDED.full_mark, pass_mark = EXCLUDED.pass_mark, position = EXCLUDED.position
             WHERE (s.name, s.starts_at, s.ends_at, s.full_mark, s.pass_mark, s.position) IS DISTINCT FROM
                   (EXCLUDED.name, EXCLUDED.starts_at, EXCLUDED.ends_at, EXCLUDED.full_mark, EXCLUDED.pass_mark,
                    EXCLUDED.position)""",
         tuple(column(subjects, i) for i in range(7))),
        ("""INSERT INTO exam_specialties AS s (exam_id, level_code, code, name, position)
            SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::integer[])
            ON CONFLICT (exam_id, level_code, code) DO UPDATE SET name = EXCLUDED.name, position = EXCLUDED.position
             WHERE (s.name, s.position) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.position)""",
         tuple(column(specs, i) for i in range(4))),
        ("""INSERT INTO exam_specialty_subjects (exam_id, level_code, specialty_code, subject_code)
            SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING""",
         tuple(column(links, i) for i in range(3))),
        ("""INSERT INTO exam_review_rules AS r (exam_id, province, review_mode, manual_mode, commitment, withdraw_rule)
            SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[])
            ON CONFLICT (exam_id, province) DO UPDATE
               SET review_mode = EXCLUDED.review_mode, manual_mode = EXCLUDED.manual_mode,
                   commitment = EXCLUDED.commitment, withdraw_rule = EXCLUDED.withdraw_rule
             WHERE (r.review_mode, r.manual_mode, r.commitment, r.withdraw_rule) IS DISTINCT FROM
                   (EXCLUDED.review_mode, EXCLUDED.manual_mode, EXCLUDED.commitment, EXCLUDED.withdraw_rule)""",
         tuple(column(rules, i) for i in range(5))),
    ]
    for sql, args in statements:
        touched += _count(await conn.execute(sql, exam_id, *args))
    return touched


async def apply(conn: Conn, batch_id: str, actor: str) -> Sequence[int]:
    """Make each stored exam equal to its line; the ids of the exams created or changed."""
    changed = []
    for _, exam, _ in await _lines(conn):
        assert exam is not None  # the checks passed
        exam_id, row_changed = await _upsert_exam(conn, exam)
        if await _replace_structure(conn, exam_id, exam) or row_changed:
            changed.append(exam_id)
    return changed


KIND = Kind(
    name="exams",
    columns=COLUMNS,
    checks=(check_exams,),
    apply=apply,
    media_types=(NDJSON,),
    description="考试：每行一个完整的考试（时间安排、级别、专业、科目、各省审核规则），只接受 NDJSON",
)
