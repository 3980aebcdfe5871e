"""The SMS outbox: text messages to candidates, written to PostgreSQL for a delivery worker to send.

examgate never talks to an SMS gateway. Enqueuing a message is the whole interface: a
delivery worker (or an operator reading ``examgate sms outbox``) takes rows from the
``sms_outbox`` table, sends them and records ``sent_at`` and ``attempts``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

import asyncpg

__all__ = ["TEMPLATES", "OutboxMessage", "enqueue", "outbox", "render"]

# Template name → body with ``str.format`` fields. The 【签名】 prefix is what Chinese
# carriers require at the start of every application SMS.
TEMPLATES: dict[str, str] = {
    "password_reset_code": "【考试报名】您的验证码为{code}，{minutes}分钟内有效。如非本人操作，请忽略。",
}

_PHONE = re.compile(r"1[3-9][0-9]{9}").fullmatch
MAX_LIMIT = 1000


class OutboxMessage(NamedTuple):
    """One row of the outbox."""

    id: int
    phone: str
    template: str
    body: str
    created_at: datetime
    sent_at: datetime | None
    attempts: int


def render(template: str, **fields: object) -> str:
    """The body of ``template`` with its fields filled in; KeyError for an unknown template."""
    return TEMPLATES[template].format(**fields)


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool, phone: str, template: str, body: str) -> int:
    """Add a message to the outbox (unsent, no attempts yet); return its id."""
    if not _PHONE(phone):
        raise ValueError(f"not a mainland mobile number: {phone!r}")
    message_id = await conn.fetchval(
        "INSERT INTO sms_outbox (phone, template, body) VALUES ($1, $2, $3) RETURNING id", phone, template, body
    )
    return int(message_id)


async def outbox(
    conn: asyncpg.Connection | asyncpg.Pool, *, phone: str | None = None, limit: int = 50
) -> list[OutboxMessage]:
    """The newest ``limit`` messages, newest first; only those to ``phone`` when given."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    # Two statements rather than "$1 IS NULL OR phone = $1": a prepared statement's generic
    # plan for the combined form cannot use the phone index.
    if phone is None:
        rows = await conn.fetch(
            """SELECT id, phone, template, body, created_at, sent_at, attempts
               FROM sms_outbox ORDER BY id DESC LIMIT $1""",
            limit,
        )
    else:
        rows = await conn.fetch(
            """SELECT id, phone, template, body, created_at, sent_at, attempts
               FROM sms_outbox WHERE phone = $1 ORDER BY id DESC LIMIT $2""",
            phone,
            limit,
        )
    return [OutboxMessage(*row) for row in rows]
