"""The payment simulator's memory: trades by order number, refunds, and the deliveries of their notifications."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.timeutil import SHANGHAI, iso_local, utcnow
from payments.alipay import new_notify_id

OPEN, PAID, CLOSED = "open", "paid", "closed"

# What each provider calls the three states of a trade.
PROVIDER_STATUS = {
    "alipay": {OPEN: "WAIT_BUYER_PAY", PAID: "TRADE_SUCCESS", CLOSED: "TRADE_CLOSED"},
    "wechat": {OPEN: "NOTPAY", PAID: "SUCCESS", CLOSED: "CLOSED"},
}
# What a trade query says of a paid trade refunded in full: Alipay closes it, WeChat Pay says REFUND.
REFUNDED_STATUS = {"alipay": "TRADE_CLOSED", "wechat": "REFUND"}


@dataclass
class Delivery:
    """One notification copy on its way to the merchant, resent until acknowledged."""

    event_id: str
    copy: int  # 0 for the first copy of a payment, 1… for duplicates and later resends
    attempts: int = 0
    acknowledged: bool = False
    gave_up: bool = False
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    last_error: str | None = None  # network error of the last attempt
    last_attempt_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``GET /sim/orders/{order_no}``."""
        return {"event_id": self.event_id, "copy": self.copy, "attempts": self.attempts,
                "acknowledged": self.acknowledged, "gave_up": self.gave_up, "last_status": self.last_status,
                "last_error": self.last_error,
                "last_attempt_at": iso_local(self.last_attempt_at) if self.last_attempt_at else None}


