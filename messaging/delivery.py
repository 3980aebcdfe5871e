"""The worker's SMS delivery task: claim due messages, send them at the shared rate, record what came of them.

Each pass:

1. claims up to ``batch_size`` due messages under a lease of ``lease_s`` (``outbox.claim``);
   the batch must be done, and recorded, before the lease ends, so no send starts later than
   ``lease_s - 2 × timeout_s`` after the claim (one not started goes back as it was);
2. sends them, ``concurrency`` at a time, each in a slot of the send rate every worker shares
   (``pace.Pacer``). A message that came back in doubt (its last claim may have sent it: the
   worker died, or the provider's answer was lost) is first looked up at the provider by its
   OutId; found, it is sent already and is not sent again;
3. records every outcome in one statement (``outbox.record``): ``sent`` with the provider's
   BizId; ``failed`` with the error (a permanent refusal, or ``max_attempts`` sends used up);
   else due again after ``retry_s × 2^(n-1)`` (at most ``retry_max_s``, times a random 0.5-1).
   A throttled answer waits the same way without spending an attempt, and the provider's
   throttling of the account pauses every worker for ``throttle_pause_s``. A send that may
   have reached the provider stays ``sending`` (in doubt), due no sooner than ``timeout_s``:
   by then a provider that was still working on it has answered it, and the look-up sees it.
   A finished message's secret parameters are scrubbed.

Exactly once: two workers never hold one row (``FOR UPDATE SKIP LOCKED`` and the lease); a row
is sent again only after the provider said it did not take it, or a look-up did not find it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

import asyncpg
import redis.asyncio as aioredis

from core import sms
from core.loops import pause, should_stop
from core.redis import REDIS_DOWN
from core.timeutil import SHANGHAI, utcnow
from messaging import outbox, stats
from messaging.outbox import Claimed, Outcome
from messaging.pace import Pacer
from messaging.sender import Accepted, Outgoing, Permanent, Retryable, Sender

__all__ = ["DeliveryPolicy", "DeliveryReport", "backoff_s", "deliver_batch", "lookup_days", "run_delivery"]

log = logging.getLogger("examgate.sms")

THROTTLED_MAX_FACTOR = 4  # a message throttled this many times its max_attempts is failed (a number that never clears)
PUBLISH_EVERY_S = 1.0  # an idle worker says its (falling) rate this often


class DeliveryPolicy(NamedTuple):
    """How the workers send (from the settings)."""

    send_rate_per_s: float  # every worker together
    concurrency: int  # sends in flight per worker
    batch_size: int  # messages claimed at once
    max_attempts: int  # sends per message before it is failed
    retry_s: float  # wait before the first retry; doubled at each further one
    retry_max_s: float
    lease_s: float  # a claim's lease
    timeout_s: float  # one provider call
    throttle_pause_s: float  # every worker pauses this long when the provider throttles the account
    poll_interval_s: float  # how often an idle worker looks for due messages
    template_codes: Mapping[str, str] = {}  # template name → the provider's code, where not the built-in one


@dataclass
class DeliveryReport:
    """What one batch did, by outcome (``stats.OUTCOMES``) and bookkeeping."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    released: int = 0  # left unsent: the lease would have ended
    lease_lost: int = 0  # outcomes not written: another worker holds the rows now


def backoff_s(policy: DeliveryPolicy, retry: int, rng: random.Random | None = None) -> float:
    """The wait before retry number ``retry`` (1: the first): doubling from ``retry_s``, capped, jittered 0.5-1."""
    delay = min(policy.retry_max_s, policy.retry_s * 2 ** min(retry - 1, 30))
    return delay * (0.5 + 0.5 * (rng or random).random())


def lookup_days(last_attempt_at: datetime | None, lease_s: float, today: date | None = None) -> list[date]:
    """The provider's dates (Asia/Shanghai) a send made by the claim at ``last_attempt_at`` can carry."""
    moment = last_attempt_at or utcnow()
    today = today or utcnow().astimezone(SHANGHAI).date()
    spread = timedelta(seconds=lease_s)
    days = {(moment + offset).astimezone(SHANGHAI).date() for offset in (-spread, timedelta(0), spread)}
    return sorted(day for day in days if day <= today) or [today]


