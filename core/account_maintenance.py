"""Account maintenance (注册维护): a signed-in candidate changes the phone, the security question or the email,
adds and removes education (学历) and degree (学位) records; operators set a record's verification status.

1. Every change is one transaction with its ``account_events`` row: who (``candidate:<id>`` or
   ``operator:<name>``), what, from which address. Secrets are never written there (the answer,
   codes, passwords); phone numbers and email addresses are kept masked.
2. A record's adds and deletes of one candidate are serialised by a transaction-scoped advisory
   lock on the candidate, so the limits (``MAX_EDUCATIONS``, ``MAX_DEGREES``, at least one education)
   hold however many requests race. An operator's status change locks the record's row, so a
   delete racing a verification either deletes it first (the operator then gets 404) or finds it
   verified (409 ``record_verified``).
3. After a change of the phone or the security question — together with the name and id number,
   what recovers the account — every session of the account ends and the caller gets a new one
   (``renew_sessions``): the credentials epoch is bumped first, so a sign-in racing the change
   keeps no session either (``core.sessions``). The credential record cached for sign-in holds the
   id, username and password hash only; nothing here changes them, so it needs no write.

Operators see a candidate within their scope as photo review does: a provincial operator, those
whose id number begins with one of its provinces; anything else is ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from core import sessions
from core.accounts import MAX_DEGREES, MAX_EDUCATIONS, Degree, Education
from core.candidates import PhoneTaken
from core.db import Conn, transaction
from core.errors import CoreError, NotFound, storage_errors
from core.phone_codes import CodeInvalid
from core.scripts import ScriptClient
from core.timeutil import iso_local

__all__ = [
    "DEGREES", "EDUCATIONS", "KINDS", "NOTE_MAX_CHARS", "STATUSES",
    "Account", "MaintenanceError", "PasswordIncorrect", "RecordKind", "RecordRefused",
    "account_of", "add_record", "change_email", "change_phone", "change_security_question", "delete_record",
    "events", "mask_email", "mask_phone", "renew_sessions", "set_status",
]  # fmt: skip

PG = asyncpg.Pool | Conn
STATUSES = ("not_checked", "verified", "needs_manual", "rejected")
NOTE_MAX_CHARS = 200
ACTOR_MAX_CHARS = 80  # account_events.actor
_SCOPE = "($1::text[] IS NULL OR left(c.id_number, 2) = ANY($1::text[]))"


# -- errors ------------------------------------------------------------------------------------------


class MaintenanceError(CoreError):
    """Base class of the errors of account maintenance."""


class PasswordIncorrect(MaintenanceError):
    """The password given to confirm a change is not the account's (HTTP 403 ``password_incorrect``)."""

    def __init__(self) -> None:
        super().__init__("the password is not the account's")


class RecordRefused(MaintenanceError):
    """A record's add, delete or status change refused by what is stored: ``code`` names it, ``details`` say more."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details


# -- the two kinds of record ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordKind:
    """Education records or degree records: their table, columns, limits and names."""

    name: str  # "education" | "degree": the audit's action names, NotFound's ``what``
    table: str
    id_name: str  # the id's name in answers
    date_column: str
    last_column: str  # mode (educations) or kind (degrees)
    max_records: int
    min_records: int
    label: str  # 学历 / 学位

    @property
    def columns(self) -> str:
        """The record's columns in answers' order."""
        return f"id, cert_no, school, {self.date_column}, major, level, {self.last_column}"


EDUCATIONS = RecordKind("education", "educations", "education_id", "graduated_on", "mode", MAX_EDUCATIONS, 1, "学历")
DEGREES = RecordKind("degree", "degrees", "degree_id", "obtained_on", "kind", MAX_DEGREES, 0, "学位")
KINDS = {"educations": EDUCATIONS, "degrees": DEGREES}


def _record(kind: RecordKind, row: asyncpg.Record, *, checker: bool = False) -> dict[str, Any]:
    found = {
        kind.id_name: row["id"], "cert_no": row["cert_no"], "school": row["school"],
        kind.date_column: row[kind.date_column].strftime("%Y-%m"), "major": row["major"], "level": row["level"],
        kind.last_column: row[kind.last_column], "status": row["status"], "added_at": _iso(row["added_at"]),
        "checked_at": _iso(row["checked_at"]),
    }  # fmt: skip
    if checker:  # the operator's name is for operators
        found["checked_by"] = row["checked_by"]
    return found


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_local(moment)


# -- masking -------------------------------------------------------------------------------------------


def mask_phone(phone: str) -> str:
    """``139****5678``: the carrier prefix and the last four digits."""
    return f"{phone[:3]}****{phone[-4:]}" if len(phone) == 11 else "*" * len(phone)


def mask_email(email: str) -> str:
    """``z***@example.com``: the first character of the local part and the domain."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


# -- the account ---------------------------------------------------------------------------------------


class Account(NamedTuple):
    """What a change checks against: the username (its credentials epoch), phone, email and password hash."""

    username: str
    phone: str
    email: str
    password_hash: str


