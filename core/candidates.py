"""Candidate accounts in PostgreSQL, and the Redis-cached credential record that login reads.

PostgreSQL enforces uniqueness (username, phone, id type + number); a violation becomes an
``AccountConflict`` subclass. The credential record is cached in Redis so a login storm reads
PostgreSQL once per account (and once per unknown name, cached briefly as a negative entry).
Cache fills use SET NX and password changes overwrite, so a fill racing a password change can
never leave the old hash cached.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

import asyncpg
import orjson
from redis.exceptions import RedisError

from core.accounts import ID_TYPES, USERNAME_RE, Registration
from core.errors import CoreError, NotFound, storage_errors
from core.idcards import mask_id_number
from core.identity import normalise_id_number, normalise_username
from core.redis import AutoPipeline
from core.timeutil import iso_local

__all__ = [
    "AccountConflict", "Credentials", "IdNumberTaken", "PhoneTaken", "RecoveryRecord", "UsernameTaken",
    "create", "credentials", "credentials_key", "find_by_id_number", "forget_credentials", "profile",
    "update_password", "CREDENTIALS_TTL_S", "CREDENTIALS_NEGATIVE_TTL_S",
]  # fmt: skip

PG = asyncpg.Pool | asyncpg.Connection

CREDENTIALS_TTL_S = 3600
# Short: an unknown name that is registered a moment later must not stay unknown for long
# (``create(..., redis=…)`` also deletes the entry).
CREDENTIALS_NEGATIVE_TTL_S = 30
_UNKNOWN = b"-"  # the cached value for "no such username"


def credentials_key(username: str) -> str:
    """Redis key of a username's cached credential record (usernames are case-insensitive)."""
    return f"eg:cred:{normalise_username(username)}"


# -- errors ------------------------------------------------------------------------------------------


class AccountConflict(CoreError):
    """An account with the same identity already exists; ``code`` is the API error code, ``field`` the field."""

    code: ClassVar[str] = "account_conflict"
    field: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__(f"{self.field} already registered")


class IdNumberTaken(AccountConflict):
    """The id type and number belong to another account."""

    code, field = "id_number_taken", "id_number"


class PhoneTaken(AccountConflict):
    """The phone number belongs to another account."""

    code, field = "phone_taken", "phone"


class UsernameTaken(AccountConflict):
    """The username belongs to another account."""

    code, field = "username_taken", "username"


_CONFLICTS: dict[str, type[AccountConflict]] = {
    "candidates_id_number_key": IdNumberTaken,
    "candidates_phone_key": PhoneTaken,
    "candidates_username_key": UsernameTaken,
}



# -- records -----------------------------------------------------------------------------------------


class Credentials(NamedTuple):
    """What login needs: who the username is and their password hash."""

    candidate_id: int
    username: str
    password_hash: str


class RecoveryRecord(NamedTuple):
    """What password recovery needs of the account an id number names (``name`` as stored: normalised)."""

    candidate_id: int
    name: str
    phone: str
    security_question: str
    security_answer_hash: str


# -- writes ------------------------------------------------------------------------------------------

# One statement, so one transaction: the candidate and their educations exist together or not at all.
_CREATE = """
WITH c AS (
    INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                            security_question, security_answer_hash, agreement_version, agreement_accepted_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $16, CASE WHEN $16::int IS NULL THEN NULL ELSE now() END)
    RETURNING id
), e AS (
    INSERT INTO educations (candidate_id, cert_no, school, graduated_on, major, level, mode)
    SELECT c.id, u.cert_no, u.school, u.graduated_on, u.major, u.level, u.mode
    FROM c, unnest($10::text[], $11::text[], $12::date[], $13::text[], $14::text[], $15::text[])
            AS u (cert_no, school, graduated_on, major, level, mode)
), d AS (
    INSERT INTO degrees (candidate_id, cert_no, school, obtained_on, major, level, kind)
    SELECT c.id, u.cert_no, u.school, u.obtained_on, u.major, u.level, u.kind
    FROM c, unnest($17::text[], $18::text[], $19::date[], $20::text[], $21::text[], $22::text[])
            AS u (cert_no, school, obtained_on, major, level, kind)
), a AS (
    INSERT INTO account_events (candidate_id, action, actor, details, address)
    SELECT c.id, 'create', 'candidate:' || c.id, jsonb_build_object('agreement_version', $16::int), $23 FROM c
)
SELECT id FROM c
"""


