"""Merchant side of the provider APIs: create, query and close trades, and refund them, at Alipay and WeChat Pay.

Every request is signed as the real API requires (Alipay common parameters + RSA2 by our app
key; WeChat ``Authorization: WECHATPAY2-SHA256-RSA2048`` by our merchant key) and every reply's
signature is checked against the platform key before it is believed. Each provider is reached at
its own base URL (``alipay_url`` + ``/gateway.do``, ``wechat_url`` + ``/v3/…``): the simulator's
by default, the real providers' in production.

A refund is sent under our refund id (Alipay ``out_request_no``, WeChat ``out_refund_no``), the
same every time: both providers refund a given id once, so a retry after a timeout can never
refund twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from yarl import URL

from payments import alipay, wechat
from payments.errors import (
    BadSignature,
    ProviderRejected,
    ProviderUnavailable,
    TradeAlreadyPaid,
    TradeClosed,
)
from payments.keys import MerchantKeys
from payments.money import InvalidAmount, fen_to_yuan, yuan_to_fen

PROVIDERS = ("alipay", "wechat")
REQUEST_TIMEOUT_S = 5.0
REFUND_NOTIFY_PATH = "/api/v1/payments/wechat/refund-notify"


class ProviderSettings(Protocol):
    """The settings a ``ProviderClient`` reads (``gateway.config.Settings`` has them all)."""

    alipay_url: str
    wechat_url: str
    public_url: str
    alipay_app_id: str
    wechat_app_id: str
    wechat_mch_id: str


@dataclass(frozen=True)
class Trade:
    """A trade as the provider reports it when asked."""

    order_no: str
    trade_no: str | None  # None until paid (the provider allocates it)
    amount_fen: int
    app_id: str
    merchant_id: str  # alipay seller_id ("" when not reported); wechat mchid
    status: str  # the provider's raw status: WAIT_BUYER_PAY, TRADE_SUCCESS, … / NOTPAY, SUCCESS, CLOSED, …
    paid: bool
    closed: bool


@dataclass(frozen=True)
class RefundOrder:
    """One refund to send or ask about: our refund id, the trade it takes money back from, how much."""

    provider: str
    refund_id: str  # Alipay out_request_no, WeChat out_refund_no
    order_no: str  # out_trade_no
    trade_no: str  # Alipay trade_no, WeChat transaction_id
    amount_fen: int  # refunded
    total_fen: int  # of the trade (WeChat asks for it)
    reason: str  # shown to the payer


@dataclass(frozen=True)
class RefundAnswer:
    """What the provider said of a refund: ``succeeded``, ``processing`` (WeChat: wait for it) or ``failed``."""

    state: str
    status: str  # the provider's own word: 10000 / REFUND_SUCCESS, SUCCESS, PROCESSING, ABNORMAL, CLOSED
    provider_refund_no: str | None  # WeChat refund_id; Alipay gives none
    reply: dict[str, Any]  # the answer as received (signature checked), for the refund's ledger


class ProviderClient:
    """Creates, queries, closes and refunds trades at either provider; one per process, sharing a ClientSession."""

    def __init__(self, settings: ProviderSettings, keys: MerchantKeys, session: aiohttp.ClientSession | None = None,
                 *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.settings = settings
        self.keys = keys
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None
        self._alipay_gateway = settings.alipay_url.rstrip("/") + alipay.GATEWAY_PATH
        self._wechat_base = settings.wechat_url.rstrip("/")

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def notify_url(self, provider: str) -> str:
        """Where the provider is told to send this provider's notifications."""
        return f"{self.settings.public_url.rstrip('/')}/api/v1/payments/notify/{_checked(provider)}"

    def refund_notify_url(self) -> str:
        """Where WeChat Pay is told to send refund notifications (Alipay sends none)."""
        return f"{self.settings.public_url.rstrip('/')}{REFUND_NOTIFY_PATH}"

    async def create_trade(self, provider: str, order_no: str, amount_fen: int, subject: str) -> str:
        """Open a trade (again: same answer for the same order and amount); return the pay URL.

        Raises ``TradeAlreadyPaid``, ``TradeClosed``, ``ProviderRejected``, ``ProviderUnavailable``.
        """
        if _checked(provider) == "alipay":
            return await self._alipay_create(order_no, amount_fen, subject)
        return await self._wechat_create(order_no, amount_fen, subject)

    async def query(self, provider: str, order_no: str) -> Trade | None:
        """The trade as the provider sees it, or None when it does not know ``order_no``."""
        if _checked(provider) == "alipay":
            return await self._alipay_query(order_no)
        return await self._wechat_query(order_no)

    async def close(self, provider: str, order_no: str) -> None:
        """Close the trade so it can no longer be paid; nothing to do if the provider never saw it.

        Raises ``TradeAlreadyPaid`` when it was paid meanwhile (query it and take the payment).
        """
        if _checked(provider) == "alipay":
            await self._alipay_close(order_no)
        else:
            await self._wechat_close(order_no)

    async def refund(self, order: RefundOrder) -> RefundAnswer:
        """Ask the provider to refund ``order`` (again: the same refund id is refunded once).

        Raises ``ProviderRejected`` (refused: balance, amount, unknown trade, …) or ``ProviderUnavailable``.
        """
        if _checked(order.provider) == "alipay":
            return await self._alipay_refund(order)
        return await self._wechat_refund(order)

    async def query_refund(self, order: RefundOrder) -> RefundAnswer | None:
        """What the provider knows of the refund, or None when it knows no refund of that id."""
        if _checked(order.provider) == "alipay":
            return await self._alipay_refund_query(order)
        return await self._wechat_refund_query(order)

    # --- Alipay ---------------------------------------------------------------------------------------

    async def _alipay_create(self, order_no: str, amount_fen: int, subject: str) -> str:
        biz = {"out_trade_no": order_no, "total_amount": fen_to_yuan(amount_fen), "subject": subject}
        reply = await self._alipay_call("alipay.trade.precreate", biz, notify_url=self.notify_url("alipay"))
        if reply.get("code") == alipay.CODE_OK and isinstance(reply.get("qr_code"), str):
            return str(reply["qr_code"])
        raise _alipay_rejection(reply)

    async def _alipay_query(self, order_no: str) -> Trade | None:
        reply = await self._alipay_call("alipay.trade.query", {"out_trade_no": order_no})
        if reply.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return None
        if reply.get("code") != alipay.CODE_OK:
            raise _alipay_rejection(reply)
        status = str(reply.get("trade_status", ""))
        try:
            amount_fen = yuan_to_fen(str(reply.get("total_amount")))
        except InvalidAmount:
            raise ProviderUnavailable("alipay", f"unreadable total_amount {reply.get('total_amount')!r}") from None
        return Trade(order_no=str(reply.get("out_trade_no", order_no)), trade_no=reply.get("trade_no") or None,
                     amount_fen=amount_fen, app_id=self.settings.alipay_app_id,
                     merchant_id=str(reply.get("seller_id", "")), status=status,
                     paid=status in alipay.SUCCESS_STATUSES, closed=status == "TRADE_CLOSED")

    async def _alipay_close(self, order_no: str) -> None:
        reply = await self._alipay_call("alipay.trade.close", {"out_trade_no": order_no})
        if reply.get("code") == alipay.CODE_OK or reply.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return
        raise _alipay_rejection(reply)

    async def _alipay_refund(self, order: RefundOrder) -> RefundAnswer:
        biz = {"out_trade_no": order.order_no, "trade_no": order.trade_no, "out_request_no": order.refund_id,
               "refund_amount": fen_to_yuan(order.amount_fen), "refund_reason": order.reason}
        reply = await self._alipay_call("alipay.trade.refund", biz)
        if reply.get("code") != alipay.CODE_OK:
            raise _alipay_rejection(reply)
        # Success is final (fund_change "N" on a repeat: the money went back the first time).
        return RefundAnswer("succeeded", alipay.CODE_OK, None, reply)

    async def _alipay_refund_query(self, order: RefundOrder) -> RefundAnswer | None:
        biz = {"out_trade_no": order.order_no, "trade_no": order.trade_no, "out_request_no": order.refund_id}
        reply = await self._alipay_call("alipay.trade.fastpay.refund.query", biz)
        if reply.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return None
        if reply.get("code") != alipay.CODE_OK:
            raise _alipay_rejection(reply)
        # Alipay's rule: data returned with refund_status empty or REFUND_SUCCESS is a refund made;
        # no data (no refund_amount) is no refund of that out_request_no.
        if not reply.get("refund_amount"):
            return None
        status = str(reply.get("refund_status") or alipay.REFUND_SUCCESS)
        state = "succeeded" if status == alipay.REFUND_SUCCESS else "processing"
        return RefundAnswer(state, status, None, reply)

    async def _alipay_call(self, method: str, biz: Mapping[str, Any], notify_url: str | None = None) -> dict[str, Any]:
        form = alipay.build_request(method, biz, app_id=self.settings.alipay_app_id,
                                    private_key=self.keys.alipay_app_private, notify_url=notify_url)
        status, _, body = await self._send("alipay", "POST", URL(self._alipay_gateway), data=form)
        try:
            reply = alipay.read_response(body.decode("utf-8"), method, self.keys.alipay_platform_public)
        except BadSignature as exc:
            raise ProviderUnavailable("alipay", f"reply signature not valid ({exc.reason})") from None
        except (ValueError, UnicodeError):
            raise ProviderUnavailable("alipay", f"unreadable reply (HTTP {status})") from None
        if reply.get("code") == "20000":  # Alipay's "service unavailable": try again later
            raise ProviderUnavailable("alipay", str(reply.get("sub_msg") or reply.get("msg") or "20000"))
        return reply

    # --- WeChat Pay -----------------------------------------------------------------------------------

    async def _wechat_create(self, order_no: str, amount_fen: int, subject: str) -> str:
        body = {"appid": self.settings.wechat_app_id, "mchid": self.settings.wechat_mch_id, "description": subject,
                "out_trade_no": order_no, "notify_url": self.notify_url("wechat"),
                "amount": {"total": amount_fen, "currency": "CNY"}}
        status, reply = await self._wechat_call("POST", "/v3/pay/transactions/native", body)
        if status == 200 and isinstance(reply.get("code_url"), str):
            return str(reply["code_url"])
        raise _wechat_rejection(status, reply)

    async def _wechat_query(self, order_no: str) -> Trade | None:
        path = (f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}"
                f"?mchid={quote(self.settings.wechat_mch_id)}")
        status, tx = await self._wechat_call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise _wechat_rejection(status, tx)
        amount = tx.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        if isinstance(total, bool) or not isinstance(total, int):
            raise ProviderUnavailable("wechat", f"unreadable amount {amount!r}")
        state = str(tx.get("trade_state", ""))
        return Trade(order_no=str(tx.get("out_trade_no", order_no)), trade_no=tx.get("transaction_id") or None,
                     amount_fen=total, app_id=str(tx.get("appid", "")), merchant_id=str(tx.get("mchid", "")),
                     status=state, paid=state == wechat.SUCCESS_STATE, closed=state == "CLOSED")

    async def _wechat_close(self, order_no: str) -> None:
        path = f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}/close"
        status, reply = await self._wechat_call("POST", path, {"mchid": self.settings.wechat_mch_id})
        if status in (200, 204) or (status == 404 and reply.get("code") == "ORDER_NOT_EXIST"):
            return
        raise _wechat_rejection(status, reply)

    async def _wechat_refund(self, order: RefundOrder) -> RefundAnswer:
        body = {"transaction_id": order.trade_no, "out_refund_no": order.refund_id, "reason": order.reason,
                "notify_url": self.refund_notify_url(),
                "amount": {"refund": order.amount_fen, "total": order.total_fen, "currency": "CNY"}}
        status, reply = await self._wechat_call("POST", "/v3/refund/domestic/refunds", body)
        if status != 200:
            raise _wechat_rejection(status, reply)
        return _wechat_refund_answer(reply)

    async def _wechat_refund_query(self, order: RefundOrder) -> RefundAnswer | None:
        path = f"/v3/refund/domestic/refunds/{quote(order.refund_id, safe='')}"
        status, reply = await self._wechat_call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise _wechat_rejection(status, reply)
        return _wechat_refund_answer(reply)

    async def _wechat_call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                           ) -> tuple[int, dict[str, Any]]:
        url = URL(self._wechat_base + path, encoded=True)
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") if body is not None else b""
        headers = {
            "Authorization": wechat.authorization(method, url.raw_path_qs, data, mch_id=self.settings.wechat_mch_id,
                                                  serial=self.keys.wechat_merchant_serial,
                                                  private_key=self.keys.wechat_merchant_private),
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, reply_headers, raw = await self._send("wechat", method, url, data=data or None, headers=headers)
        if status != 401:  # a request the platform could not authenticate gets an unsigned answer
            try:
                wechat.verify_headers(reply_headers, raw, self.keys.wechat_platform_public,
                                      self.keys.wechat_platform_serial)
            except BadSignature as exc:
                raise ProviderUnavailable("wechat", f"reply signature not valid ({exc.reason})") from None
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            raise ProviderUnavailable("wechat", f"unreadable reply (HTTP {status})") from None
        if not isinstance(reply, dict):
            raise ProviderUnavailable("wechat", f"unreadable reply (HTTP {status})")
        return status, reply

    # --- transport ------------------------------------------------------------------------------------

    async def _send(self, provider: str, method: str, url: URL, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(method, url, timeout=self.timeout, **kwargs) as resp:
                body = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderUnavailable(provider, str(exc) or type(exc).__name__) from exc
        if resp.status >= 500:
            raise ProviderUnavailable(provider, f"HTTP {resp.status}")
        return resp.status, resp.headers, body


def _checked(provider: str) -> str:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown payment provider {provider!r} (expected one of {', '.join(PROVIDERS)})")
    return provider


def _alipay_rejection(reply: Mapping[str, Any]) -> ProviderRejected:
    code = str(reply.get("sub_code") or reply.get("code") or "unknown")
    message = str(reply.get("sub_msg") or reply.get("msg") or "")
    if code == "ACQ.TRADE_HAS_SUCCESS" or code == "ACQ.TRADE_STATUS_ERROR":
        return TradeAlreadyPaid("alipay", code, message)
    if code == "ACQ.TRADE_HAS_CLOSE":
        return TradeClosed("alipay", code, message)
    return ProviderRejected("alipay", code, message)


def _wechat_refund_answer(reply: dict[str, Any]) -> RefundAnswer:
    status = str(reply.get("status", ""))
    if status not in wechat.REFUND_STATES:
        raise ProviderUnavailable("wechat", f"unreadable refund status {status[:32]!r}")
    state = {"SUCCESS": "succeeded", "PROCESSING": "processing"}.get(status, "failed")
    return RefundAnswer(state, status, str(reply.get("refund_id") or "") or None, reply)


def _wechat_rejection(status: int, reply: Mapping[str, Any]) -> ProviderRejected:
    code = str(reply.get("code") or f"HTTP_{status}")
    message = str(reply.get("message") or "")
    if code == "ORDERPAID":
        return TradeAlreadyPaid("wechat", code, message)
    if code == "ORDER_CLOSED":
        return TradeClosed("wechat", code, message)
    return ProviderRejected("wechat", code, message)
