"""Dropping and restoring keys, indexes and foreign keys around a bulk load ("Populating a Database").

Definitions are read from the catalogue and put back verbatim (same names, same DDL), so the
seed needs no copy of the schema and stays correct when migrations change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import asyncpg

BULK_TABLES = ("candidates", "educations", "registrations", "admission_tickets", "scores")


class Saved(NamedTuple):
    """Definitions dropped before a bulk load, to be restored verbatim afterwards."""

    keys: list[tuple[str, str, str]]  # (table, constraint, definition): primary and unique keys
    indexes: list[str]  # CREATE INDEX statements
    foreign_keys: list[tuple[str, str, str, str]]  # (table, constraint, definition, referenced table)


async def drop_constraints(conn: asyncpg.Connection, tables: tuple[str, ...] = BULK_TABLES) -> Saved:
    """Drop keys, indexes and foreign keys on (or pointing at) ``tables``; return how to restore them."""
    rows = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, quote_ident(conname) AS name, contype::text AS contype,
                  pg_get_constraintdef(oid) AS def, confrelid::regclass::text AS ref
           FROM pg_constraint
           WHERE (contype IN ('p', 'u', 'f') AND conrelid = ANY($1::regclass[]))
              OR (contype = 'f' AND confrelid = ANY($1::regclass[]))
           ORDER BY oid""",
        list(tables),
    )
    indexes = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
           FROM pg_index i
           WHERE i.indrelid = ANY($1::regclass[])
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                             WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
           ORDER BY i.indexrelid""",
        list(tables),
    )
    saved = Saved(
        keys=[(r["tbl"], r["name"], r["def"]) for r in rows if r["contype"] != "f"],
        indexes=[r["def"] for r in indexes],
        foreign_keys=[(r["tbl"], r["name"], r["def"], r["ref"]) for r in rows if r["contype"] == "f"],
    )
    for tbl, name, *_ in saved.foreign_keys + saved.keys:
        await conn.execute(f"ALTER TABLE {tbl} DROP CONSTRAINT {name}")
    for r in indexes:
        await conn.execute(f"DROP INDEX {r['name']}")
    return saved


async def restore(conn: asyncpg.Connection, saved: Saved, step: Callable[[float], None] = lambda _: None) -> None:
    """Put back what ``drop_constraints`` removed: keys, then indexes, then foreign keys (validated).

    ``step(fraction)`` is called after each statement.
    """
    statements = [(f"ALTER TABLE {t} ADD CONSTRAINT {name} {definition}", False) for t, name, definition in saved.keys]
    statements += [(sql, False) for sql in saved.indexes]
    # Checking a foreign key into a big table: with both sides indexed by now, a merge join of two
    # ordered index scans beats hashing a million keys (about twice as fast, measured).
    statements += [(f"ALTER TABLE {tbl} ADD CONSTRAINT {name} {definition}", ref in BULK_TABLES)
                   for tbl, name, definition, ref in saved.foreign_keys]  # fmt: skip
    hashjoin = await conn.fetchval("SELECT current_setting('enable_hashjoin')")
    for sql, merge in statements:
        await conn.execute("SELECT set_config('enable_hashjoin', $1, true)", "off" if merge else hashjoin)
        await conn.execute(sql)
        step(1 / len(statements))
    await conn.execute("SELECT set_config('enable_hashjoin', $1, true)", hashjoin)