async def create(
    pg: PG, reg: Registration, *, password_hash: str, answer_hash: str, redis: AutoPipeline | None = None,
    address: str | None = None,
) -> int:
    """Insert a candidate with their educations and degrees, audited; the new id, or
    ``IdNumberTaken``/``PhoneTaken``/``UsernameTaken``.

    Pass ``redis`` to drop a negative credential entry left by login attempts before the account existed.
    """
    edus, degrees = reg.educations, reg.degrees
    try:
        async with storage_errors():
            candidate_id = await pg.fetchval(
                _CREATE,
                reg.username, password_hash, reg.name, reg.id_type, reg.id_number, reg.phone, reg.email,
                reg.security_question, answer_hash,
                [e.cert_no for e in edus], [e.school for e in edus], [e.graduated_on for e in edus],
                [e.major for e in edus], [e.level for e in edus], [e.mode for e in edus], reg.agreement_version,
                [d.cert_no for d in degrees], [d.school for d in degrees], [d.obtained_on for d in degrees],
                [d.major for d in degrees], [d.level for d in degrees], [d.kind for d in degrees], address,
            )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        conflict = _CONFLICTS.get(exc.constraint_name or "")
        if conflict is None:
            raise
        raise conflict() from exc
    if redis is not None:
        with contextlib.suppress(RedisError):  # at worst the entry expires within its short TTL
            await forget_credentials(redis, reg.username)
    return int(candidate_id)


async def update_password(
    pg: PG, redis: AutoPipeline, candidate_id: int, new_hash: str, *, ttl_s: int = CREDENTIALS_TTL_S
) -> None:
    """Store a new password hash and overwrite the cached credential record with it.

    Raises ``NotFound`` for an unknown candidate, and ``StorageUnavailable('redis')`` when PostgreSQL
    was updated but the cache could not be refreshed (the old hash may then stay cached until its TTL).
    """
    async with storage_errors():
        username = await pg.fetchval(
            "UPDATE candidates SET password_hash = $2 WHERE id = $1 RETURNING username", candidate_id, new_hash
        )
    if username is None:
        raise NotFound("candidate", candidate_id)
    record = Credentials(candidate_id, username, new_hash)
    async with storage_errors():
        # A plain SET (not NX) wins over any concurrent fill, which uses NX.
        await redis.set(credentials_key(username), _encode(record), ex=ttl_s)


async def forget_credentials(redis: AutoPipeline, username: str) -> None:
    """Drop the cached credential record (positive or negative) of a username."""
    await redis.delete(credentials_key(username))


# -- reads -------------------------------------------------------------------------------------------


def _encode(record: Credentials) -> bytes:
    return orjson.dumps({"id": record.candidate_id, "u": record.username, "h": record.password_hash})


