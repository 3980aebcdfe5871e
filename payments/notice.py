"""``Notice``: a verified payment notification, the same shape for every provider."""

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
