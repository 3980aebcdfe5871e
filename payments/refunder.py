"""Sending refunds, run by the worker: every due refund goes to its provider, retried until it is done.

Every ``interval_s`` the worker claims due refunds (``payments.refunds.claim``: a lease, rows
another worker holds skipped), at most ``concurrency`` at a time, and for each:

- ``requested`` before (sent, its answer lost, or WeChat Pay still processing it) → asked about
  first (``ProviderClient.query_refund``); a provider that knows no such refund gets it sent;
- otherwise → the request recorded, then sent (``ProviderClient.refund``) under the refund's id,
  which the provider refunds once whatever the number of requests;
- the answer moves the refund: ``succeeded``; ``requested`` while WeChat Pay processes it (its
  notification, or a query after ``query_after_s``, ends it); ``failed``, sent again after a
  doubling wait until ``max_attempts`` sends were made, then left for an operator.

A refund due again while claimed rounds remain is taken in a later round of the same pass.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from core.errors import StorageUnavailable
from core.loops import pause, should_stop
from payments import refunds
from payments.clients import ProviderClient, RefundAnswer, RefundOrder
from payments.errors import PaymentError, ProviderRejected

log = logging.getLogger("examgate.payments.refunds")

LEASE_S = 120.0  # longer than a query and a send at the client's timeout, with room to record them
MAX_ROUNDS = 50  # rounds of ``concurrency`` refunds per pass: a backlog does not keep the task from its pause

# What the payer's statement shows (Alipay refund_reason, WeChat Pay reason).
REASON_TEXT = {
    "order_closed": "订单关闭后付款，全额退回",
    "order_expired": "订单过期后付款，全额退回",
    "second_payment": "同一订单重复付款，退回多付款项",
    "seat_released": "考点座位已满，付款全额退回",
    "cancellation": "放弃报名，报名费退回",
}
REGISTRATION_TEXT = "报名状态不可缴费，付款全额退回"


class RefundPolicy(NamedTuple):
    """How the worker sends refunds (from the settings)."""

    max_attempts: int
    retry_s: float
    query_after_s: float
    concurrency: int


@dataclass
class RefundReport:
    """What one pass did."""

    claimed: int = 0
    sent: int = 0
    succeeded: int = 0
    processing: int = 0
    failed: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def reason_text(reason: str) -> str:
    """The words the payer sees beside the refund."""
    return REASON_TEXT.get(reason, REGISTRATION_TEXT)


def _order(refund: refunds.Claimed) -> RefundOrder:
    return RefundOrder(provider=refund.provider, refund_id=refund.refund_id, order_no=refund.order_no,
                       trade_no=refund.trade_no, amount_fen=refund.amount_fen, total_fen=refund.total_fen,
                       reason=reason_text(refund.reason))


def _request(order: RefundOrder) -> dict[str, object]:
    """The request as the ledger keeps it."""
    method = "alipay.trade.refund" if order.provider == "alipay" else "POST /v3/refund/domestic/refunds"
    return {"method": method, "refund_id": order.refund_id, "order_no": order.order_no, "trade_no": order.trade_no,
            "amount_fen": order.amount_fen, "total_fen": order.total_fen, "reason": order.reason}


async def _answer(pool: asyncpg.Pool, refund: refunds.Claimed, answer: RefundAnswer, policy: RefundPolicy,
                  kind: str, report: RefundReport) -> None:
    error = None if answer.state != "failed" else f"{answer.status}: the provider ended the refund so"
    await refunds.record_answer(pool, refund, kind=kind, state=answer.state, status=answer.status,
                                provider_refund_no=answer.provider_refund_no, reply=answer.reply, error=error,
                                max_attempts=policy.max_attempts, retry_s=policy.retry_s,
                                query_after_s=policy.query_after_s)
    setattr(report, answer.state, getattr(report, answer.state) + 1)


async def _send(pool: asyncpg.Pool, client: ProviderClient, refund: refunds.Claimed, policy: RefundPolicy,
                report: RefundReport) -> None:
    order = _order(refund)
    attempt = await refunds.record_attempt(pool, refund, _request(order))
    if attempt is None:
        log.warning("refund %s: lease lost before sending; another worker has it", refund.refund_id)
        return
    report.sent += 1
    try:
        answer = await client.refund(order)
    except PaymentError as exc:
        error = f"{exc.code}: {exc.message}".rstrip(": ") if isinstance(exc, ProviderRejected) else str(exc)
        log.warning("refund %s (order %s, attempt %d) failed: %s", refund.refund_id, refund.order_no, attempt, error)
        await refunds.record_answer(pool, refund, kind="answer", state="failed", status=type(exc).__name__,
                                    provider_refund_no=None, reply={"error": str(exc)}, error=error,
                                    max_attempts=policy.max_attempts, retry_s=policy.retry_s,
                                    query_after_s=policy.query_after_s)
        report.failed += 1
        return
    log.info("refund %s (order %s, %d fen, attempt %d): %s", refund.refund_id, refund.order_no, refund.amount_fen,
             attempt, answer.status)
    await _answer(pool, refund, answer, policy, "answer", report)


async def _one(pool: asyncpg.Pool, client: ProviderClient, refund: refunds.Claimed, policy: RefundPolicy,
               report: RefundReport) -> None:
    if refund.status == "requested":  # sent before: ask first, so an answer already given is taken, not asked again
        try:
            known = await client.query_refund(_order(refund))
        except PaymentError as exc:
            await refunds.record_query_error(pool, refund, f"query: {exc}", retry_s=policy.retry_s)
            report.errors += 1
            return
        if known is not None:
            await _answer(pool, refund, known, policy, "query", report)
            return
    await _send(pool, client, refund, policy, report)


async def send_due(pool: asyncpg.Pool, client: ProviderClient, policy: RefundPolicy) -> RefundReport:
    """One pass: send (or ask about) every due refund, ``policy.concurrency`` at a time."""
    report = RefundReport()
    for _ in range(MAX_ROUNDS):
        claimed = await refunds.claim(pool, limit=policy.concurrency, lease_s=LEASE_S)
        report.claimed += len(claimed)

        async def guarded(refund: refunds.Claimed) -> None:
            try:
                await _one(pool, client, refund, policy, report)
            except (PaymentError, StorageUnavailable, OSError, asyncpg.PostgresError) as exc:  # taken again later
                report.errors += 1
                log.warning("refund %s not sent: %s", refund.refund_id, exc)

        await asyncio.gather(*(guarded(refund) for refund in claimed))
        if len(claimed) < policy.concurrency:
            break
    return report


async def run_refunder(pool: asyncpg.Pool, client: ProviderClient, policy: RefundPolicy, *, interval_s: float,
                       stop_event: asyncio.Event | None = None) -> None:
    """Send due refunds every ``interval_s`` until stopped (the worker's ``refunds`` task)."""
    while not should_stop(stop_event):
        report = await send_due(pool, client, policy)
        if report.claimed:
            log.info("refunds: %s", report.as_dict())
        await pause(interval_s, stop_event)
