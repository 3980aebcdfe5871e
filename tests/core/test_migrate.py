"""Migrations: applied once, recorded, idempotent, guarded against edits."""

from __future__ import annotations

import asyncpg
import pytest

from core import migrate
from core.errors import MigrationError


async def test_second_run_changes_nothing(pg: asyncpg.Connection) -> None:
    before = await pg.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")
    tables_before = await pg.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    ran = await migrate.migrate(pg)
    assert ran == []
    after = await pg.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")
    assert before == after
    assert await pg.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == tables_before
    assert [r["version"] for r in after] == [m.version for m in migrate.available()]


class _Rollback(Exception):
    pass


async def _edit_and_roll_back(pg: asyncpg.Connection) -> None:
    async with pg.transaction():
        await pg.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate.pending(pg)
        raise _Rollback


async def test_edited_migration_is_refused(pg: asyncpg.Connection) -> None:
    with pytest.raises(_Rollback):
        await _edit_and_roll_back(pg)
    assert await migrate.pending(pg) == []


async def test_constraints_carry_the_rules(pg: asyncpg.Connection) -> None:
    insert = """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                security_question, security_answer_hash) VALUES ($1, 'h', '张三', 'resident_id', $2, $3,
                'a@example.com', 'q', 'a')"""
    async with pg.transaction():
        await pg.execute(insert, "rules_a", "110101199003070011", "13800000001")
        with pytest.raises(asyncpg.UniqueViolationError, match="candidates_id_number_key"):
            async with pg.transaction():
                await pg.execute(insert, "rules_b", "110101199003070011", "13800000002")
        with pytest.raises(asyncpg.UniqueViolationError, match="candidates_phone_key"):
            async with pg.transaction():
                await pg.execute(insert, "rules_c", "110101199003070022", "13800000001")
        with pytest.raises(asyncpg.UniqueViolationError, match="candidates_username_key"):
            async with pg.transaction():
                await pg.execute(insert, "rules_a", "110101199003070033", "13800000003")
        await pg.execute("DELETE FROM candidates WHERE username LIKE 'rules_%'")