async def account_of(pg: PG, candidate_id: int) -> Account:
    """The account's current facts; ``NotFound`` when it went away."""
    async with storage_errors():
        row = await pg.fetchrow("SELECT username, phone, email, password_hash FROM candidates WHERE id = $1",
                                candidate_id)
    if row is None:
        raise NotFound("candidate", candidate_id)
    return Account(row["username"], row["phone"], row["email"], row["password_hash"])


async def _audit(conn: Conn, candidate_id: int, action: str, actor: str, details: dict[str, Any],
                 address: str | None) -> None:
    await conn.execute("""INSERT INTO account_events (candidate_id, action, actor, details, address)
                          VALUES ($1, $2, $3, $4, $5)""", candidate_id, action, actor[:ACTOR_MAX_CHARS], details,
                       address)


def _candidate(candidate_id: int) -> str:
    return f"candidate:{candidate_id}"


async def change_phone(pg: PG, candidate_id: int, old_phone: str, new_phone: str, *,
                       address: str | None = None) -> None:
    """Bind ``new_phone`` instead of ``old_phone`` (both proven by their codes), audited with both masked.

    ``PhoneTaken`` when another account has ``new_phone``; ``CodeInvalid`` when the account's phone
    is no longer ``old_phone`` (another change finished first: the old number's code proved nothing now).
    """
    try:
        async with storage_errors(), transaction(pg) as conn:
            current = await conn.fetchval("SELECT phone FROM candidates WHERE id = $1 FOR UPDATE", candidate_id)
            if current is None:
                raise NotFound("candidate", candidate_id)
            if current != old_phone:
                raise CodeInvalid()
            await conn.execute("UPDATE candidates SET phone = $2 WHERE id = $1", candidate_id, new_phone)
            await _audit(conn, candidate_id, "change_phone", _candidate(candidate_id),
                         {"old": mask_phone(old_phone), "new": mask_phone(new_phone)}, address)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "candidates_phone_key":
            raise
        raise PhoneTaken() from exc


async def change_security_question(pg: PG, candidate_id: int, question: str, answer_hash: str, *,
                                   address: str | None = None) -> None:
    """Store a new security question and the hash of its answer, audited (the question, never the answer)."""
    async with storage_errors(), transaction(pg) as conn:
        done = await conn.fetchval("""UPDATE candidates SET security_question = $2, security_answer_hash = $3
                                      WHERE id = $1 RETURNING id""", candidate_id, question, answer_hash)
        if done is None:
            raise NotFound("candidate", candidate_id)
        await _audit(conn, candidate_id, "change_security_question", _candidate(candidate_id),
                     {"question": question}, address)


async def change_email(pg: PG, candidate_id: int, email: str, *, address: str | None = None) -> bool:
    """Store a new email address, audited with both masked; False (nothing written) when it is the same."""
    async with storage_errors(), transaction(pg) as conn:
        old = await conn.fetchval("SELECT email FROM candidates WHERE id = $1 FOR UPDATE", candidate_id)
        if old is None:
            raise NotFound("candidate", candidate_id)
        if old == email:
            return False
        await conn.execute("UPDATE candidates SET email = $2 WHERE id = $1", candidate_id, email)
        await _audit(conn, candidate_id, "change_email", _candidate(candidate_id),
                     {"old": mask_email(old), "new": mask_email(email)}, address)
    return True


async def renew_sessions(redis: ScriptClient, candidate_id: int, username: str, *, now: datetime,
                         settings: sessions.SessionSettings) -> sessions.Session:
    """End every session of the account (a racing sign-in too: the epoch first) and start the caller's new one."""
    await sessions.bump_epoch(redis, username)
    await sessions.revoke_all(redis, candidate_id)
    return await sessions.create(redis, candidate_id, now=now, settings=settings)


# -- education and degree records ----------------------------------------------------------------------


async def _lock_account(conn: Conn, candidate_id: int) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('account:' || $1::bigint::text, 0))",
                       candidate_id)


async def add_record(pg: PG, kind: RecordKind, candidate_id: int, record: Education | Degree, *,
                     address: str | None = None) -> dict[str, Any]:
    """Add one record (``not_checked``, ``added_at`` now), audited; ``RecordRefused`` past the limit or for a
    certificate number the account has already."""
    date_value = record.graduated_on if isinstance(record, Education) else record.obtained_on
    last_value = record.mode if isinstance(record, Education) else record.kind
    async with storage_errors(), transaction(pg) as conn:
        await _lock_account(conn, candidate_id)
        held = await conn.fetchrow(
            f"""SELECT count(*) AS count, coalesce(bool_or(cert_no = $2), false) AS duplicate FROM {kind.table}
                 WHERE candidate_id = $1""", candidate_id, record.cert_no)
        assert held is not None  # an aggregate has a row
        if held["count"] >= kind.max_records:
            raise RecordRefused(f"too_many_{kind.table}", f"最多可填写 {kind.max_records} 条{kind.label}信息",
                                max=kind.max_records)
        if held["duplicate"]:
            raise RecordRefused("duplicate_cert_no", f"已填写过该证书编号的{kind.label}信息", cert_no=record.cert_no)
        row = await conn.fetchrow(
            f"""INSERT INTO {kind.table} (candidate_id, cert_no, school, {kind.date_column}, major, level,
                                          {kind.last_column}, added_at)
                SELECT $1, $2, $3, $4, $5, $6, $7, now() FROM candidates WHERE id = $1
                RETURNING {kind.columns}, status, added_at, checked_at, checked_by""",
            candidate_id, record.cert_no, record.school, date_value, record.major, record.level, last_value)
        if row is None:
            raise NotFound("candidate", candidate_id)
        await _audit(conn, candidate_id, f"add_{kind.name}", _candidate(candidate_id),
                     {kind.id_name: row["id"], "cert_no": record.cert_no, "school": record.school,
                      "level": record.level}, address)
    return _record(kind, row)


