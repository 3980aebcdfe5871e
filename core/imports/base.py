"""What an import kind is, what an import answers, and the errors it raises.

A kind (``Kind``) declares:

1. ``columns`` — the file's columns, in order, each with its type and limits. The runner parses
   the file (CSV with exactly these header names, or NDJSON with exactly these keys), COPYs every
   row as text plus its line number into the temporary table ``import_raw`` and checks every
   column there in one set-based query (empty, too long, not a number, below the minimum, not a
   date, not matching its pattern). The rows that pass are cast into ``import_rows`` (``line`` and
   the columns with their SQL types).
2. ``prepare`` — optional SQL run after that, e.g. a temporary table joining ``import_rows`` to
   the catalogue once, so the checks and the apply read it instead of joining again.
3. ``checks`` — queries returning ``(line, reason)``: each a SQL string or an async function
   of the connection. Every row is checked; a reason is Chinese and names the values involved.
4. ``apply(conn, batch_id, actor)`` — writes the rows (only those that change something) and
   returns the keys it changed (a list: the batch's ``applied`` is its length), or
   ``Applied(rows, keys)`` when rows and keys differ (a registration's several scores). The keys
   go to the kind's ``ChangedHook`` inside the same transaction.

Everything from the COPY to the batch row happens in one transaction holding the kind's
advisory lock: an import is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.db import Conn
from core.errors import CoreError

__all__ = [
    "RAW_TABLE", "ROWS_TABLE", "REPORT_LIMIT",
    "Applied", "BatchConflict", "ChangedHook", "Check", "Column", "ImportRejected", "ImportResult", "Kind",
    "UnknownKind",
]

# The temporary tables every import fills: the file as text, then the rows whose columns parsed.
RAW_TABLE = "import_raw"
ROWS_TABLE = "import_rows"
# At most this many bad rows are reported; the rest are counted.
REPORT_LIMIT = 1000

ChangedHook = Callable[[Conn, Sequence[Any]], Awaitable[None]]
"""Awaited inside the apply transaction, before COMMIT, with the keys the kind changed."""

Check = str | Callable[[Conn], Awaitable[list[tuple[int, str]]]]
"""A validation: SQL selecting ``(line, reason)`` rows, or a function of the connection returning them."""

ColumnType = Literal["text", "int", "score", "date", "json"]


@dataclass(frozen=True)
class Column:
    """One column of a kind's file.

    ``type``: text; int (a whole number); score (numeric(5,1): up to four digits and one
    decimal); date (YYYY-MM-DD); json (NDJSON: any JSON value, nested ones included, staged as
    its JSON text and cast to jsonb). ``label`` is the Chinese name used in reasons.
    """

    name: str
    label: str
    type: ColumnType = "text"
    max_len: int = 64
    required: bool = True
    minimum: int | None = None  # int and score columns
    pattern: str | None = None  # text columns: a PostgreSQL regular expression the value must match
    pattern_hint: str = ""  # what the pattern means, in Chinese


@dataclass(frozen=True)
class Applied:
    """What ``Kind.apply`` did: how many rows changed something, and the keys changed."""

    rows: int
    keys: Sequence[Any]


@dataclass(frozen=True)
class Kind:
    """An import kind: its columns, checks and apply (see the module docstring)."""

    name: str
    columns: tuple[Column, ...]
    apply: Callable[[Conn, str, str], Awaitable[Applied | Sequence[Any]]]
    checks: tuple[Check, ...] = ()
    prepare: tuple[str, ...] = ()
    description: str = ""
    lock_key: str = field(default="")  # advisory lock name; default "examgate:import:<name>"
    media_types: tuple[str, ...] = ()  # the content types taken (parse.CSV, parse.NDJSON); empty: both

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def lock_name(self) -> str:
        return self.lock_key or f"examgate:import:{self.name}"


@dataclass(frozen=True)
class ImportResult:
    """The outcome of one import."""

    batch_id: str
    kind: str
    rows: int
    applied: int
    already_applied: bool
    seconds: float


class ImportRejected(CoreError):
    """The file has bad rows: nothing was applied. ``rows`` lists them (at most REPORT_LIMIT), ``total`` counts all."""

    def __init__(self, rows: list[tuple[int, str]], total: int | None = None) -> None:
        self.rows = rows[:REPORT_LIMIT]
        self.total = len(rows) if total is None else total
        super().__init__(f"{self.total} bad rows")

    @property
    def more(self) -> int:
        """How many bad rows are not in ``rows``."""
        return self.total - len(self.rows)


class BatchConflict(CoreError):
    """The batch id was applied before with another kind or other content."""

    def __init__(self, batch_id: str, kind: str, sha256: str) -> None:
        super().__init__(f"batch {batch_id} was applied as {kind} with other content")
        self.batch_id = batch_id
        self.kind = kind
        self.sha256 = sha256


class UnknownKind(CoreError):
    """No import kind has this name."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown import kind {kind!r}")
        self.kind = kind
