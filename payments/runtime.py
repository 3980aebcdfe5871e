"""What one gateway process needs for payments: keys, provider client, group committer, rejection sampler,
and the verification of refund notifications."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import asyncpg

from core.scripts import ScriptClient
from payments import alipay, rejections, settle, wechat
from payments.clients import ProviderClient
from payments.errors import BadNotification, BadSignature
from payments.keys import MerchantKeys
from payments.notice import RefundNotice
from payments.orders import Order
from payments.seats import Seats

log = logging.getLogger("examgate.payments")

# The WeChat Pay headers kept in the ledger with a rejected notification (never the whole request).
_WECHAT_HEADERS = ("Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial", "Wechatpay-Signature")


def expected(settings: Any) -> settle.Expected:
    """Our app and merchant ids at each provider (Alipay's seller id, WeChat's mchid), from the settings."""
    return settle.Expected(app_ids={"alipay": settings.alipay_app_id, "wechat": settings.wechat_app_id},
                           merchant_ids={"alipay": settings.alipay_seller_id, "wechat": settings.wechat_mch_id})


class PaymentsRuntime:
    """Verifies notifications, settles them in groups, and opens trades at the provider."""

    def __init__(self, settings: Any, keys: MerchantKeys, pool: asyncpg.Pool, redis: ScriptClient,
                 client: ProviderClient | None = None, *, seats: Seats) -> None:
        self.seats = seats  # the seat holds (queueing.seats.HoldSeats), handed in by the gateway
        self.keys = keys
        self.client = client or ProviderClient(settings, keys)
        self.expected = expected(settings)
        self.committer = settle.GroupCommitter(
            lambda items: settle.settle(pool, self.seats, items, self.expected), settings.notify_group_max)
        self.rejections = rejections.RejectionSampler(settings.notify_rejected_interval_s,
                                                      settings.notify_rejected_rows_max)

    async def aclose(self) -> None:
        await self.client.aclose()

    def verify_alipay_body(self, body: bytes, sender: str = "") -> settle.Incoming:
        """An Alipay notification as posted (a form-encoded body) as something to settle."""
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return self._rejected("alipay", "malformed_body", body, sender)
        return self.verify_alipay(form, body=body, sender=sender)

    def verify_alipay(self, form: Mapping[str, str], *, body: bytes | None = None,
                      sender: str = "") -> settle.Incoming:
        """An Alipay form as something to settle: the verified notice, or why it was rejected.

        A rejected one carries the summary of ``body`` (the form encoded again when not given).
        """
        try:
            notice = alipay.parse_notification(form, self.keys)
        except (BadSignature, BadNotification) as exc:
            return self._rejected("alipay", exc.reason, urlencode(form).encode() if body is None else body, sender)
        return settle.Incoming("alipay", notice, None, notice.payload)

    def verify_wechat(self, headers: Mapping[str, str], body: bytes, sender: str = "") -> settle.Incoming:
        """A WeChat Pay v3 notification as something to settle (the payload kept is the decrypted transaction)."""
        try:
            notice = wechat.parse_notification(headers, body, self.keys)
        except (BadSignature, BadNotification) as exc:
            return self._rejected("wechat", exc.reason, body, sender,
                                  {name: headers.get(name) for name in _WECHAT_HEADERS})
        return settle.Incoming("wechat", notice, None, notice.payload)

    def verify_wechat_refund(self, headers: Mapping[str, str], body: bytes) -> RefundNotice | str:
        """A WeChat Pay refund notification: the verified notice, or the reason it failed verification."""
        try:
            return wechat.parse_refund_notification(headers, body, self.keys)
        except (BadSignature, BadNotification) as exc:
            return exc.reason

    def _rejected(self, provider: str, reason: str, body: bytes, sender: str,
                  headers: Mapping[str, str | None] | None = None) -> settle.Incoming:
        """A failed verification: its summary when the sampler records it, else only counted (``record`` False)."""
        unrecorded_before = self.rejections.admit(provider, reason, sender)
        if unrecorded_before is None:
            return settle.Incoming(provider, None, reason, {}, record=False)
        return settle.Incoming(provider, None, reason, rejections.summary(
            body, sender, unrecorded_before=unrecorded_before, headers=headers))

    async def create_trade(self, order: Order, subject: str) -> str:
        """The pay URL of ``order``'s trade at its provider (registered there now; repeating it is harmless)."""
        return await self.client.create_trade(order.provider, order.order_no, order.amount_fen, subject)
