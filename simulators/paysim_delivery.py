"""The payment simulator's notifier: send each notification until the merchant acknowledges it.

Payment notifications go to the trade's ``notify_url``; WeChat Pay's refund notifications
(``REFUND.SUCCESS`` …) to the ``notify_url`` of the refund request, on the same schedule.

Retries follow each provider's published schedule, multiplied by the time scale so tests and
demos can compress hours into milliseconds. A network error counts as a failed attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp

from core.timeutil import utcnow
from payments import alipay, wechat
from payments.keys import PaymentKeys
from simulators.paysim_trades import Delivery, SimRefund, SimTrade

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
        await self._deliver(trade.provider, trade.notify_url, lambda: self._message(trade), delivery,
                            f"order {trade.order_no}", delay_s)

    async def deliver_refund(self, refund: SimRefund, delivery: Delivery) -> None:
        """Send WeChat Pay's notification of ``refund`` (as it is now) until acknowledged or out of attempts."""
        def message() -> tuple[dict[str, str], bytes]:
            return wechat.build_refund_notification(refund.as_wechat(), mch_id=refund.merchant_id, keys=self.keys,
                                                    event_id=refund.event_id, now=time.time())

        await self._deliver(refund.provider, refund.notify_url, message, delivery, f"refund {refund.refund_no}")

    async def _deliver(self, provider: str, url: str, message: Callable[[], tuple[dict[str, str], bytes]],
                       delivery: Delivery, about: str, delay_s: float = 0.0) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        waits_s = (0.0, *RETRY_SCHEDULES_S[provider])
        for wait_s in waits_s:
            if wait_s:
                await asyncio.sleep(wait_s * self.time_scale)
            if await self._attempt(provider, url, message, delivery, about):
                return
        delivery.gave_up = True
        log.warning("%s notification %s copy %d for %s: no acknowledgement after %d attempts; giving up",
                    provider, delivery.event_id, delivery.copy, about, delivery.attempts)

    async def _attempt(self, provider: str, url: str, message: Callable[[], tuple[dict[str, str], bytes]],
                       delivery: Delivery, about: str) -> bool:
        headers, body = message()
        delivery.attempts += 1
        delivery.last_attempt_at = utcnow()
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=self.timeout) as resp:
                status, reply = resp.status, (await resp.read()).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            delivery.last_status, delivery.last_error = None, str(exc) or type(exc).__name__
            log.info("%s notification %s copy %d for %s, attempt %d: %s", provider, delivery.event_id,
                     delivery.copy, about, delivery.attempts, delivery.last_error)
            return False
        delivery.last_status, delivery.last_error = status, None
        delivery.acknowledged = acknowledged(provider, status, reply)
        log.info("%s notification %s copy %d for %s, attempt %d: HTTP %d %r -> %s", provider,
                 delivery.event_id, delivery.copy, about, delivery.attempts, status,
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
