"""The SMS outbox in PostgreSQL: templates, enqueue (by parameters or a rendered body), newest first, constraints."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from core import sms


def random_phone() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


def body(code: str = "123456") -> str:
    return sms.render("password_reset_code", code=code, minutes=5)


@pytest.mark.unit
def test_render_fills_the_reset_code_template() -> None:
    assert body() == "【考试报名】您的验证码为123456，5分钟内有效。如非本人操作，请忽略。"
    with pytest.raises(KeyError):
        sms.render("no_such_template")


@pytest.mark.unit
def test_templates_read_back_and_scrub() -> None:
    for name, template in sms.TEMPLATES.items():
        assert template.code.startswith("SMS_") and sms.template_fields(name) == ("code", "minutes")
        text = sms.render(name, code="654321", minutes=10)
        assert sms.params_from_body(name, text) == {"code": "654321", "minutes": "10"}
        params, scrubbed = sms.scrubbed(name, {"code": "654321", "minutes": "10"})
        assert params == {"code": sms.MASK, "minutes": "10"} and "654321" not in scrubbed and sms.MASK in scrubbed
    assert sms.params_from_body("password_reset_code", "别的短信") is None
    assert sms.scrubbed("gone_template", {"code": "1"}) == ({"code": "1"}, "（内容已清除）")


async def test_enqueue_then_read_newest_first(pg: asyncpg.Connection) -> None:
    phone = random_phone()
    first = await sms.enqueue(pg, phone, "password_reset_code", body("111111"))
    second = await sms.enqueue(pg, phone, "password_reset_code", params={"code": "222222", "minutes": 5})

    messages = await sms.outbox(pg, phone=phone)

    assert [m.id for m in messages] == [second, first]
    newest = messages[0]
    assert (newest.phone, newest.template, newest.body) == (phone, "password_reset_code", body("222222"))
    assert newest.sent_at is None and newest.attempts == 0 and newest.status == "queued" and newest.error is None
    assert messages[1].out_id != newest.out_id and len(newest.out_id) == 32
    stored = await pg.fetch("SELECT params FROM sms_outbox WHERE id = ANY($1::bigint[]) ORDER BY id", [first, second])
    assert [row["params"] for row in stored] == [{"code": "111111", "minutes": "5"}, {"code": "222222", "minutes": "5"}]
    assert newest.created_at.tzinfo is not None


async def test_outbox_filters_by_phone_and_limits(pg: asyncpg.Connection) -> None:
    mine, theirs = random_phone(), random_phone()
    ids = [await sms.enqueue(pg, mine, "password_reset_code", body(f"00000{i}")) for i in range(3)]
    other = await sms.enqueue(pg, theirs, "password_reset_code", body())

    assert [m.id for m in await sms.outbox(pg, phone=mine, limit=2)] == [ids[2], ids[1]]
    everyone = await sms.outbox(pg, limit=4)
    assert [m.id for m in everyone] == [other, ids[2], ids[1], ids[0]]
    assert await sms.outbox(pg, phone=random_phone()) == []


async def test_bad_input_is_refused(pg: asyncpg.Connection) -> None:
    with pytest.raises(ValueError, match="mobile"):
        await sms.enqueue(pg, "12345", "password_reset_code", body())
    with pytest.raises(ValueError):
        await sms.outbox(pg, limit=0)
    with pytest.raises(ValueError, match="unknown SMS template"):
        await sms.enqueue(pg, random_phone(), "Bad Template", "x")
    with pytest.raises(ValueError, match="not a text of template"):
        await sms.enqueue(pg, random_phone(), "password_reset_code", "别的短信")
    with pytest.raises(ValueError, match="needs minutes"):
        await sms.enqueue(pg, random_phone(), "password_reset_code", params={"code": "123456"})
    with pytest.raises(ValueError, match="disagree"):
        await sms.enqueue(pg, random_phone(), "password_reset_code", body("000000"), params={"code": "1", "minutes": 5})
    with pytest.raises(ValueError, match="give the template"):
        await sms.enqueue(pg, random_phone(), "password_reset_code")


async def test_outbox_rows_record_delivery(pg: asyncpg.Connection) -> None:
    phone = random_phone()
    message_id = await sms.enqueue(pg, phone, "password_reset_code", body())
    await pg.execute("""UPDATE sms_outbox SET status = 'sent', sent_at = now(), due_at = NULL, biz_id = '1^0',
                               attempts = attempts + 1 WHERE id = $1""", message_id)

    [message] = await sms.outbox(pg, phone=phone)
    assert message.sent_at is not None and message.attempts == 1 and (message.status, message.biz_id) == ("sent", "1^0")
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute("UPDATE sms_outbox SET attempts = -1 WHERE id = $1", message_id)
    with pytest.raises(asyncpg.CheckViolationError):  # sent means sent_at, and nothing due
        await pg.execute("UPDATE sms_outbox SET status = 'queued' WHERE id = $1", message_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute("UPDATE sms_outbox SET status = 'failed', sent_at = NULL WHERE id = $1", message_id)
