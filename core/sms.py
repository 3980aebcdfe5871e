"""The SMS outbox: text messages to candidates, written to PostgreSQL for the delivery workers to send.

Enqueuing a message is the whole interface the product uses: a row of ``sms_outbox`` names a
template and its parameters. The worker's delivery task (``messaging.delivery``) claims due
rows, sends each through the SMS provider (Alibaba Cloud SMS ``SendSms``: a template code and
its parameters, the provider renders the text) and records the outcome; ``examgate sms
outbox`` shows the rows. ``body`` is the text as rendered at enqueue, for operators; once a
message is finished (sent or failed) its secret parameters (the codes) are scrubbed from the
parameters and the body alike.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import asyncpg
import orjson

__all__ = [
    "MASK", "STATUSES", "TEMPLATES", "OutboxMessage", "Template", "enqueue", "outbox", "params_from_body", "render",
    "scrubbed", "template_fields",
]  # fmt: skip

STATUSES = ("queued", "sending", "sent", "failed")
MASK = "******"


class Template(NamedTuple):
    """One message the provider has approved: its template code there, its text, its secret fields."""

    code: str  # TemplateCode at the provider (SMS_…), approved with ``text``
    text: str  # ``str.format`` fields; the 【签名】 prefix is the provider's SignName, which carriers require
    secret: tuple[str, ...] = ("code",)  # fields scrubbed once the message is finished


# Template name → the approved template. A deployment whose provider account approved them under
# other codes says so in EXAMGATE_SMS_TEMPLATE_CODES (the delivery worker and the simulator read it).
TEMPLATES: dict[str, Template] = {
    "password_reset_code": Template(
        "SMS_465010001", "【考试报名】您的验证码为{code}，{minutes}分钟内有效。如非本人操作，请忽略。"),
    "register_code": Template(
        "SMS_465010002",
        "【考试报名】您正在注册考试报名账号，验证码为{code}，{minutes}分钟内有效。如非本人操作，请忽略。"),
    "change_phone_code": Template(
        "SMS_465010003",
        "【考试报名】您正在更换绑定的手机号码，验证码为{code}，{minutes}分钟内有效。如非本人操作，请忽略。"),
    "recover_username_code": Template(
        "SMS_465010004", "【考试报名】您正在找回用户名，验证码为{code}，{minutes}分钟内有效。如非本人操作，请忽略。"),
}

_PHONE = re.compile(r"1[3-9][0-9]{9}").fullmatch
MAX_LIMIT = 1000
_COLUMNS = "id, phone, template, body, created_at, sent_at, attempts, status, error, biz_id, out_id"


class OutboxMessage(NamedTuple):
    """One row of the outbox."""

    id: int
    phone: str
    template: str
    body: str
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    status: str = "queued"
    error: str | None = None
    biz_id: str | None = None  # the provider's message id once it accepted the message
    out_id: str = ""  # our idempotency key at the provider (OutId)


def _template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown SMS template {name!r}") from None


def template_fields(name: str) -> tuple[str, ...]:
    """The fields of a template's text, in order."""
    return tuple(field for _, field, _, _ in string.Formatter().parse(_template(name).text) if field)


def render(template: str, **fields: object) -> str:
    """The body of ``template`` with its fields filled in; KeyError for an unknown template."""
    return _template(template).text.format(**fields)


def params_from_body(template: str, body: str) -> dict[str, str] | None:
    """The parameters a body was rendered from (``render`` run backwards), None when it is not that template's."""
    pattern = "".join(re.escape(literal) + (f"(?P<{field}>.+?)" if field else "")
                      for literal, field, _, _ in string.Formatter().parse(_template(template).text))
    match = re.fullmatch(pattern, body, re.DOTALL)
    return None if match is None else match.groupdict()


def scrubbed(template: str, params: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The parameters and body of a finished message: its secret fields replaced by a mask."""
    known = TEMPLATES.get(template)
    secret = known.secret if known is not None else ()
    kept = {name: (MASK if name in secret else value) for name, value in params.items()}
    if known is None:
        return kept, "（内容已清除）"
    try:
        return kept, render(template, **kept)
    except (KeyError, IndexError):  # parameters that never matched the template (an old row)
        return kept, "（内容已清除）"


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool, phone: str, template: str, body: str | None = None, *,
                  params: Mapping[str, object] | None = None) -> int:
    """Add a message to the outbox, due now; return its id.

    Give the template's ``params`` (the body is rendered from them), or a ``body`` rendered by
    ``render`` (its parameters are read back from it). Raises ValueError for a phone that is not
    a mainland mobile number, an unknown template, missing parameters, or a body that is not the
    template's.
    """
    if not _PHONE(phone):
        raise ValueError(f"not a mainland mobile number: {phone!r}")
    if template not in TEMPLATES:
        raise ValueError(f"unknown SMS template {template!r}")
    if params is not None:
        values = {name: str(value) for name, value in params.items()}
        missing = set(template_fields(template)) - values.keys()
        if missing:
            raise ValueError(f"template {template} needs {', '.join(sorted(missing))}")
        rendered = render(template, **values)
        if body is not None and body != rendered:
            raise ValueError("body and params disagree")
        body = rendered
    elif body is not None:
        found = params_from_body(template, body)
        if found is None:
            raise ValueError(f"the body is not a text of template {template}")
        values = found
    else:
        raise ValueError("give the template's params (or a body rendered from them)")
    message_id = await conn.fetchval(
        "INSERT INTO sms_outbox (phone, template, body, params) VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id",
        phone, template, body, orjson.dumps(values).decode())
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
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sms_outbox ORDER BY id DESC LIMIT $1", limit)
    else:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sms_outbox WHERE phone = $1 ORDER BY id DESC LIMIT $2",
                                phone, limit)
    return [OutboxMessage(*row) for row in rows]