def _decode(raw: bytes) -> Credentials | None:
    try:
        data = orjson.loads(raw)
        return Credentials(int(data["id"]), str(data["u"]), str(data["h"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def credentials(
    redis: AutoPipeline,
    pg: PG,
    username: str,
    *,
    ttl_s: int = CREDENTIALS_TTL_S,
    negative_ttl_s: int = CREDENTIALS_NEGATIVE_TTL_S,
) -> Credentials | None:
    """The credential record of ``username`` from Redis, or from PostgreSQL on a miss (then cached); None if unknown.

    A name that cannot be a username returns None without any I/O. Raises ``StorageUnavailable``
    when Redis cannot be read (login then answers 503 rather than sending the storm to PostgreSQL).
    """
    name = normalise_username(username)
    if not USERNAME_RE.fullmatch(name):
        return None
    key = credentials_key(name)
    async with storage_errors():
        raw = await redis.get(key)
    if raw == _UNKNOWN:
        return None
    if raw is not None:
        cached = _decode(raw)
        if cached is not None:
            return cached
        with contextlib.suppress(RedisError):  # unreadable entry: replace it below
            await redis.delete(key)
    async with storage_errors():
        row = await pg.fetchrow("SELECT id, username, password_hash FROM candidates WHERE username = $1", name)
    record = None if row is None else Credentials(row["id"], row["username"], row["password_hash"])
    # Best effort: a failed fill only costs another PostgreSQL read later. NX so that a fill
    # that read PostgreSQL before a password change cannot overwrite the new record.
    with contextlib.suppress(RedisError):
        if record is None:
            await redis.set(key, _UNKNOWN, ex=negative_ttl_s, nx=True)
        else:
            await redis.set(key, _encode(record), ex=ttl_s, nx=True)
    return record


_PROFILE = """
SELECT c.id, c.username, c.name, c.id_type, c.id_number, c.phone, c.email, c.security_question, c.created_at,
       c.agreement_version, c.agreement_accepted_at,
       (SELECT max(version) FROM account_documents WHERE kind = 'agreement') AS agreement_current,
       coalesce((SELECT json_agg(json_build_object(
                     'education_id', e.id, 'cert_no', e.cert_no, 'school', e.school,
                     'graduated_on', to_char(e.graduated_on, 'YYYY-MM'), 'major', e.major, 'level', e.level,
                     'mode', e.mode, 'status', e.status) ORDER BY e.graduated_on, e.id)
                 FROM educations e WHERE e.candidate_id = c.id), '[]')::text AS educations,
       coalesce((SELECT json_agg(json_build_object(
                     'degree_id', d.id, 'cert_no', d.cert_no, 'school', d.school,
                     'obtained_on', to_char(d.obtained_on, 'YYYY-MM'), 'major', d.major, 'level', d.level,
                     'kind', d.kind, 'status', d.status) ORDER BY d.obtained_on, d.id)
                 FROM degrees d WHERE d.candidate_id = c.id), '[]')::text AS degrees
FROM candidates c WHERE c.id = $1
"""


async def profile(pg: PG, candidate_id: int) -> dict[str, Any]:
    """The signed-in candidate's profile for ``GET /api/v1/me``, id number masked; ``NotFound`` if none."""
    async with storage_errors():
        row = await pg.fetchrow(_PROFILE, candidate_id)
    if row is None:
        raise NotFound("candidate", candidate_id)
    created_at: datetime = row["created_at"]
    return {
        "candidate_id": row["id"],
        "username": row["username"],
        "name": row["name"],
        "id_type": row["id_type"],
        "id_number": mask_id_number(row["id_number"]),
        "phone": row["phone"],
        "email": row["email"],
        "security_question": row["security_question"],
        "created_at": iso_local(created_at),
        "educations": orjson.loads(row["educations"]),
        "degrees": orjson.loads(row["degrees"]),
        "agreement": {"accepted_version": row["agreement_version"],
                      "accepted_at": None if row["agreement_accepted_at"] is None
                      else iso_local(row["agreement_accepted_at"]),
                      "current_version": row["agreement_current"],
                      "required": row["agreement_current"] is not None
                      and row["agreement_version"] != row["agreement_current"]},
    }


# The id type leads the unique index; listing every type lets PostgreSQL probe it once per type
# instead of scanning the table when the caller does not know the type. The name is not in the
# query: recovery compares it afterwards, so a wrong name costs what a right one does.
_FIND_FOR_RECOVERY = """
SELECT id, name, phone, security_question, security_answer_hash FROM candidates
WHERE id_type = ANY($2::text[]) AND id_number = $1
ORDER BY id_type = 'resident_id' DESC, id
LIMIT 1
"""


async def find_by_id_number(pg: PG, id_number: str, *, id_type: str | None = None) -> RecoveryRecord | None:
    """The account of an id number (of ``id_type``, or of any type, a resident id first), else None."""
    types = list(ID_TYPES) if id_type is None else [id_type]
    async with storage_errors():
        row = await pg.fetchrow(_FIND_FOR_RECOVERY, normalise_id_number(id_number), types)
    if row is None:
        return None
    return RecoveryRecord(row["id"], row["name"], row["phone"], row["security_question"], row["security_answer_hash"])


async def find_by_phone(pg: PG, phone: str) -> int | None:
    """The id of the account bound to ``phone`` (normalised), else None."""
    async with storage_errors():
        found = await pg.fetchval("SELECT id FROM candidates WHERE phone = $1", phone)
    return None if found is None else int(found)


async def username_of(pg: PG, candidate_id: int) -> str:
    """The username of an account; ``NotFound`` when it went away."""
    async with storage_errors():
        found = await pg.fetchval("SELECT username FROM candidates WHERE id = $1", candidate_id)
    if found is None:
        raise NotFound("candidate", candidate_id)
    return str(found)
