"""An exam's versioned texts (the notice, the commitment, the instructions) and the integrity archive's records.

A document is never changed once published: a new text is a new version, and a signature names
the version and the SHA-256 of the exact text the candidate read (``core.lifecycle.sign_commitment``).
The archive's records are imported and removed by operators; a removed record stays, marked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from core.db import Conn
from core.errors import CoreError, storage_errors

__all__ = ["KINDS", "ArchiveEntry", "Document", "add_records", "latest", "publish", "records", "remove_record",
           "text_hash"]

PG = asyncpg.Pool | Conn
KINDS = ("notice", "commitment", "instructions")


class VersionMismatch(CoreError):
    """The version the candidate signs is not the one in force (HTTP 409 ``document_version_changed``)."""

    code = "document_version_changed"

    def __init__(self, kind: str, offered: int, current: int) -> None:
        super().__init__(f"{kind} version {offered} is not the current one ({current})")
        self.kind, self.offered, self.current = kind, offered, current


@dataclass(frozen=True, slots=True)
class Document:
    """One version of one of an exam's texts."""

    exam_id: int
    kind: str
    version: int
    title: str
    text: str
    sha256: str


def text_hash(title: str, text: str) -> str:
    """The SHA-256 a signature names: of the title and the text, as the candidate read them."""
    return hashlib.sha256(f"{title}\n\n{text}".encode()).hexdigest()


async def latest(pg: PG, exam_id: int, kind: str) -> Document | None:
    """The version in force of an exam's document, or None when none is published."""
    async with storage_errors():
        row = await pg.fetchrow("""SELECT version, title, body, sha256 FROM exam_documents
                                   WHERE exam_id = $1 AND kind = $2 ORDER BY version DESC LIMIT 1""", exam_id, kind)
    return None if row is None else Document(exam_id, kind, row["version"], row["title"], row["body"], row["sha256"])


async def publish(pg: PG, exam_id: int, kind: str, title: str, text: str, *, actor: str) -> Document:
    """Publish a new version of an exam's document (the previous one stays, for the signatures naming it)."""
    digest = text_hash(title, text)
    async with storage_errors():
        version = await pg.fetchval(
            """INSERT INTO exam_documents (exam_id, kind, version, title, body, sha256, published_by)
               SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4, $5, $6
                 FROM exam_documents WHERE exam_id = $1 AND kind = $2
               RETURNING version""", exam_id, kind, title, text, digest, actor)
    return Document(exam_id, kind, version, title, text, digest)


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One integrity-archive record to import."""

    id_number: str
    exam_family: str
    violation: str
    starts_on: date
    ends_on: date


async def add_records(pg: PG, entries: Sequence[ArchiveEntry], *, actor: str) -> int:
    """Import in one transaction, keeping an entry already there (same person, family, start); how many are new."""
    async with storage_errors():
        rows = await pg.fetch(
            """INSERT INTO integrity_records (id_number, exam_family, violation, starts_on, ends_on, created_by)
               SELECT * , $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::date[])
               ON CONFLICT (id_number, exam_family, starts_on) DO NOTHING RETURNING id""",
            [e.id_number for e in entries], [e.exam_family for e in entries], [e.violation for e in entries],
            [e.starts_on for e in entries], [e.ends_on for e in entries], actor)
    return len(rows)


async def records(pg: PG, *, id_number: str | None = None, limit: int = 100, after: int = 0) -> list[dict[str, Any]]:
    """Records in force or not (removed ones marked), by id; one person's when ``id_number`` is given."""
    async with storage_errors():
        rows = await pg.fetch(
            """SELECT id, id_number, exam_family, violation, starts_on, ends_on, created_by, created_at,
                      removed_by, removed_at
                 FROM integrity_records
                WHERE id > $1 AND ($2::text IS NULL OR id_number = $2) ORDER BY id LIMIT $3""",
            after, id_number, limit)
    return [{**dict(r), "starts_on": r["starts_on"].isoformat(), "ends_on": r["ends_on"].isoformat()} for r in rows]


async def remove_record(pg: PG, record_id: int, *, actor: str) -> bool:
    """Mark a record removed; False when there is no such record in force."""
    async with storage_errors():
        found = await pg.fetchval("""UPDATE integrity_records SET removed_by = $2, removed_at = now()
                                     WHERE id = $1 AND removed_at IS NULL RETURNING 1""", record_id, actor)
    return found is not None
