"""The account's texts: the service agreement (网上报名协议) and the registration notice (注册须知), versioned.

A text is never changed once published: a new text is a new version, the latest is in force. An
account records the agreement version it accepted and when; once a newer version is in force the
account must accept it again (at its next sign-in the pages ask; enrolling refuses until then).
When no agreement is published, nothing is asked (a deployment that has not loaded its texts).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from core.db import Conn, transaction
from core.documents import text_hash
from core.errors import CoreError, storage_errors

__all__ = ["KINDS", "AgreementRequired", "AgreementVersionChanged", "Text", "accept", "acceptance", "latest",
           "publish", "require_current"]

PG = asyncpg.Pool | Conn
KINDS = ("agreement", "notice")


class AgreementVersionChanged(CoreError):
    """The version accepted is not the one in force (HTTP 409 ``agreement_version_changed``)."""

    def __init__(self, offered: int | None, current: int) -> None:
        super().__init__(f"agreement version {offered} is not the one in force ({current})")
        self.offered, self.current = offered, current


class AgreementRequired(CoreError):
    """The account has not accepted the agreement in force (HTTP 409 ``agreement_required``)."""

    def __init__(self, accepted: int | None, current: int) -> None:
        super().__init__(f"agreement version {current} not accepted (accepted: {accepted})")
        self.accepted, self.current = accepted, current


@dataclass(frozen=True, slots=True)
class Text:
    """One version of one of the account's texts."""

    kind: str
    version: int
    title: str
    text: str
    sha256: str


async def latest(pg: PG, kind: str) -> Text | None:
    """The version in force, or None when none is published."""
    async with storage_errors():
        row = await pg.fetchrow("""SELECT version, title, body, sha256 FROM account_documents WHERE kind = $1
                                   ORDER BY version DESC LIMIT 1""", kind)
    return None if row is None else Text(kind, row["version"], row["title"], row["body"], row["sha256"])


async def publish(pg: PG, kind: str, title: str, text: str, *, actor: str) -> Text:
    """Publish a new version (the next number); the same title and text as the one in force is that one."""
    if kind not in KINDS:
        raise ValueError(f"unknown account document {kind!r}")
    digest = text_hash(title, text)
    async with storage_errors(), transaction(pg) as conn:
        await conn.execute("LOCK TABLE account_documents IN SHARE ROW EXCLUSIVE MODE")  # one publisher at a time
        current = await latest(conn, kind)
        if current is not None and current.sha256 == digest:
            return current
        version = 1 if current is None else current.version + 1
        await conn.execute("""INSERT INTO account_documents (kind, version, title, body, sha256, published_by)
                              VALUES ($1, $2, $3, $4, $5, $6)""", kind, version, title, text, digest, actor)
    return Text(kind, version, title, text, digest)


def require_current(current: Text | None, offered: int | None) -> int | None:
    """The version a new account records: the one in force, which ``offered`` must name (None: none published)."""
    if current is None:
        return None
    if offered != current.version:
        raise AgreementVersionChanged(offered, current.version)
    return current.version


async def acceptance(pg: PG, candidate_id: int) -> tuple[int | None, int | None]:
    """(the version the account accepted, the version in force) — either None when there is none."""
    async with storage_errors():
        row = await pg.fetchrow(
            """SELECT c.agreement_version,
                      (SELECT max(version) FROM account_documents WHERE kind = 'agreement') AS current
                 FROM candidates c WHERE c.id = $1""", candidate_id)
    return (None, None) if row is None else (row["agreement_version"], row["current"])


async def accept(pg: PG, candidate_id: int, version: int, *, address: str | None = None) -> None:
    """Record that the account accepted ``version``, which must be the one in force; audited."""
    async with storage_errors():
        current = await latest(pg, "agreement")
        if current is None or version != current.version:
            raise AgreementVersionChanged(version, 0 if current is None else current.version)
        await pg.execute(
            """WITH u AS (UPDATE candidates SET agreement_version = $2, agreement_accepted_at = now()
                           WHERE id = $1 AND agreement_version IS DISTINCT FROM $2 RETURNING id)
               INSERT INTO account_events (candidate_id, action, actor, details, address)
               SELECT id, 'accept_agreement', 'candidate:' || id, jsonb_build_object('version', $2::int), $3 FROM u""",
            candidate_id, version, address)
