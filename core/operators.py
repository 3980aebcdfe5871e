"""Operators: named accounts with a role and a scope, their bearer tokens, and the audit of every change.

1. An operator has a **role** — ``reviewer`` (reviews registrations), ``operator`` (runs the
   peak: live config, throttles, refunds), ``admin`` (all of that, and manages operators) — and a
   **scope**: national (``provinces`` None) or the provinces whose registrations it may see.
2. A token is ``egop_`` + 256 random bits, shown once when issued. Only its SHA-256 digest is
   stored (``token_digest``): a token with that much entropy needs no slow password hash, since
   no one can try candidate inputs against a leaked digest, and the gateway finds it with one
   indexed lookup (``resolve``). Every token expires; a revoked one keeps its row.
3. A provincial admin manages only operators whose provinces lie within its own (``Operator.manages``):
   it cannot see, create or widen anyone beyond them, national accounts included.
4. Every change is written to ``operator_audit`` in the transaction that makes it: who, what, to
   whom, when — never a token.

The names of ``EXAMGATE_ADMIN_TOKENS`` are national admins from the settings; they are not stored
here, and the gateway refuses a stored operator of the same name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import EllipsisType
from typing import Any

import asyncpg

from core.db import Conn
from core.errors import CoreError
from core.idcards import PROVINCE_CODES
from core.timeutil import iso_local, utcnow

__all__ = [
    "ROLES", "PROVINCES", "NAME_PATTERN", "TOKEN_PREFIX", "TOKEN_LIFETIME_MIN_S", "TOKEN_LIFETIME_MAX_S",
    "DISPLAY_NAME_MAX_CHARS", "LABEL_MAX_CHARS",
    "Operator", "OperatorRecord", "TokenInfo", "IssuedToken", "Resolved",
    "OperatorError", "InvalidOperator", "OperatorNotFound", "OperatorExists", "OperatorDisabled",
    "TokenNotFound", "OutOfScope",
    "check_name", "check_role", "check_provinces", "new_token", "token_digest",
    "create", "list_operators", "get", "update", "issue_token", "revoke_token", "resolve", "touch", "token_info",
    "audit",
]  # fmt: skip

ROLES = ("reviewer", "operator", "admin")
# The province codes of exam_sites.province (GB/T 2260): mainland 11–65, Taiwan 71, Hong Kong 81, Macao 82.
PROVINCES = frozenset(code for code in PROVINCE_CODES if code <= "82")
NAME_PATTERN = r"^[a-z][a-z0-9._-]{1,31}$"
DISPLAY_NAME_MAX_CHARS = 64
LABEL_MAX_CHARS = 64
TOKEN_PREFIX = "egop_"
TOKEN_BYTES = 32  # 256 bits
TOKEN_LIFETIME_MIN_S = 60
TOKEN_LIFETIME_MAX_S = 3650 * 86400
Reader = Conn | asyncpg.Pool  # a single query needs no connection of its own
_NAME = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))  # fullmatch: "$" would let a "\n" end it


# -- who is calling --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    """Who calls the admin API: a name, a role and the provinces it may see (None: national)."""

    name: str
    role: str
    provinces: frozenset[str] | None = None
    token_id: int | None = None  # None: a token of EXAMGATE_ADMIN_TOKENS

    @property
    def national(self) -> bool:
        """True when the operator's scope is the whole country."""
        return self.provinces is None

    def sees(self, province: str) -> bool:
        """True when ``province``'s registrations are within the operator's scope."""
        return self.provinces is None or province in self.provinces

    def manages(self, provinces: frozenset[str] | None) -> bool:
        """True when a scope of ``provinces`` (None: national) lies within this operator's own."""
        return self.provinces is None or (provinces is not None and provinces <= self.provinces)


