"""Numbered SQL migrations, applied in order under an advisory lock and recorded."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg

from core.db import Conn
from core.errors import MigrationError

# Any constant works as long as every examgate process uses the same one.
ADVISORY_LOCK_KEY = 0x6578616D67617465  # "examgate"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file: its number, name, text and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("core.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must run 1..n without gaps, found {versions}")
    return found


_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def applied(conn: Conn) -> dict[int, str]:
    """Recorded migrations: version → checksum (empty when none ran yet)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def pending(conn: Conn) -> list[Migration]:
    """Migrations not yet applied; raises when an applied one was edited afterwards."""
    done = await applied(conn)
    todo = []
    for migration in available():
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was applied"
                )
        else:
            todo.append(migration)
    unknown = set(done) - {m.version for m in available()}
    if unknown:
        raise MigrationError(f"database has migrations this code does not know: {sorted(unknown)}")
    return todo


async def migrate(conn: asyncpg.Connection, progress: Callable[[str], None] = lambda _: None) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return what ran."""
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_LEDGER)
        ran = []
        for migration in await pending(conn):
            progress(f"applying {migration.version:04d}_{migration.name}")
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            ran.append(migration)
        return ran
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def create_and_migrate(dsn: str, progress: Callable[[str], None] = lambda _: None) -> list[Migration]:
    """Create the DSN's database when missing, then apply its pending migrations."""
    from core import db

    if await db.ensure_database(dsn):
        progress(f"created database {db.database_name(dsn)}")
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, progress=progress)
    finally:
        await conn.close()
