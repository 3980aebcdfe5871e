"""The SMS storm's watch: the SMS outbox in PostgreSQL, from the run's start until it has drained after the run.

The command reads the outbox where ``EXAMGATE_DATABASE_URL`` points and judges the drain against
``EXAMGATE_SMS_SEND_RATE``: the worker's settings (``make demo``'s, a test's), so run it with them.
Every time here is PostgreSQL's, as the outbox's own are.

1. ``before``: PostgreSQL's clock as the users start: the run's window opens.
2. ``after``, at once: what is waiting (queued or sending) and which of it is still queued — not
   claimed by a worker, so each of those is sent after this moment; the drain's bound from the
   count and the rate (``sms_verdicts.drain_bound_s``).
3. Every ``POLL_S``: what is waiting, until nothing is or twice the bound has passed (so a late
   drain says how late).
4. The queued ones of step 2: how many were sent or failed, and when the last was recorded (the
   measured rate: a record comes after its send, so it never overstates the rate).
5. The messages created since step 1, per phone: any less than the gateway's minimum interval
   after the phone's previous one.

What was seen is written to ``outbox.json`` beside the reports (the drain curve included).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from core import db
from loadtest.sms_verdicts import Drain, PhoneRecord, drain_bound_s, drained_at_rate, mask_phone, throttles_held
from loadtest.summary import Summary
from loadtest.verdicts import Verdict
from loadtest.watch import Check, WatchFailed

__all__ = ["INSERT_TOLERANCE_S", "OutboxWatch"]

POLL_S = 0.25
WATCH_FACTOR = 2.0  # the watch waits this many times the bound for the outbox to empty
# The gateway admits a send on its own clock, then inserts the message: created_at is PostgreSQL's clock a
# moment later, so two admitted sends exactly the interval apart may show a little less.
INSERT_TOLERANCE_S = 1.0

_ENDED = """
SELECT now() AS at, count(*) AS waiting,
       COALESCE(array_agg(id) FILTER (WHERE status = 'queued'), '{}') AS queued
  FROM sms_outbox WHERE status IN ('queued', 'sending')
"""

_WAITING = "SELECT now() AS at, count(*) AS waiting FROM sms_outbox WHERE status IN ('queued', 'sending')"

_QUEUED_DONE = """
SELECT count(*) AS done, count(*) FILTER (WHERE status = 'failed') AS failed,
       EXTRACT(EPOCH FROM max(COALESCE(sent_at, failed_at)) - $2)::float8 AS span_s
  FROM sms_outbox WHERE id = ANY($1::bigint[]) AND status IN ('sent', 'failed')
"""

# Messages created since $1 (and, to see a gap across the start, the interval $2 before), per phone.
_PHONES = """
WITH recent AS (
    SELECT phone, created_at,
           created_at - lag(created_at) OVER (PARTITION BY phone ORDER BY created_at, id) AS gap
      FROM sms_outbox WHERE created_at >= $1::timestamptz - make_interval(secs => $2)
)
SELECT count(*) AS messages, count(DISTINCT phone) AS phones,
       count(*) FILTER (WHERE gap < make_interval(secs => $3)) AS too_soon,
       EXTRACT(EPOCH FROM min(gap))::float8 AS closest_s,
       min(phone) FILTER (WHERE gap < make_interval(secs => $3)) AS example
  FROM recent WHERE created_at >= $1
