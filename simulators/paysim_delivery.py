"""The payment simulator's notifier: send each notification until the merchant acknowledges it.

Retries follow each provider's published schedule, multiplied by the time scale so tests and
demos can compress hours into milliseconds. A network error counts as a failed attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode

import aiohttp

from core.timeutil import utcnow
from payments import alipay, wechat
from payments.keys import PaymentKeys
from simulators.paysim_trades import Delivery, SimTrade

log = logging.getLogger("examgate.paysim")

# Waits between attempts, in seconds: Alipay 4m 10m 10m 1h 2h 6h 15h (8 attempts in all);
# WeChat Pay 15s 15s 30s 3m 10m 20m 30m 30m 30m 60m 3h 3h 3h 6h 6h (16 attempts in all).
RETRY_SCHEDULES_S: dict[str, tuple[float, ...]] = {
    "alipay": (240, 600, 600, 3600, 7200, 21600, 54000),
    "wechat": (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600),
}
DELIVERY_TIMEOUT_S = 5.0
_REPLY_PREVIEW = 64


class Notifier:
    """Delivers notifications for the simulator over one HTTP session."""

    def __init__(self, keys: PaymentKeys, session: aiohttp.ClientSession, *, time_scale: float = 1.0,
                 timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        self.keys = keys
        self.session = session
        self.time_scale = time_scale
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def deliver(self, trade: SimTrade, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Wait ``delay_s``, then send and resend on the provider's schedule until acknowledged or out of attempts."""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        waits_s = (0.0, *RETRY_SCHEDULES_S[trade.provider])
        for wait_s in waits_s:
            if wait_s:
                await asyncio.sleep(wait_s * self.time_scale)
            if await self._attempt(trade, delivery):
                return
        delivery.gave_up = True
        log.warning("%s notification %s copy %d for order %s: no acknowledgement after %d attempts; giving up",
                    trade.provider, delivery.event_id, delivery.copy, trade.order_no, delivery.attempts)

    async def _attempt(self, trade: SimTrade, delivery: Delivery) -> bool:
        headers, body = self._message(trade)
        delivery.attempts += 1
        delivery.last_attempt_at = utcnow()
        try:
            async with self.session.post(trade.notify_url, data=body, headers=headers, timeout=self.timeout) as resp:
                status, reply = resp.status, (await resp.read()).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            delivery.last_status, delivery.last_error = None, str(exc) or type(exc).__name__
            log.info("%s notification %s copy %d for order %s, attempt %d: %s", trade.provider, delivery.event_id,
                     delivery.copy, trade.order_no, delivery.attempts, delivery.last_error)
            return False
        delivery.last_status, delivery.last_error = status, None
        delivery.acknowledged = acknowledged(trade.provider, status, reply)
        log.info("%s notification %s copy %d for order %s, attempt %d: HTTP %d %r -> %s", trade.provider,
                 delivery.event_id, delivery.copy, trade.order_no, delivery.attempts, status,
                 reply[:_REPLY_PREVIEW], "acknowledged" if delivery.acknowledged else "will retry")
        return delivery.acknowledged

    def _message(self, trade: SimTrade) -> tuple[dict[str, str], bytes]:
        """Headers and body of one attempt, signed now (resends carry the same event id)."""
        if trade.trade_no is None or trade.event_id is None:
            raise RuntimeError(f"order {trade.order_no} was never paid: nothing to notify")
        if trade.provider == "alipay":
            params = alipay.build_notification(
                order_no=trade.order_no, trade_no=trade.trade_no, amount_fen=trade.amount_fen, app_id=trade.app_id,
                seller_id=trade.merchant_id, status=trade.provider_status, notify_id=trade.event_id, keys=self.keys,
                subject=trade.subject, paid_at=trade.paid_at)
            return {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, urlencode(params).encode()
        return wechat.build_notification(
            order_no=trade.order_no, transaction_id=trade.trade_no, amount_fen=trade.amount_fen, app_id=trade.app_id,
            mch_id=trade.merchant_id, trade_state=trade.provider_status, event_id=trade.event_id, keys=self.keys,
            now=time.time(), paid_at=trade.paid_at, description=trade.subject)


def acknowledged(provider: str, status: int, reply: str) -> bool:
    """Whether the merchant's reply stops the resending: Alipay wants the body ``success``, WeChat a 200 or 204."""
    if provider == "alipay":
        return status == 200 and reply == alipay.REPLY_OK
    return status in (200, 204)