async def delete_record(pg: PG, kind: RecordKind, candidate_id: int, record_id: int, *,
                        address: str | None = None) -> None:
    """Delete one of the account's records, audited; ``NotFound`` for another's, ``RecordRefused`` for a verified
    one or the last education."""
    async with storage_errors(), transaction(pg) as conn:
        await _lock_account(conn, candidate_id)
        row = await conn.fetchrow(
            f"""SELECT {kind.columns}, status, (SELECT count(*) FROM {kind.table} WHERE candidate_id = $1) AS count
                  FROM {kind.table} WHERE id = $2 AND candidate_id = $1 FOR UPDATE""", candidate_id, record_id)
        if row is None:
            raise NotFound(kind.name, record_id)
        if row["status"] == "verified":
            raise RecordRefused("record_verified", f"该{kind.label}信息已核验通过，不能删除",
                                **{kind.id_name: record_id})
        if row["count"] <= kind.min_records:
            raise RecordRefused(f"last_{kind.name}", f"至少需要保留一条{kind.label}信息", **{kind.id_name: record_id})
        await conn.execute(f"DELETE FROM {kind.table} WHERE id = $1", record_id)
        await _audit(conn, candidate_id, f"delete_{kind.name}", _candidate(candidate_id),
                     {kind.id_name: record_id, "cert_no": row["cert_no"], "school": row["school"],
                      "level": row["level"], "status": row["status"]}, address)


def _scoped(scope: Collection[str] | None) -> list[str] | None:
    return None if scope is None else sorted(scope)


async def set_status(pg: PG, kind: RecordKind, candidate_id: int, record_id: int, status: str, *, operator: str,
                     note: str | None, scope: Collection[str] | None) -> dict[str, Any]:
    """Set a record's verification status (an operator, or an online check), audited with the operator's name.

    ``not_checked`` clears who checked and when. Nothing is written when the status is the same
    and there is no note. ``NotFound`` for a record not the candidate's or a candidate out of ``scope``.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown record status {status!r}")
    returning = f"{kind.columns}, status, added_at, checked_at, checked_by"
    async with storage_errors(), transaction(pg) as conn:
        row = await conn.fetchrow(
            f"""SELECT {returning} FROM {kind.table} r
                 WHERE r.id = $2 AND r.candidate_id = $3
                   AND EXISTS (SELECT 1 FROM candidates c WHERE c.id = r.candidate_id AND {_SCOPE})
                   FOR UPDATE""", _scoped(scope), record_id, candidate_id)
        if row is None:
            raise NotFound(kind.name, record_id)
        if row["status"] == status and note is None:
            return _record(kind, row, checker=True)
        updated = await conn.fetchrow(
            f"""UPDATE {kind.table} SET status = $2,
                       checked_by = CASE WHEN $2 = 'not_checked' THEN NULL ELSE $3 END,
                       checked_at = CASE WHEN $2 = 'not_checked' THEN NULL ELSE now() END
                 WHERE id = $1 RETURNING {returning}""", record_id, status, operator)
        assert updated is not None  # the row is locked
        await _audit(conn, candidate_id, f"set_{kind.name}_status", f"operator:{operator}",
                     {kind.id_name: record_id, "cert_no": row["cert_no"], "from": row["status"], "to": status,
                      "note": note}, None)
    return _record(kind, updated, checker=True)


async def events(pg: PG, candidate_id: int, *, scope: Collection[str] | None, after: int = 0,
                 limit: int = 50) -> list[dict[str, Any]]:
    """A page of the account's audit trail, oldest first; ``NotFound`` for a candidate out of ``scope``."""
    async with storage_errors():
        if await pg.fetchval(f"SELECT c.id FROM candidates c WHERE c.id = $2 AND {_SCOPE}", _scoped(scope),
                             candidate_id) is None:
            raise NotFound("candidate", candidate_id)
        rows = await pg.fetch("""SELECT id, action, actor, details, address, at FROM account_events
                                 WHERE candidate_id = $1 AND id > $2 ORDER BY id LIMIT $3""",
                              candidate_id, after, limit)
    return [{"event_id": row["id"], "action": row["action"], "actor": row["actor"], "details": row["details"],
             "address": row["address"], "at": iso_local(row["at"])} for row in rows]