class _Batch:
    """One claimed batch: its lease, its deadline and the outcomes as they come."""

    def __init__(self, policy: DeliveryPolicy, sender: Sender, pacer: Pacer, lease_id: str, deadline: float) -> None:
        self.policy = policy
        self.sender = sender
        self.pacer = pacer
        self.lease_id = lease_id
        self.deadline = deadline
        self.report = DeliveryReport()

    def _late(self) -> bool:
        return time.monotonic() > self.deadline

    def _finished(self, message: Claimed, status: str, **fields: object) -> Outcome:
        params, body = sms.scrubbed(message.template, message.params)
        self.report.outcomes[status] += 1
        return Outcome(message.id, status, params=params, body=body, **fields)  # type: ignore[arg-type]

    def _released(self, message: Claimed) -> Outcome:
        self.report.released += 1
        return Outcome(message.id, "sending" if message.in_doubt else "queued")

    async def deliver(self, message: Claimed) -> Outcome:
        """Look the message up if in doubt, then send it: its outcome."""
        if self._late():
            return self._released(message)
        if message.in_doubt:
            self.report.outcomes["looked_up"] += 1
            try:
                async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                    found = await self.sender.find(message.phone, message.out_id,
                                                   lookup_days(message.last_attempt_at, self.policy.lease_s))
            except TimeoutError:
                return self._released(message)
            if found is True:
                self.report.outcomes["found"] += 1
                log.info("sms %d was sent before (found at the provider by OutId %s); not sent again",
                         message.id, message.out_id)
                return self._finished(message, "sent", attempts=0 if message.attempts else 1)
            if isinstance(found, Retryable):
                return self._retry(message, found._replace(ambiguous=True), attempted=False)
        return await self._send(message)

    async def _send(self, message: Claimed) -> Outcome:
        template = sms.TEMPLATES.get(message.template)
        if template is None:
            return self._finished(message, "failed", error=f"template_unknown: no template {message.template!r}")
        params = message.params
        if not params and sms.template_fields(message.template):  # a row enqueued by an older release
            params = sms.params_from_body(message.template, message.body) or {}
        code = self.policy.template_codes.get(message.template, template.code)
        await self.pacer.take()
        if self._late():
            return self._released(message)
        result = await self.sender.send(Outgoing(message.phone, code, params, message.out_id))
        if isinstance(result, Accepted):
            return self._finished(message, "sent", attempts=1, biz_id=result.biz_id or None)
        if isinstance(result, Permanent):
            log.warning("sms %d to %s failed for good: %s %s", message.id, message.phone, result.code, result.message)
            return self._finished(message, "failed", attempts=1, error=f"{result.code}: {result.message}")
        if result.throttle == "account":
            await self.pacer.pause(self.policy.throttle_pause_s)
        return self._retry(message, result, attempted=True)

    def _retry(self, message: Claimed, result: Retryable, *, attempted: bool) -> Outcome:
        error = f"{result.code}: {result.message}"
        state = "sending" if result.ambiguous else "queued"  # in doubt: looked up before it is sent again
        if result.throttle is not None:
            throttled = message.throttled + 1
            if throttled >= self.policy.max_attempts * THROTTLED_MAX_FACTOR:
                return self._finished(message, "failed", throttled=1, error=f"throttled {throttled} times: {error}")
            self.report.outcomes["throttled"] += 1
            return Outcome(message.id, state, backoff_s(self.policy, throttled), throttled=1, error=error,
                           attempted=attempted)
        sends = message.attempts + 1
        if sends >= self.policy.max_attempts:
            maybe = " (may have reached the provider)" if result.ambiguous else ""
            return self._finished(message, "failed", attempts=1, attempted=attempted,
                                  error=f"{sends} attempts: {error}{maybe}")
        self.report.outcomes["retried"] += 1
        wait_s = backoff_s(self.policy, sends)
        if result.ambiguous:
            wait_s = max(wait_s, self.policy.timeout_s)
        return Outcome(message.id, state, wait_s, attempts=1, error=error, attempted=attempted)


async def deliver_batch(pool: asyncpg.Pool, sender: Sender, pacer: Pacer, policy: DeliveryPolicy, *,
                        worker_id: str) -> DeliveryReport:
    """Claim one batch, send it, record it (see the module's docstring)."""
    lease_id = f"{worker_id}:{secrets.token_hex(4)}"
    deadline = time.monotonic() + policy.lease_s - 2 * policy.timeout_s  # measured before the claim: conservative
    claimed = await outbox.claim(pool, limit=policy.batch_size, lease_s=policy.lease_s, lease_id=lease_id)
    batch = _Batch(policy, sender, pacer, lease_id, deadline)
    batch.report.claimed = len(claimed)
    if not claimed:
        return batch.report
    gate = asyncio.Semaphore(policy.concurrency)

    async def one(message: Claimed) -> Outcome:
        async with gate:
            try:
                return await batch.deliver(message)
            except Exception:  # a bug must not lose the batch's other outcomes; this one stays in doubt
                log.exception("sms %d: delivery failed unexpectedly; it will be looked up before a resend", message.id)
                return Outcome(message.id, "sending", policy.lease_s)

    outcomes = await asyncio.gather(*(one(message) for message in claimed))
    written = await outbox.record(pool, lease_id, outcomes)
    if written < len(outcomes):
        batch.report.lease_lost = len(outcomes) - written
        log.warning("sms batch %s: %d outcomes not recorded, the lease had passed to another worker "
                    "(it looks them up before sending)", lease_id, batch.report.lease_lost)
    return batch.report


async def run_delivery(pool: asyncpg.Pool, redis: aioredis.Redis, sender: Sender, policy: DeliveryPolicy, *,
                       worker_id: str, stop_event: asyncio.Event | None = None) -> None:
    """Deliver due messages until stopped (the worker's ``sms-delivery`` task); publish figures as it goes."""
    pacer = Pacer(redis, policy.send_rate_per_s)
    meter = stats.RateMeter()
    unpublished: Counter[str] = Counter()
    published_at = 0.0
    while not should_stop(stop_event):
        try:
            report = await deliver_batch(pool, sender, pacer, policy, worker_id=worker_id)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:  # the rows' leases lapse: looked up
            log.warning("sms delivery: PostgreSQL unavailable (%r); trying again", exc)
            await pause(policy.poll_interval_s, stop_event)
            continue
        if report.claimed:
            log.info("sms batch: %d claimed; %s; %d released, %d lease lost", report.claimed,
                     ", ".join(f"{name} {count}" for name, count in sorted(report.outcomes.items())) or "no outcome",
                     report.released, report.lease_lost)
        meter.add(report.outcomes["sent"] - report.outcomes["found"])
        unpublished.update(report.outcomes)
        if unpublished or time.monotonic() - published_at >= PUBLISH_EVERY_S:  # idle: the rate, once a second
            try:
                await stats.publish(redis, worker_id, unpublished, meter.rate_per_s())
                unpublished.clear()
                published_at = time.monotonic()
            except REDIS_DOWN as exc:
                log.debug("sms figures not published: %r", exc)
        if report.claimed < policy.batch_size:
            await pause(policy.poll_interval_s, stop_event)
