"""What one gateway process needs for payments: keys, the provider client and the group committer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg

from core.scripts import ScriptClient
from payments import alipay, settle, wechat
from payments.clients import ProviderClient
from payments.errors import BadNotification, BadSignature
from payments.keys import PaymentKeys
from payments.orders import Order

log = logging.getLogger("examgate.payments")

# The WeChat Pay headers kept in the ledger with a rejected notification (never the whole request).
_WECHAT_HEADERS = ("Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial", "Wechatpay-Signature")


def expected(settings: Any) -> settle.Expected:
    """Our app and merchant ids at each provider, from the settings."""
    return settle.Expected(app_ids={"alipay": settings.alipay_app_id, "wechat": settings.wechat_app_id},
                           merchant_ids={"wechat": settings.wechat_mch_id})


class PaymentsRuntime:
    """Verifies notifications, settles them in groups, and opens trades at the provider."""

    def __init__(self, settings: Any, keys: PaymentKeys, pool: asyncpg.Pool, redis: ScriptClient,
                 client: ProviderClient | None = None) -> None:
        self.keys = keys
        self.client = client or ProviderClient(settings, keys)
        self.expected = expected(settings)
        self.committer = settle.GroupCommitter(
            lambda items: settle.settle(pool, redis, items, self.expected), settings.notify_group_max)

    async def aclose(self) -> None:
        await self.client.aclose()

    def verify_alipay(self, form: Mapping[str, str]) -> settle.Incoming:
        """An Alipay form as something to settle: the verified notice, or why it was rejected."""
        try:
            notice = alipay.parse_notification(form, self.keys)
        except BadSignature as exc:
            return settle.Incoming("alipay", None, exc.reason, dict(form))
        except BadNotification as exc:
            return settle.Incoming("alipay", None, exc.reason, dict(form))
        return settle.Incoming("alipay", notice, None, notice.payload)

    def verify_wechat(self, headers: Mapping[str, str], body: bytes) -> settle.Incoming:
        """A WeChat Pay v3 notification as something to settle (the payload kept is the decrypted transaction)."""
        try:
            notice = wechat.parse_notification(headers, body, self.keys)
        except (BadSignature, BadNotification) as exc:
            received = {"headers": {name: headers.get(name) for name in _WECHAT_HEADERS},
                        "body": body[:4096].decode("utf-8", errors="replace")}
            return settle.Incoming("wechat", None, exc.reason, received)
        return settle.Incoming("wechat", notice, None, notice.payload)

    async def create_trade(self, order: Order, subject: str) -> str:
        """The pay URL of ``order``'s trade at its provider (registered there now; repeating it is harmless)."""
        return await self.client.create_trade(order.provider, order.order_no, order.amount_fen, subject)
