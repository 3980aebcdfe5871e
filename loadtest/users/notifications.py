"""Payment-notification flood: orders opened through the API, then the providers' signed notifications for them.

Each order is notified once and then resent, byte for byte the same event, as providers do when an
answer is slow; every copy must be acknowledged (Alipay ``success``, WeChat Pay 204) and only the
first settles anything. The notifications are signed with the providers' keys from ``--keys-dir``.
"""

from __future__ import annotations

import functools
import secrets
import uuid
from datetime import datetime
from typing import NamedTuple
from urllib.parse import urlencode

import gevent
from locust import task
from locust.exception import RescheduleTask

from core.timeutil import utcnow
from loadtest.users.enrolment import EnrollingUser, Order
from payments import alipay, wechat
from payments import keys as payment_keys
from payments.keys import PaymentKeys

RESENDS = 3  # copies after the first: how often a slow answer makes a provider resend
ALIPAY_SELLER_ID = "2088000000000001"


@functools.lru_cache(maxsize=4)
def provider_keys(keys_dir: str) -> PaymentKeys:
    """The providers' keys, read once per process."""
    return payment_keys.load(keys_dir)


class Event(NamedTuple):
    """One provider event: resends carry the same ids and payment time."""

    event_id: str
    trade_no: str
    paid_at: datetime

    @classmethod
    def paying(cls, order: Order) -> Event:
        """A new payment event for ``order``."""
        if order.provider == "alipay":
            return cls(alipay.new_notify_id(), f"{utcnow():%Y%m%d}{secrets.randbelow(10**20):020d}", utcnow())
        return cls(str(uuid.uuid4()), f"42{secrets.randbelow(10**26):026d}", utcnow())


class NotificationFloodUser(EnrollingUser):
    """A payment provider's notifier, with the candidates whose orders it notifies."""

    weight = 1

    @task
    def notify_order(self) -> None:
        """Open an order as a candidate, then post its notification and the resends."""
        if not self.sign_in():
            return
        try:
            order = self.enrol_to_order()
        except RescheduleTask:
            self.sign_out()
            raise
        self.sign_out()
        if order is None:
            return
        event = Event.paying(order)
        for _ in range(1 + RESENDS):
            self.notify(order, event)
            gevent.sleep(self.think_s() / 4)  # providers' resends come quickly under load

    def notify(self, order: Order, event: Event) -> None:
        """Post one signed notification of ``event``; due: acknowledged."""
        keys = provider_keys(self.knobs.keys_dir)
        if order.provider == "alipay":
            form = alipay.build_notification(
                order_no=order.order_no, trade_no=event.trade_no, amount_fen=order.amount_fen,
                app_id=self.knobs.alipay_app_id, seller_id=ALIPAY_SELLER_ID, notify_id=event.event_id,
                keys=keys, paid_at=event.paid_at)
            self.call("POST", "/api/v1/payments/notify/alipay", name="/api/v1/payments/notify/alipay",
                      data=urlencode(form).encode(), retries=1,
                      headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                      check=lambda resp, _: None if resp.text == alipay.REPLY_OK else f"answered {resp.text[:40]!r}")
            return
        headers, body = wechat.build_notification(
            order_no=order.order_no, transaction_id=event.trade_no, amount_fen=order.amount_fen,
            app_id=self.knobs.wechat_app_id, mch_id=self.knobs.wechat_mch_id, event_id=event.event_id,
            keys=keys, paid_at=event.paid_at)
        self.call("POST", "/api/v1/payments/notify/wechat", name="/api/v1/payments/notify/wechat", due=(204,),
                  data=body, headers=headers, retries=1)
