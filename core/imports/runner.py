"""Running an import: parse, stage with COPY, validate in SQL, apply in one transaction.

1. Hash the file; parse it (parse.py), keeping the rows refused while reading.
2. In one transaction: take the batch id's and the kind's advisory locks; a batch id recorded
   before answers ``already_applied`` (same kind, same sha256) or raises ``BatchConflict``.
3. COPY every record as text plus its line number into ``import_raw``; check the columns in one
   query; cast the rows that passed into ``import_rows``; run the kind's ``prepare`` and
   ``checks``. Any bad row: roll back and raise ``ImportRejected`` with every one of them.
4. ``kind.apply`` writes what changed; the batch row goes into ``import_batches``; the kind's
   hook gets the changed keys; COMMIT. A dry run rolls back instead, after the checks.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from core.db import Conn
from core.errors import storage_errors
from core.imports.base import (
    RAW_TABLE,
    ROWS_TABLE,
    Applied,
    BatchConflict,
    ChangedHook,
    Column,
    ImportRejected,
    ImportResult,
    Kind,
    UnknownKind,
)
from core.imports.parse import FormatNotAccepted, media_type, parse

__all__ = ["BATCH_ID_PATTERN", "InvalidBatchId", "Progress", "run_import"]

BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # as import_batches checks it

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stages parse, stage, validate, apply."""


class InvalidBatchId(ValueError):
    """The batch id does not match BATCH_ID_PATTERN."""


class _DryRun(Exception):
    def __init__(self, result: ImportResult) -> None:
        self.result = result


def _kinds() -> Mapping[str, Kind]:
    from core.imports.kinds import KINDS  # the registry imports the kinds, which import this package

    return KINDS


async def run_import(pool: asyncpg.Pool, kind: str, data: bytes, *, content_type: str, batch_id: str,
                     actor: str, hooks: Mapping[str, ChangedHook] | None = None, dry_run: bool = False,
                     progress: Progress | None = None) -> ImportResult:
    """Validate ``data`` in full and apply it as batch ``batch_id`` in one transaction (module docstring)."""
    spec = _kinds().get(kind)
    if spec is None:
        raise UnknownKind(kind)
    if not BATCH_ID_PATTERN.match(batch_id):
        raise InvalidBatchId(batch_id)
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    sha256 = hashlib.sha256(data).hexdigest()
    if spec.media_types and media_type(content_type) not in spec.media_types:
        raise FormatNotAccepted(content_type, kind, spec.media_types)
    parsed = parse(data, content_type, spec.columns)
    total = len(parsed.records) + len(parsed.errors)
    report("parse", total, total)
    hook = (hooks or {}).get(kind)
    try:
        async with storage_errors(), pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"examgate:import-batch:{batch_id}")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", spec.lock_name)
            done = await _recorded(conn, batch_id, kind, sha256, started)
            if done is not None:
                return done
            await _stage(conn, spec, parsed.records)
            report("stage", len(parsed.records), total)
            bad = list(parsed.errors)
            bad += await _check_columns(conn, spec.columns)
            await _cast(conn, spec.columns)
            for sql in spec.prepare:
                await conn.execute(sql)
            for check in spec.checks:
                if isinstance(check, str):
                    bad += [(r[0], r[1]) for r in await conn.fetch(check)]
                else:
                    bad += await check(conn)
            report("validate", total, total)
            if bad:
                raise ImportRejected(_by_line(bad))
            if dry_run:
                raise _DryRun(ImportResult(batch_id, kind, total, 0, False, time.perf_counter() - started))
            # The batch row first: the rows written reference it.
            await conn.execute(
                "INSERT INTO import_batches (batch_id, kind, sha256, rows, applied, created_by)"
                " VALUES ($1, $2, $3, $4, 0, $5)",
                batch_id, kind, sha256, total, actor)
            outcome = await spec.apply(conn, batch_id, actor)
            applied = outcome if isinstance(outcome, Applied) else Applied(len(outcome), outcome)
            seconds = time.perf_counter() - started
            await conn.execute("UPDATE import_batches SET applied = $2, seconds = $3 WHERE batch_id = $1",
                               batch_id, applied.rows, round(seconds, 3))
            if hook is not None and applied.keys:
                await hook(conn, applied.keys)
            report("apply", applied.rows, total)
            return ImportResult(batch_id, kind, total, applied.rows, False, seconds)
    except _DryRun as dry:
        return dry.result


async def _recorded(conn: Conn, batch_id: str, kind: str, sha256: str, started: float) -> ImportResult | None:
    row = await conn.fetchrow("SELECT kind, sha256, rows, applied FROM import_batches WHERE batch_id = $1", batch_id)
    if row is None:
        return None
    if row["kind"] != kind or row["sha256"] != sha256:
        raise BatchConflict(batch_id, row["kind"], row["sha256"])
    return ImportResult(batch_id, kind, row["rows"], row["applied"], True, time.perf_counter() - started)


