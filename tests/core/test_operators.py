"""Operator accounts against real PostgreSQL: rules, scopes, tokens stored as digests, resolution, audit."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest

from core import db, operators
from core.operators import (
    InvalidOperator,
    Operator,
    OperatorDisabled,
    OperatorExists,
    OperatorNotFound,
    OutOfScope,
    TokenNotFound,
)

ROOT = Operator("root", "admin", None)
NORTH = Operator("north-admin", "admin", frozenset({"11", "12", "13"}))
DAY_S = 86400


@pytest.fixture
async def conn(pg: asyncpg.Connection) -> asyncpg.Connection:
    await pg.execute("TRUNCATE operators, operator_tokens, operator_audit RESTART IDENTITY")
    return pg


async def test_create_get_and_list(conn: asyncpg.Connection) -> None:
    made = await operators.create(conn, actor=ROOT, name="li.wei", role="reviewer", provinces=["31", "11", "31"],
                                  display_name=" 李伟 ")
    assert made.provinces == frozenset({"11", "31"}) and made.display_name == "李伟" and made.disabled_at is None
    await operators.create(conn, actor=ROOT, name="ops", role="operator", provinces=None)
    found = await operators.get(conn, ROOT, "li.wei")
    assert found.as_dict() | {"created_at": None} == {
        "name": "li.wei", "display_name": "李伟", "role": "reviewer", "provinces": ["11", "31"], "created_at": None,
        "disabled_at": None, "disabled": False, "source": "database", "tokens": []}
    assert [record.name for record in await operators.list_operators(conn, ROOT)] == ["li.wei", "ops"]
    assert await conn.fetchval("SELECT provinces FROM operators WHERE name = 'li.wei'") == ["11", "31"]
    assert await conn.fetchval("SELECT provinces FROM operators WHERE name = 'ops'") is None  # national


@pytest.mark.parametrize(("fields", "problem"), [
    ({"name": "Li"}, {"name": "invalid_format"}),
    ({"name": "x"}, {"name": "invalid_format"}),
    ({"name": "1abc"}, {"name": "invalid_format"}),
    ({"name": "abc\n"}, {"name": "invalid_format"}),
    ({"name": "a" * 33}, {"name": "invalid_format"}),
    ({"role": "root"}, {"role": "invalid_choice"}),
    ({"provinces": []}, {"provinces": "empty"}),
    ({"provinces": ["11", "99"]}, {"provinces": "invalid_choice"}),
    ({"provinces": ["83"]}, {"provinces": "invalid_choice"}),
    ({"provinces": ["1"]}, {"provinces": "invalid_choice"}),
    ({"display_name": "名" * 65}, {"display_name": "too_long"}),
])
async def test_invalid_values_are_refused_and_nothing_is_written(conn: asyncpg.Connection, fields: dict[str, object],
                                                                 problem: dict[str, str]) -> None:
    asked: dict[str, object] = {"name": "valid", "role": "reviewer", "provinces": None, **fields}
    with pytest.raises(InvalidOperator) as caught:
        await operators.create(conn, actor=ROOT, **asked)  # type: ignore[arg-type]
    assert caught.value.fields == problem
    assert await conn.fetchval("SELECT count(*) FROM operators") == 0
    assert await conn.fetchval("SELECT count(*) FROM operator_audit") == 0


async def test_a_name_is_taken_once_even_when_raced(conn: asyncpg.Connection, pg_dsn: str) -> None:
    pool = await db.create_pool(db.PoolSettings(pg_dsn, 2, 8))
    try:
        async def attempt(role: str) -> str:
            async with pool.acquire() as own:
                try:
                    await operators.create(own, actor=ROOT, name="twin", role=role, provinces=None)
                except OperatorExists:
                    return "exists"
                return "created"

        results = await asyncio.gather(*(attempt(role) for role in ["reviewer", "operator", "admin"] * 3))
    finally:
        await pool.close()
    assert sorted(results) == ["created"] + ["exists"] * 8
    assert await conn.fetchval("SELECT count(*) FROM operators") == 1
    assert await conn.fetchval("SELECT count(*) FROM operator_audit WHERE action = 'create'") == 1


async def test_tokens_are_stored_as_digests_only(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="auditor", role="reviewer", provinces=["44"])
    issued = await operators.issue_token(conn, actor=ROOT, name="auditor", lifetime_s=30 * DAY_S, label="笔记本")
    assert issued.token.startswith("egop_") and len(issued.token) == 48
    row = await conn.fetchrow("SELECT * FROM operator_tokens")
    assert bytes(row["token_hash"]) == hashlib.sha256(issued.token.encode()).digest()
    stored = " ".join(str(value) for value in row.values())
    assert issued.token not in stored and issued.token[5:] not in stored
    for table in ("operators", "operator_tokens", "operator_audit"):
        dumped = await conn.fetchval(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
        assert issued.token[5:20] not in dumped, table
    assert 30 * DAY_S - 5 < (row["expires_at"] - row["created_at"]).total_seconds() <= 30 * DAY_S
    assert issued.info.label == "笔记本"


async def test_resolve_only_while_live_and_enabled(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="reviewer1", role="reviewer", provinces=["11"])
    issued = await operators.issue_token(conn, actor=ROOT, name="reviewer1", lifetime_s=DAY_S)
    digest = operators.token_digest(issued.token)
    found = await operators.resolve(conn, digest)
    assert found is not None
    assert found.operator == Operator("reviewer1", "reviewer", frozenset({"11"}), issued.info.id)
    assert await operators.resolve(conn, operators.token_digest(issued.token + "x")) is None

    await operators.update(conn, actor=ROOT, name="reviewer1", disabled=True)
    assert await operators.resolve(conn, digest) is None
    with pytest.raises(OperatorDisabled):
        await operators.issue_token(conn, actor=ROOT, name="reviewer1", lifetime_s=DAY_S)
    await operators.update(conn, actor=ROOT, name="reviewer1", disabled=False)
    assert await operators.resolve(conn, digest) is not None

    await conn.execute("UPDATE operator_tokens SET expires_at = now() - interval '1 second', "
                       "created_at = now() - interval '1 day'")
    assert await operators.resolve(conn, digest) is None

    second = await operators.issue_token(conn, actor=ROOT, name="reviewer1", lifetime_s=DAY_S)
    revoked = await operators.revoke_token(conn, actor=ROOT, name="reviewer1", token_id=second.info.id)
    assert revoked.revoked_at is not None
    assert await operators.resolve(conn, operators.token_digest(second.token)) is None
    again = await operators.revoke_token(conn, actor=ROOT, name="reviewer1", token_id=second.info.id)
    assert again.revoked_at == revoked.revoked_at  # revoking twice changes nothing
    with pytest.raises(TokenNotFound):
        await operators.revoke_token(conn, actor=ROOT, name="someone-else", token_id=second.info.id)
    assert [token.id for token in (await operators.get(conn, ROOT, "reviewer1")).tokens] == [issued.info.id]


async def test_token_lifetime_is_bounded(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="ops", role="operator", provinces=None)
    for lifetime_s in (59, 3651 * DAY_S):
        with pytest.raises(InvalidOperator):
            await operators.issue_token(conn, actor=ROOT, name="ops", lifetime_s=lifetime_s)
    assert await conn.fetchval("SELECT count(*) FROM operator_tokens") == 0


async def test_a_provincial_admin_manages_only_within_its_provinces(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="national", role="operator", provinces=None)
    await operators.create(conn, actor=ROOT, name="shanghai", role="reviewer", provinces=["31"])
    mine = await operators.create(conn, actor=NORTH, name="beijing", role="reviewer", provinces=["11"])
    assert mine.provinces == frozenset({"11"})
    with pytest.raises(OutOfScope):
        await operators.create(conn, actor=NORTH, name="everywhere", role="admin", provinces=None)
    with pytest.raises(OutOfScope):
        await operators.create(conn, actor=NORTH, name="hebei-sh", role="reviewer", provinces=["13", "31"])
    assert [r.name for r in await operators.list_operators(conn, NORTH)] == ["beijing"]
    for name in ("national", "shanghai"):
        with pytest.raises(OperatorNotFound):
            await operators.get(conn, NORTH, name)
        with pytest.raises(OperatorNotFound):
            await operators.update(conn, actor=NORTH, name=name, role="admin")
        with pytest.raises(OperatorNotFound):
            await operators.issue_token(conn, actor=NORTH, name=name, lifetime_s=DAY_S)
    with pytest.raises(OutOfScope):
        await operators.update(conn, actor=NORTH, name="beijing", provinces=None)  # widening to national
    widened = await operators.update(conn, actor=NORTH, name="beijing", provinces=["11", "12"])
    assert widened.provinces == frozenset({"11", "12"})
    assert [entry["operator"] for entry in await operators.audit(conn, NORTH, 50)] == ["beijing", "beijing"]
    assert len(await operators.audit(conn, ROOT, 50)) == 4


async def test_every_change_is_audited_with_who_what_and_whom(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="zhang", role="reviewer", provinces=["11"], display_name="张")
    await operators.update(conn, actor=NORTH, name="zhang", role="operator", provinces=["11", "12"])
    await operators.update(conn, actor=ROOT, name="zhang", role="operator")  # no change: not audited
    await operators.update(conn, actor=ROOT, name="zhang", disabled=True)
    await operators.update(conn, actor=ROOT, name="zhang", disabled=False)
    issued = await operators.issue_token(conn, actor=ROOT, name="zhang", lifetime_s=DAY_S, label="laptop")
    await operators.revoke_token(conn, actor=NORTH, name="zhang", token_id=issued.info.id)
    entries = await operators.audit(conn, ROOT, 50, "zhang")
    assert [(e["actor"], e["action"], e["operator"], e["token_id"], e["changes"]) for e in reversed(entries)] == [
        ("root", "create", "zhang", None, {"role": "reviewer", "provinces": ["11"], "display_name": "张"}),
        ("north-admin", "update", "zhang", None, {"role": {"old": "reviewer", "new": "operator"},
                                                  "provinces": {"old": ["11"], "new": ["11", "12"]}}),
        ("root", "update", "zhang", None, {"disabled": {"old": False, "new": True}}),
        ("root", "update", "zhang", None, {"disabled": {"old": True, "new": False}}),
        ("root", "token_issue", "zhang", issued.info.id,
         {"label": "laptop", "expires_at": entries[1]["changes"]["expires_at"]}),
        ("north-admin", "token_revoke", "zhang", issued.info.id, {"label": "laptop"}),
    ]
    assert all(entry["changed_at"].endswith("+08:00") for entry in entries)


async def test_last_use_is_written_at_most_once_per_interval(conn: asyncpg.Connection) -> None:
    await operators.create(conn, actor=ROOT, name="ops", role="operator", provinces=None)
    issued = await operators.issue_token(conn, actor=ROOT, name="ops", lifetime_s=DAY_S)
    await operators.touch(conn, issued.info.id, every_s=60)
    first = await conn.fetchval("SELECT last_used_at FROM operator_tokens")
    assert first is not None
    await operators.touch(conn, issued.info.id, every_s=60)
    assert await conn.fetchval("SELECT last_used_at FROM operator_tokens") == first
    await operators.touch(conn, issued.info.id, every_s=0)
    assert await conn.fetchval("SELECT last_used_at FROM operator_tokens") > first