"""


class OutboxWatch:
    """The outbox around one run (``loadtest.watch.RunWatch``)."""

    def __init__(self, dsn: str, shown_dsn: str, rate_per_s: float, min_interval_s: float) -> None:
        self.dsn = dsn
        self.shown_dsn = shown_dsn
        self.rate_per_s = rate_per_s
        self.min_interval_s = min_interval_s
        self.started: datetime | None = None

    @classmethod
    def from_settings(cls) -> OutboxWatch:
        """The watch of the outbox the settings name, judged against their send rate and the gateway's interval."""
        from gateway import config

        try:
            settings = config.load()
        except config.ConfigError as exc:
            raise WatchFailed(f"invalid configuration: {exc}") from None
        return cls(settings.database_url, str(settings.masked()["database_url"]), settings.sms_send_rate,
                   settings.sms_phone_interval_s)

    def _unreachable(self, exc: BaseException) -> str:
        return (f"cannot read the SMS outbox at {self.shown_dsn}: {exc!r} (the verdicts read it: run the command "
                "where EXAMGATE_DATABASE_URL reaches the gateway's PostgreSQL)")

    def before(self) -> None:
        """PostgreSQL's clock now: the run's window opens."""
        try:
            self.started = asyncio.run(self._now())
        except (OSError, asyncpg.PostgresError) as exc:
            raise WatchFailed(self._unreachable(exc)) from None

    async def _now(self) -> datetime:
        conn = await db.connect(self.dsn)
        try:
            found: datetime = await conn.fetchval("SELECT now()")
            return found
        finally:
            await conn.close()

    def after(self, out_dir: Path, echo: Callable[[str], None]) -> list[Check]:
        """Watch the outbox drain, read the run's messages per phone; the two verdicts."""
        if self.started is None:
            raise RuntimeError("after() without before()")
        try:
            drain, phones, curve = asyncio.run(self._observe(self.started, echo))
        except (OSError, asyncpg.PostgresError) as exc:
            failed = Verdict("sms drain", False, f"FAIL sms drain: {self._unreachable(exc)}")
            return [lambda _: failed]
        (out_dir / "outbox.json").write_text(json.dumps({
            "drain": drain._asdict(), "phones": phones._asdict(), "min_interval_s": self.min_interval_s,
            "insert_tolerance_s": INSERT_TOLERANCE_S, "waiting_curve": curve,
        }, indent=1))
        min_interval_s = self.min_interval_s

        def throttles(summary: Summary) -> Verdict:
            return throttles_held(summary, phones, min_interval_s, INSERT_TOLERANCE_S)

        return [throttles, lambda _: drained_at_rate(drain)]

    async def _observe(self, started: datetime,
                       echo: Callable[[str], None]) -> tuple[Drain, PhoneRecord, list[tuple[float, int]]]:
        conn = await db.connect(self.dsn)
        try:
            ended = await conn.fetchrow(_ENDED)
            assert ended is not None  # an aggregate always has its row
            at: datetime = ended["at"]
            waiting, queued_ids = int(ended["waiting"]), list(ended["queued"])
            bound_s = drain_bound_s(waiting, self.rate_per_s)
            if waiting:
                echo(f"watching the SMS outbox drain: {waiting:,} waiting ({len(queued_ids):,} queued), "
                     f"bound {bound_s:,.1f} s at {self.rate_per_s:g}/s")
            curve, emptied_s, left = await self._wait_empty(conn, at, waiting, bound_s * WATCH_FACTOR)
            done = await conn.fetchrow(_QUEUED_DONE, queued_ids, at)
            assert done is not None
            drain = Drain(self.rate_per_s, waiting, len(queued_ids), bound_s, emptied_s, left, int(done["done"]),
                          done["span_s"], int(done["failed"]))
            found = await conn.fetchrow(_PHONES, started, self.min_interval_s,
                                        self.min_interval_s - INSERT_TOLERANCE_S)
            assert found is not None
            example = found["example"]
            phones = PhoneRecord(int(found["messages"]), int(found["phones"]), int(found["too_soon"]),
                                 found["closest_s"], None if example is None else mask_phone(example))
            return drain, phones, curve
        finally:
            await conn.close()

    async def _wait_empty(self, conn: asyncpg.Connection, at: datetime, waiting: int,
                          watch_s: float) -> tuple[list[tuple[float, int]], float | None, int]:
        """Poll until nothing waits or ``watch_s`` passed: the curve (seconds, waiting), when it emptied, the rest."""
        curve: list[tuple[float, int]] = [(0.0, waiting)]
        deadline = time.monotonic() + watch_s
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            row: Any = await conn.fetchrow(_WAITING)
            waiting = int(row["waiting"])
            curve.append((round((row["at"] - at).total_seconds(), 3), waiting))
        return curve, (curve[-1][0] if not waiting else None), waiting