@dataclass
class SimTrade:
    """A trade a merchant opened at the simulator."""

    provider: str
    order_no: str
    amount_fen: int
    app_id: str
    merchant_id: str  # alipay seller_id, wechat mchid
    subject: str
    notify_url: str
    state: str = OPEN
    trade_no: str | None = None  # allocated at the first payment
    event_id: str | None = None  # the payment event every notification of this trade carries
    created_at: datetime = field(default_factory=utcnow)
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    refunded_fen: int = 0  # refunds made (or being made) from this trade
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def provider_status(self) -> str:
        """The state in the provider's words (``TRADE_SUCCESS``, ``NOTPAY``, …), as its payment notification says."""
        return PROVIDER_STATUS[self.provider][self.state]

    @property
    def query_status(self) -> str:
        """The state a trade query reports: as ``provider_status``, but a paid trade refunded in full says so."""
        if self.state == PAID and self.refunded_fen >= self.amount_fen:
            return REFUNDED_STATUS[self.provider]
        return self.provider_status

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``GET /sim/orders/{order_no}``, with the delivery attempts."""
        last = max((d for d in self.deliveries if d.last_attempt_at), key=lambda d: d.last_attempt_at or utcnow(),
                   default=None)
        return {
            "order_no": self.order_no, "provider": self.provider, "app_id": self.app_id,
            "merchant_id": self.merchant_id, "amount_fen": self.amount_fen, "subject": self.subject,
            "notify_url": self.notify_url, "state": self.state, "status": self.provider_status,
            "trade_no": self.trade_no, "event_id": self.event_id,
            "created_at": iso_local(self.created_at),
            "paid_at": iso_local(self.paid_at) if self.paid_at else None,
            "closed_at": iso_local(self.closed_at) if self.closed_at else None,
            "refunded_fen": self.refunded_fen,
            "notifications": {
                "copies": len(self.deliveries),
                "attempts": sum(d.attempts for d in self.deliveries),
                "acknowledged": sum(d.acknowledged for d in self.deliveries),
                "last_status": last.last_status if last else None,
                "last_error": last.last_error if last else None,
            },
            "deliveries": [d.as_dict() for d in self.deliveries],
        }


class TradeBook:
    """Every trade the simulator knows, by order number (unique across both providers)."""

    def __init__(self) -> None:
        self._trades: dict[str, SimTrade] = {}
        self._by_trade_no: dict[str, SimTrade] = {}

    def __len__(self) -> int:
        return len(self._trades)

    def get(self, order_no: str, provider: str | None = None) -> SimTrade | None:
        """The trade of ``order_no`` (only if it belongs to ``provider``, when given)."""
        trade = self._trades.get(order_no)
        if trade is None or (provider is not None and trade.provider != provider):
            return None
        return trade

    def by_trade_no(self, trade_no: str, provider: str) -> SimTrade | None:
        """The trade the provider numbered ``trade_no`` (allocated when it was paid)."""
        trade = self._by_trade_no.get(trade_no)
        return trade if trade is not None and trade.provider == provider else None

    def open(self, trade: SimTrade) -> SimTrade:
        """Remember a new trade; the caller checked that the order number is free."""
        self._trades[trade.order_no] = trade
        return trade

    def mark_paid(self, trade: SimTrade) -> None:
        """Paid now (even if closed: a forced late payment); the trade number and event are allocated once."""
        if trade.trade_no is None:
            trade.trade_no = new_trade_no(trade.provider)
            trade.event_id = new_notify_id() if trade.provider == "alipay" else str(uuid.uuid4())
            trade.paid_at = utcnow()
            self._by_trade_no[trade.trade_no] = trade
        trade.state = PAID

    def mark_closed(self, trade: SimTrade) -> None:
        """Closed now (a paid trade stays paid: the caller refuses that)."""
        if trade.state == OPEN:
            trade.state, trade.closed_at = CLOSED, utcnow()


def new_trade_no(provider: str) -> str:
    """A 28-digit provider trade id: Alipay ``yyyyMMdd22001…``, WeChat ``4200…yyyyMMdd…``."""
    day = utcnow().astimezone(SHANGHAI).strftime("%Y%m%d")
    digits = "".join(secrets.choice("0123456789") for _ in range(16))
    return f"{day}22001{digits[:15]}" if provider == "alipay" else f"4200{day}{digits}"


def alipay_seller_id(app_id: str) -> str:
    """The seller (merchant PID) of an Alipay app: ``2088`` and twelve digits, the same for an app every time."""
    return "2088" + str(int(hashlib.sha256(app_id.encode()).hexdigest(), 16) % 10**12).zfill(12)


@dataclass
class SimRefund:
    """A refund a merchant asked for: one per refund number (Alipay out_request_no, WeChat out_refund_no)."""

    provider: str
    refund_no: str  # the merchant's id of the refund
    order_no: str
    trade_no: str
    merchant_id: str
    amount_fen: int
    total_fen: int
    reason: str
    notify_url: str  # WeChat Pay: where its REFUND.* notification goes ("" for none)
    refund_id: str = field(default_factory=lambda: new_refund_id())  # the provider's id of it
    status: str = "PROCESSING"  # WeChat's words: PROCESSING → SUCCESS; Alipay's refunds are SUCCESS at once
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # every notification of it carries this
    requests: int = 1  # how many times the merchant asked for it (the first made it; the others changed nothing)
    created_at: datetime = field(default_factory=utcnow)
    succeeded_at: datetime | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def succeed(self) -> None:
        """The money is back with the payer."""
        if self.status != "SUCCESS":
            self.status, self.succeeded_at = "SUCCESS", utcnow()

    def as_wechat(self) -> dict[str, Any]:
        """The refund as WeChat Pay v3 shows it (create and query replies, the notification's resource)."""
        from payments.wechat import refund

        return refund(out_refund_no=self.refund_no, refund_id=self.refund_id, order_no=self.order_no,
                      transaction_id=self.trade_no, amount_fen=self.amount_fen, total_fen=self.total_fen,
                      status=self.status, created_at=self.created_at, succeeded_at=self.succeeded_at)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``GET /sim/refunds``."""
        return {
            "provider": self.provider, "refund_no": self.refund_no, "refund_id": self.refund_id,
            "order_no": self.order_no, "trade_no": self.trade_no, "amount_fen": self.amount_fen,
            "total_fen": self.total_fen, "reason": self.reason, "status": self.status, "requests": self.requests,
            "notify_url": self.notify_url, "event_id": self.event_id, "created_at": iso_local(self.created_at),
            "succeeded_at": iso_local(self.succeeded_at) if self.succeeded_at else None,
            "notifications": {"copies": len(self.deliveries),
                              "acknowledged": sum(d.acknowledged for d in self.deliveries)},
            "deliveries": [d.as_dict() for d in self.deliveries],
        }


def new_refund_id(provider: str = "wechat") -> str:
    """A provider refund id: WeChat's are 29 digits starting 5030."""
    return "5030" + "".join(secrets.choice("0123456789") for _ in range(25))