# -- records ---------------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return iso_local(moment) if moment is not None else None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One issued token, without the token: its id, label and times."""

    id: int
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        """True while the token is neither revoked nor expired."""
        return self.revoked_at is None and self.expires_at > now

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The token's fields as the admin API shows them (times in +08:00)."""
        return {"id": self.id, "label": self.label, "created_at": iso_local(self.created_at),
                "expires_at": iso_local(self.expires_at), "revoked_at": _iso(self.revoked_at),
                "last_used_at": _iso(self.last_used_at), "active": self.active(now or utcnow())}


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """A stored operator and its tokens not revoked."""

    id: int
    name: str
    display_name: str
    role: str
    provinces: frozenset[str] | None
    created_at: datetime
    disabled_at: datetime | None
    tokens: tuple[TokenInfo, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The operator as the admin API shows it (provinces sorted, null for national)."""
        now = utcnow()
        return {"name": self.name, "display_name": self.display_name, "role": self.role,
                "provinces": sorted(self.provinces) if self.provinces is not None else None,
                "created_at": iso_local(self.created_at), "disabled_at": _iso(self.disabled_at),
                "disabled": self.disabled_at is not None, "source": "database",
                "tokens": [token.as_dict(now) for token in self.tokens]}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just issued: the only time the token itself is seen."""

    operator: str
    token: str
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a live token stands for, and until when."""

    operator: Operator
    expires_at: datetime
    last_used_at: datetime | None


# -- errors ----------------------------------------------------------------------------------------


class OperatorError(CoreError):
    """Base class of the operator accounts' errors."""


class InvalidOperator(OperatorError):
    """A value breaks a rule; ``fields`` maps each field to its problem code."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(f"invalid operator: {fields}")
        self.fields = fields


class OperatorNotFound(OperatorError):
    """No operator of that name within the caller's scope."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no operator {name!r}")
        self.name = name


class OperatorExists(OperatorError):
    """An operator of that name exists already (stored, or named in the settings)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"operator {name!r} exists")
        self.name = name


class OperatorDisabled(OperatorError):
    """The operator is disabled: it gets no new token until enabled again."""

    def __init__(self, name: str) -> None:
        super().__init__(f"operator {name!r} is disabled")
        self.name = name


class TokenNotFound(OperatorError):
    """The operator has no token of that id (within the caller's scope)."""

    def __init__(self, name: str, token_id: int) -> None:
        super().__init__(f"operator {name!r} has no token {token_id}")
        self.name = name
        self.token_id = token_id


class OutOfScope(OperatorError):
    """The change would give an operator provinces beyond the caller's own scope."""

    def __init__(self, provinces: frozenset[str] | None) -> None:
        super().__init__(f"scope {sorted(provinces) if provinces is not None else 'national'} beyond the caller's")
        self.provinces = provinces


# -- rules -----------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` when it is a valid operator name (2–32 of a-z 0-9 . _ -, starting with a letter)."""
    if _NAME.fullmatch(name) is None:
        raise InvalidOperator({"name": "invalid_format"})
    return name


def check_role(role: str) -> str:
    """``role`` when it is one of ``ROLES``."""
    if role not in ROLES:
        raise InvalidOperator({"role": "invalid_choice"})
    return role


def check_provinces(provinces: Iterable[str] | None) -> frozenset[str] | None:
    """The scope as a set of province codes (None: national); at least one code, each a known province."""
    if provinces is None:
        return None
    found = frozenset(provinces)
    if not found:
        raise InvalidOperator({"provinces": "empty"})
    if not found <= PROVINCES:
        raise InvalidOperator({"provinces": "invalid_choice"})
    return found


def _check_text(field_name: str, value: str, max_chars: int) -> str:
    value = value.strip()
    if len(value) > max_chars:
        raise InvalidOperator({field_name: "too_long"})
    if "\x00" in value:
        raise InvalidOperator({field_name: "contains_nul"})
    return value


def new_token() -> str:
    """A fresh operator token: the prefix and 256 bits from the operating system's CSPRNG."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str | bytes) -> bytes:
    """What is stored of a token: its SHA-256 digest (enough for 256 random bits; see the module's docstring)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token).digest()


# -- storage ---------------------------------------------------------------------------------------


def _provinces(raw: list[str] | None) -> frozenset[str] | None:
    return frozenset(raw) if raw is not None else None


def _stored(provinces: frozenset[str] | None) -> list[str] | None:
    return sorted(provinces) if provinces is not None else None


def _token(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(row["id"], row["label"], row["created_at"], row["expires_at"], row["revoked_at"],
                     row["last_used_at"])


def _record(row: asyncpg.Record, tokens: Iterable[TokenInfo] = ()) -> OperatorRecord:
    return OperatorRecord(row["id"], row["name"], row["display_name"], row["role"], _provinces(row["provinces"]),
                          row["created_at"], row["disabled_at"], tuple(tokens))


async def _audit(conn: Conn, actor: Operator, action: str, name: str, changes: dict[str, Any],
                 token_id: int | None = None) -> None:
    await conn.execute("INSERT INTO operator_audit (actor, action, operator, token_id, changes) "
                       "VALUES ($1, $2, $3, $4, $5)", actor.name, action, name, token_id, changes)


async def create(conn: Conn, *, actor: Operator, name: str, role: str, provinces: Iterable[str] | None,
                 display_name: str = "") -> OperatorRecord:
    """Store a new operator (no token yet); OperatorExists when the name is taken, OutOfScope beyond the actor's."""
    name, role, scope = check_name(name), check_role(role), check_provinces(provinces)
    display_name = _check_text("display_name", display_name, DISPLAY_NAME_MAX_CHARS)
    if not actor.manages(scope):
        raise OutOfScope(scope)
    async with conn.transaction():
        try:
            row = await conn.fetchrow("INSERT INTO operators (name, display_name, role, provinces) "
                                      "VALUES ($1, $2, $3, $4) RETURNING *", name, display_name, role, _stored(scope))
        except asyncpg.UniqueViolationError:
            raise OperatorExists(name) from None
        await _audit(conn, actor, "create", name, {"role": role, "provinces": _stored(scope),
                                                   "display_name": display_name})
    assert row is not None
    return _record(row)


async def list_operators(conn: Conn, actor: Operator) -> list[OperatorRecord]:
    """Every operator within the actor's scope, by name, with its tokens not revoked."""
    rows = await conn.fetch("SELECT * FROM operators ORDER BY name")
    tokens: dict[int, list[TokenInfo]] = {}
    for row in await conn.fetch("SELECT * FROM operator_tokens WHERE revoked_at IS NULL ORDER BY id"):
        tokens.setdefault(row["operator_id"], []).append(_token(row))
    records = [_record(row, tokens.get(row["id"], ())) for row in rows]
    return [record for record in records if actor.manages(record.provinces)]


async def get(conn: Conn, actor: Operator, name: str) -> OperatorRecord:
    """One operator within the actor's scope, with its tokens not revoked; OperatorNotFound otherwise."""
    row = await conn.fetchrow("SELECT * FROM operators WHERE name = $1", name)
    if row is None or not actor.manages(_provinces(row["provinces"])):
        raise OperatorNotFound(name)
    tokens = await conn.fetch("SELECT * FROM operator_tokens WHERE operator_id = $1 AND revoked_at IS NULL "
                              "ORDER BY id", row["id"])
    return _record(row, map(_token, tokens))


async def update(conn: Conn, *, actor: Operator, name: str, role: str | None = None,
                 provinces: Iterable[str] | EllipsisType | None = ..., display_name: str | None = None,
                 disabled: bool | None = None) -> OperatorRecord:
    """Change what is given (``provinces=...``: unchanged, None: national); audited when anything changed."""
    role = check_role(role) if role is not None else None
    scope = check_provinces(provinces) if not isinstance(provinces, EllipsisType) else ...
    if display_name is not None:
        display_name = _check_text("display_name", display_name, DISPLAY_NAME_MAX_CHARS)
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM operators WHERE name = $1 FOR UPDATE", name)
        if row is None or not actor.manages(_provinces(row["provinces"])):
            raise OperatorNotFound(name)
        if not isinstance(scope, EllipsisType) and not actor.manages(scope):
            raise OutOfScope(scope)
        changes: dict[str, Any] = {}
        if role is not None and role != row["role"]:
            changes["role"] = {"old": row["role"], "new": role}
        if not isinstance(scope, EllipsisType) and _stored(scope) != _stored(_provinces(row["provinces"])):
            changes["provinces"] = {"old": _stored(_provinces(row["provinces"])), "new": _stored(scope)}
        if display_name is not None and display_name != row["display_name"]:
            changes["display_name"] = {"old": row["display_name"], "new": display_name}
        if disabled is not None and disabled != (row["disabled_at"] is not None):
            changes["disabled"] = {"old": not disabled, "new": disabled}
        if changes:
            await conn.execute(
                "UPDATE operators SET role = $2, provinces = $3, display_name = $4, "
                "disabled_at = CASE WHEN $5 THEN coalesce(disabled_at, now()) ELSE NULL END WHERE id = $1",
                row["id"], changes.get("role", {}).get("new", row["role"]),
                changes["provinces"]["new"] if "provinces" in changes else row["provinces"],
                changes.get("display_name", {}).get("new", row["display_name"]),
                changes["disabled"]["new"] if "disabled" in changes else row["disabled_at"] is not None)
            await _audit(conn, actor, "update", name, changes)
        return await get(conn, actor, name)


async def issue_token(conn: Conn, *, actor: Operator, name: str, lifetime_s: float, label: str = "") -> IssuedToken:
    """A new token for the operator, valid ``lifetime_s``; the token is in the answer and nowhere else."""
    if not TOKEN_LIFETIME_MIN_S <= lifetime_s <= TOKEN_LIFETIME_MAX_S:
        raise InvalidOperator({"expires_in_s": "out_of_range"})
    label = _check_text("label", label, LABEL_MAX_CHARS)
    token = new_token()
    async with conn.transaction():
        # FOR SHARE: a concurrent disable waits for this token, or this waits and sees it disabled.
        row = await conn.fetchrow("SELECT id, provinces, disabled_at FROM operators WHERE name = $1 FOR SHARE", name)
        if row is None or not actor.manages(_provinces(row["provinces"])):
            raise OperatorNotFound(name)
        if row["disabled_at"] is not None:
            raise OperatorDisabled(name)
        inserted = await conn.fetchrow(
            "INSERT INTO operator_tokens (operator_id, token_hash, label, expires_at) "
            "VALUES ($1, $2, $3, now() + $4::double precision * interval '1 second') RETURNING *",
            row["id"], token_digest(token), label, float(lifetime_s))
        assert inserted is not None
        info = _token(inserted)
        await _audit(conn, actor, "token_issue", name, {"label": label, "expires_at": iso_local(info.expires_at)},
                     token_id=info.id)
    return IssuedToken(name, token, info)


async def revoke_token(conn: Conn, *, actor: Operator, name: str, token_id: int) -> TokenInfo:
    """Revoke one of the operator's tokens (again: no change); TokenNotFound when it has none of that id."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT t.*, o.provinces FROM operator_tokens t JOIN operators o ON o.id = t.operator_id "
            "WHERE o.name = $1 AND t.id = $2 FOR UPDATE OF t", name, token_id)
        if row is None or not actor.manages(_provinces(row["provinces"])):
            raise TokenNotFound(name, token_id)
        if row["revoked_at"] is not None:
            return _token(row)
        revoked = await conn.fetchrow("UPDATE operator_tokens SET revoked_at = now() WHERE id = $1 RETURNING *",
                                      token_id)
        assert revoked is not None
        await _audit(conn, actor, "token_revoke", name, {"label": row["label"]}, token_id=token_id)
    return _token(revoked)


async def resolve(conn: Reader, digest: bytes) -> Resolved | None:
    """The operator a token's digest stands for while the token is live and the operator enabled; else None."""
    row = await conn.fetchrow(
        "SELECT t.id, t.expires_at, t.last_used_at, o.name, o.role, o.provinces "
        "FROM operator_tokens t JOIN operators o ON o.id = t.operator_id "
        "WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND o.disabled_at IS NULL",
        digest)
    if row is None:
        return None
    operator = Operator(row["name"], row["role"], _provinces(row["provinces"]), row["id"])
    return Resolved(operator, row["expires_at"], row["last_used_at"])


async def touch(conn: Reader, token_id: int, every_s: float) -> None:
    """Record that the token was used, unless that was recorded less than ``every_s`` ago (by any process)."""
    await conn.execute("UPDATE operator_tokens SET last_used_at = now() WHERE id = $1 AND "
                       "(last_used_at IS NULL OR last_used_at < now() - $2::double precision * interval '1 second')",
                       token_id, float(every_s))


async def token_info(conn: Reader, token_id: int) -> TokenInfo | None:
    """One token's fields, by id."""
    row = await conn.fetchrow("SELECT * FROM operator_tokens WHERE id = $1", token_id)
    return _token(row) if row is not None else None


async def audit(conn: Reader, actor: Operator, limit: int, name: str | None = None) -> list[dict[str, Any]]:
    """The latest changes to operators within the actor's scope (to ``name`` only, when given), newest first."""
    # Operators are never deleted, so every audited name has its row (and its scope today).
    rows = await conn.fetch(
        "SELECT a.* FROM operator_audit a JOIN operators o ON o.name = a.operator "
        "WHERE ($1::text IS NULL OR a.operator = $1) "
        "AND ($2::text[] IS NULL OR (o.provinces IS NOT NULL AND o.provinces <@ $2::text[])) "
        "ORDER BY a.id DESC LIMIT $3", name, _stored(actor.provinces), limit)
    return [{"id": row["id"], "actor": row["actor"], "action": row["action"], "operator": row["operator"],
             "token_id": row["token_id"], "changes": row["changes"], "changed_at": iso_local(row["changed_at"])}
            for row in rows]
