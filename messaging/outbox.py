"""The delivery workers' side of the SMS outbox (``core.sms`` writes it): claim due messages, record what came of them.

``claim`` takes due rows with ``FOR UPDATE SKIP LOCKED`` — two workers never take the same row —
and leases them in the same statement: status ``sending``, ``due_at`` the lease's end, ``lease_id``
the claim's. A row stays ``sending`` until its outcome is recorded, so a worker killed mid-batch
leaves its rows to be claimed again once their lease has lapsed, and such a row comes back
``in_doubt``: it may have been sent. ``record`` writes a batch's outcomes in one statement, only
for rows still under the claim's lease (a worker that lost its lease records nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

__all__ = ["Claimed", "Outcome", "claim", "record"]

_CLAIM = """
WITH due AS (
    SELECT id, status FROM sms_outbox
     WHERE status IN ('queued', 'sending') AND due_at <= now()
     ORDER BY due_at, id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE sms_outbox o
   SET status = 'sending', due_at = now() + make_interval(secs => $2), lease_id = $3,
       last_attempt_at = CASE WHEN due.status = 'queued' THEN now() ELSE o.last_attempt_at END
  FROM due
 WHERE o.id = due.id
RETURNING o.id, o.phone, o.template, o.params::text AS params, o.body, o.out_id, o.attempts, o.throttled,
          due.status = 'sending' AS in_doubt, o.last_attempt_at
"""

# One row per outcome: the new status; the wait before it is due again (null: finished); what to add
# to attempts and throttled; the BizId and error; scrubbed params and body (null: unchanged); whether
# this claim may have sent it (the in-doubt look-up then searches around now).
_RECORD = """
UPDATE sms_outbox o
   SET status = v.status,
       due_at = CASE WHEN v.status IN ('queued', 'sending') THEN now() + make_interval(secs => v.due_in_s) END,
       lease_id = NULL,
       attempts = o.attempts + v.attempts,
       throttled = o.throttled + v.throttled,
       biz_id = COALESCE(v.biz_id, o.biz_id),
       error = v.error,
       sent_at = CASE WHEN v.status = 'sent' THEN now() END,
       failed_at = CASE WHEN v.status = 'failed' THEN now() END,
       params = COALESCE(v.params::jsonb, o.params),
       body = COALESCE(v.body, o.body),
       last_attempt_at = CASE WHEN v.attempted THEN now() ELSE o.last_attempt_at END
  FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[],
              $9::text[], $10::bool[])
       AS v(id, status, due_in_s, attempts, throttled, biz_id, error, params, body, attempted)
 WHERE o.id = v.id AND o.lease_id = $11 AND o.status = 'sending'
"""


class Claimed(NamedTuple):
    """One message claimed for sending."""

    id: int
    phone: str
    template: str
    params: dict[str, str]
    body: str
    out_id: str
    attempts: int  # sends recorded before this claim
    throttled: int  # throttled answers recorded before this claim
    in_doubt: bool  # it was sending when claimed: a send may have reached the provider
    last_attempt_at: datetime | None  # when the claim that may have sent it was made (in doubt) or this claim


class Outcome(NamedTuple):
    """What to record of one claimed message."""

    id: int
    status: str  # queued, sending (in doubt), sent, failed
    due_in_s: float = 0.0  # queued or sending: due again this long from now
    attempts: int = 0  # sends to add
    throttled: int = 0
    biz_id: str | None = None
    error: str | None = None
    params: Mapping[str, str] | None = None  # scrubbed parameters once finished
    body: str | None = None  # scrubbed body once finished
    attempted: bool = False  # this claim may have sent it


async def claim(pg: asyncpg.Pool | asyncpg.Connection, *, limit: int, lease_s: float,
                lease_id: str) -> list[Claimed]:
    """Lease up to ``limit`` due messages (oldest due first) for ``lease_s`` under ``lease_id``."""
    rows = await pg.fetch(_CLAIM, limit, lease_s, lease_id)
    return [Claimed(row["id"], row["phone"], row["template"], _params(row["params"]), row["body"], row["out_id"],
                    row["attempts"], row["throttled"], row["in_doubt"], row["last_attempt_at"]) for row in rows]


def _params(raw: str) -> dict[str, str]:
    loaded: Any = orjson.loads(raw)
    return {str(name): str(value) for name, value in loaded.items()} if isinstance(loaded, dict) else {}


async def record(pg: asyncpg.Pool | asyncpg.Connection, lease_id: str, outcomes: Sequence[Outcome]) -> int:
    """Write ``outcomes`` of rows still leased under ``lease_id``; how many were written."""
    if not outcomes:
        return 0
    done = await pg.execute(
        _RECORD, [o.id for o in outcomes], [o.status for o in outcomes], [o.due_in_s for o in outcomes],
        [o.attempts for o in outcomes], [o.throttled for o in outcomes], [o.biz_id for o in outcomes],
        [None if o.error is None else o.error[:500] for o in outcomes],
        [None if o.params is None else orjson.dumps(dict(o.params)).decode() for o in outcomes],
        [o.body for o in outcomes], [o.attempted for o in outcomes], lease_id)
    return int(done.split()[-1])
