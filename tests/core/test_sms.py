"""The SMS outbox in PostgreSQL: enqueue, newest first, per phone, constraints."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from core import sms


def random_phone() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


def test_render_fills_the_reset_code_template() -> None:
    body = sms.render("password_reset_code", code="123456", minutes=5)
    assert body == "【考试报名】您的验证码为123456，5分钟内有效。如非本人操作，请忽略。"
    with pytest.raises(KeyError):
        sms.render("no_such_template")


async def test_enqueue_then_read_newest_first(pg: asyncpg.Connection) -> None:
    phone = random_phone()
    first = await sms.enqueue(pg, phone, "password_reset_code", "第一条")
    second = await sms.enqueue(pg, phone, "password_reset_code", "第二条")

    messages = await sms.outbox(pg, phone=phone)

    assert [m.id for m in messages] == [second, first]
    newest = messages[0]
    assert (newest.phone, newest.template, newest.body) == (phone, "password_reset_code", "第二条")
    assert newest.sent_at is None and newest.attempts == 0
    assert newest.created_at.tzinfo is not None


async def test_outbox_filters_by_phone_and_limits(pg: asyncpg.Connection) -> None:
    mine, theirs = random_phone(), random_phone()
    ids = [await sms.enqueue(pg, mine, "password_reset_code", f"消息{i}") for i in range(3)]
    other = await sms.enqueue(pg, theirs, "password_reset_code", "别人的")

    assert [m.id for m in await sms.outbox(pg, phone=mine, limit=2)] == [ids[2], ids[1]]
    everyone = await sms.outbox(pg, limit=4)
    assert [m.id for m in everyone] == [other, ids[2], ids[1], ids[0]]
    assert await sms.outbox(pg, phone=random_phone()) == []


async def test_bad_input_is_refused(pg: asyncpg.Connection) -> None:
    with pytest.raises(ValueError):
        await sms.enqueue(pg, "12345", "password_reset_code", "x")
    with pytest.raises(ValueError):
        await sms.outbox(pg, limit=0)
    with pytest.raises(asyncpg.CheckViolationError):
        await sms.enqueue(pg, random_phone(), "Bad Template", "x")
    with pytest.raises(asyncpg.CheckViolationError):
        await sms.enqueue(pg, random_phone(), "password_reset_code", "")


async def test_outbox_rows_record_delivery(pg: asyncpg.Connection) -> None:
    phone = random_phone()
    message_id = await sms.enqueue(pg, phone, "password_reset_code", "送达")
    await pg.execute("UPDATE sms_outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = $1", message_id)

    [message] = await sms.outbox(pg, phone=phone)
    assert message.sent_at is not None and message.attempts == 1
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute("UPDATE sms_outbox SET attempts = -1 WHERE id = $1", message_id)