def _by_line(bad: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """One entry a line, in line order, its reasons joined."""
    merged: dict[int, list[str]] = {}
    for line, reason in bad:
        merged.setdefault(line, []).append(reason)
    return [(line, "；".join(merged[line])) for line in sorted(merged)]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _stage(conn: Conn, spec: Kind, records: Sequence[tuple[object, ...]]) -> None:
    cols = ", ".join(f"{_ident(c.name)} text" for c in spec.columns)
    await conn.execute(f"CREATE TEMP TABLE {RAW_TABLE} (line integer NOT NULL, {cols}) ON COMMIT DROP")
    if records:
        await conn.copy_records_to_table(RAW_TABLE, records=records, columns=["line", *spec.column_names])
    await conn.execute(f"ANALYZE {RAW_TABLE}")


_INT = r"^[+-]?[0-9]{1,9}$"
_SCORE = r"^[+-]?[0-9]{1,4}(\.[0-9])?$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_SQL_TYPES = {"text": "text", "int": "integer", "score": "numeric(5,1)", "date": "date", "json": "jsonb"}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _column_reasons(c: Column) -> list[str]:
    """CASE branches (``WHEN … THEN reason``) checking one column of import_raw, in order."""
    v = _ident(c.name)
    label = f"{c.label}（{c.name}）"
    out = []
    if c.required:
        out.append(f"WHEN {v} IS NULL OR {v} = '' THEN {_literal(label + '为空')}")
    out.append(f"WHEN char_length({v}) > {c.max_len} THEN "
               f"{_literal(f'{label}超过 {c.max_len} 个字符')} || '（' || char_length({v}) || ' 个）'")
    if c.type == "int":
        out.append(f"WHEN {v} <> '' AND {v} !~ '{_INT}' THEN {_literal(label + ' ')} || quote_literal({v}) || "
                   f"{_literal(' 不是整数')}")
    elif c.type == "score":
        out.append(f"WHEN {v} <> '' AND {v} !~ '{_SCORE}' THEN {_literal(label + ' ')} || quote_literal({v}) || "
                   f"{_literal(' 不是有效的数值（至多四位整数、一位小数）')}")
    elif c.type == "date":
        # CASE branches run in order, so each cast below only sees digits where the pattern put them.
        bad_date = f"{_literal(label + ' ')} || quote_literal({v}) || {_literal(' 不是有效的日期（YYYY-MM-DD）')}"
        y, m, d = (f"substr({v}, 1, 4)::integer", f"substr({v}, 6, 2)::integer", f"substr({v}, 9, 2)::integer")
        out.append(f"WHEN {v} <> '' AND {v} !~ '{_DATE}' THEN {bad_date}")
        out.append(f"WHEN {v} <> '' AND ({y} < 1 OR {m} NOT BETWEEN 1 AND 12) THEN {bad_date}")
        out.append(f"WHEN {v} <> '' AND ({d} < 1 OR {d} > extract(day FROM make_date({y}, {m}, 1)"
                   f" + interval '1 month' - interval '1 day')) THEN {bad_date}")
    elif c.pattern is not None:
        hint = f"（{c.pattern_hint}）" if c.pattern_hint else ""
        out.append(f"WHEN {v} <> '' AND {v} !~ {_literal(c.pattern)} THEN {_literal(label + ' ')} || "
                   f"quote_literal({v}) || {_literal(' 格式有误' + hint)}")
    if c.minimum is not None and c.type in ("int", "score"):
        cast = _SQL_TYPES[c.type]
        out.append(f"WHEN {v} <> '' AND {v}::{cast} < {c.minimum} THEN {_literal(label + ' ')} || {v} || "
                   f"{_literal(f' 小于 {c.minimum}')}")
    return out


async def _check_columns(conn: Conn, columns: Sequence[Column]) -> list[tuple[int, str]]:
    branches = [b for c in columns for b in _column_reasons(c)]
    sql = (f"SELECT line, reason FROM (SELECT line, CASE {' '.join(branches)} END AS reason FROM {RAW_TABLE}) t"
           " WHERE reason IS NOT NULL")
    rows = await conn.fetch(sql)
    if rows:
        await conn.execute(f"DELETE FROM {RAW_TABLE} r USING unnest($1::integer[]) AS b(line) WHERE r.line = b.line",
                           [r[0] for r in rows])
    return [(r[0], r[1]) for r in rows]


async def _cast(conn: Conn, columns: Sequence[Column]) -> None:
    casts = ", ".join(f"NULLIF({_ident(c.name)}, '')::{_SQL_TYPES[c.type]} AS {_ident(c.name)}" for c in columns)
    await conn.execute(f"CREATE TEMP TABLE {ROWS_TABLE} ON COMMIT DROP AS SELECT line, {casts} FROM {RAW_TABLE}")
    await conn.execute(f"ANALYZE {ROWS_TABLE}")


def applied_keys(outcome: Applied | Sequence[Any]) -> Sequence[Any]:
    """The keys an apply changed, whichever form it answered."""
    return outcome.keys if isinstance(outcome, Applied) else outcome
