"""``Notice``: a verified payment notification, the same shape for every provider; ``RefundNotice`` for refunds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Notice:
    """What a provider told us about one trade, after its signature was checked."""

    provider: str  # "alipay" | "wechat"
    event_id: str  # alipay notify_id; wechat the notification's "id" (resends of one event share it)
    order_no: str  # our out_trade_no
    trade_no: str  # the provider's trade id (alipay trade_no, wechat transaction_id); "" if none yet
    amount_fen: int
    app_id: str
    merchant_id: str  # alipay seller_id; wechat mchid
    status: str  # the provider's raw status: TRADE_SUCCESS, WAIT_BUYER_PAY, … / SUCCESS, NOTPAY, …
    paid: bool  # True only for the provider's success statuses
    payload: dict[str, Any]  # what was received (wechat: with the resource decrypted), JSON-serialisable


@dataclass(frozen=True)
class RefundNotice:
    """What a provider said of one refund (WeChat Pay's REFUND.* notification), its signature checked."""

    provider: str  # "wechat" (Alipay answers a refund request at once and sends no such notification)
    event_id: str  # the notification's "id" (resends of one event share it)
    event_type: str  # REFUND.SUCCESS | REFUND.ABNORMAL | REFUND.CLOSED
    refund_no: str  # our out_refund_no: the refund's id here
    provider_refund_no: str  # the provider's refund_id
    order_no: str  # our out_trade_no
    trade_no: str  # the provider's transaction_id
    amount_fen: int  # refunded
    total_fen: int  # of the trade
    merchant_id: str  # mchid
    status: str  # SUCCESS | ABNORMAL | CLOSED (refund_status)
    payload: dict[str, Any]  # the notification, its resource decrypted, JSON-serialisable

    @property
    def succeeded(self) -> bool:
        """True when the money went back."""
        return self.status == "SUCCESS"
