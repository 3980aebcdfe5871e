"""The payment simulator's refunds: Alipay ``alipay.trade.refund`` / ``…fastpay.refund.query`` and WeChat Pay
``/v3/refund/domestic/refunds``, with the real providers' rules.

- A refund is known by the merchant's number for it (Alipay ``out_request_no``, WeChat
  ``out_refund_no``): asking again with the same number and amount changes nothing and answers
  the refund as it is (Alipay ``fund_change`` N); the same number with another trade or amount is
  refused.
- Only a paid trade is refunded, and never more than was paid, across all its refunds.
- Alipay refunds at once; a WeChat Pay refund is ``PROCESSING`` first and ``SUCCESS`` a moment
  later, when its ``REFUND.SUCCESS`` notification goes to the request's ``notify_url``.
- ``fail_next`` (``POST /sim/refunds/fail``) makes the next refund requests fail as the providers
  refuse a refund the merchant's balance cannot cover, without refunding anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.timeutil import utcnow
from payments import alipay
from payments.money import InvalidAmount, fen_to_yuan, yuan_to_fen
from simulators.paysim_trades import PAID, SimRefund, SimTrade, TradeBook

MAX_REFUND_NO = 64


class RefundRefused(Exception):
    """A v3 refund error reply: HTTP status, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _alipay_error(sub_code: str, sub_msg: str) -> dict[str, str]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def _refund_no_ok(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_REFUND_NO and value.isascii() and value.isprintable()


class RefundDesk:
    """Every refund the simulator made, by provider and refund number, and the failures asked for."""

    def __init__(self, trades: TradeBook) -> None:
        self.trades = trades
        self.refunds: dict[tuple[str, str], SimRefund] = {}
        self.fail_next = 0  # refund requests still to refuse (POST /sim/refunds/fail)
        self.requests = 0  # refund requests received, refused ones included
        self.refused = 0  # of which refused by fail_next

    def __len__(self) -> int:
        return len(self.refunds)

    def get(self, provider: str, refund_no: str) -> SimRefund | None:
        """The refund ``refund_no`` of ``provider``."""
        return self.refunds.get((provider, refund_no))

    def find(self, refund_no: str) -> SimRefund | None:
        """The refund ``refund_no`` at either provider."""
        return self.get("alipay", refund_no) or self.get("wechat", refund_no)

    def _failing(self) -> bool:
        self.requests += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused += 1
            return True
        return False

    def _refundable(self, trade: SimTrade, amount_fen: int) -> bool:
        return amount_fen <= trade.amount_fen - trade.refunded_fen

    # --- Alipay ----------------------------------------------------------------------------------------

    def _alipay_trade(self, app_id: str, biz: Mapping[str, Any]) -> SimTrade | None:
        trade_no, order_no = biz.get("trade_no"), biz.get("out_trade_no")
        trade = None
        if isinstance(trade_no, str) and trade_no:
            trade = self.trades.by_trade_no(trade_no, "alipay")
            if trade is not None and order_no not in (None, "", trade.order_no):
                return None
        elif isinstance(order_no, str) and order_no:
            trade = self.trades.get(order_no, "alipay")
        return trade if trade is not None and trade.app_id == app_id else None

    def alipay_refund(self, app_id: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        """``alipay.trade.refund``: the reply's content."""
        try:
            amount_fen = yuan_to_fen(str(biz.get("refund_amount")))
        except InvalidAmount:
            amount_fen = 0
        if amount_fen <= 0:
            return _alipay_error("ACQ.INVALID_PARAMETER", "参数无效: refund_amount")
        trade = self._alipay_trade(app_id, biz)
        if trade is None:
            return _alipay_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        refund_no = biz.get("out_request_no") or trade.order_no  # Alipay's default: one full refund per trade
        if not _refund_no_ok(refund_no):
            return _alipay_error("ACQ.INVALID_PARAMETER", "参数无效: out_request_no")
        if trade.state != PAID or trade.trade_no is None:
            return _alipay_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if self._failing():
            return _alipay_error("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足")
        known = self.get("alipay", refund_no)
        if known is not None:
            if (known.trade_no, known.amount_fen) != (trade.trade_no, amount_fen):
                return _alipay_error("ACQ.INVALID_PARAMETER", "同一退款请求号的交易或退款金额与首次请求不一致")
            known.requests += 1
            return self._alipay_reply(trade, known, fund_change="N")
        if not self._refundable(trade, amount_fen):
            return _alipay_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        refund = SimRefund(provider="alipay", refund_no=refund_no, order_no=trade.order_no, trade_no=trade.trade_no,
                           merchant_id=trade.merchant_id, amount_fen=amount_fen, total_fen=trade.amount_fen,
                           reason=str(biz.get("refund_reason") or ""), notify_url="")
        refund.succeed()
        trade.refunded_fen += amount_fen
        self.refunds[("alipay", refund_no)] = refund
        return self._alipay_reply(trade, refund, fund_change="Y")

    @staticmethod
    def _alipay_reply(trade: SimTrade, refund: SimRefund, *, fund_change: str) -> dict[str, Any]:
        return {"code": alipay.CODE_OK, "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": trade.order_no,
                "buyer_logon_id": "159****5620", "fund_change": fund_change,
                "refund_fee": fen_to_yuan(trade.refunded_fen),
                "gmt_refund_pay": alipay.alipay_time(refund.succeeded_at or utcnow()),
                "buyer_user_id": "2088102177846880"}

    def alipay_refund_query(self, app_id: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        """``alipay.trade.fastpay.refund.query``: the refund, or a success without data when there is none."""
        trade = self._alipay_trade(app_id, biz)
        if trade is None:
            return _alipay_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        refund_no = biz.get("out_request_no") or trade.order_no
        refund = self.get("alipay", str(refund_no))
        if refund is None or refund.trade_no != trade.trade_no:
            return {"code": alipay.CODE_OK, "msg": "Success"}
        return {"code": alipay.CODE_OK, "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": trade.order_no,
                "out_request_no": refund.refund_no, "total_amount": fen_to_yuan(trade.amount_fen),
                "refund_amount": fen_to_yuan(refund.amount_fen), "refund_status": alipay.REFUND_SUCCESS,
                "gmt_refund_pay": alipay.alipay_time(refund.succeeded_at or refund.created_at)}

    # --- WeChat Pay -----------------------------------------------------------------------------------

    def wechat_refund(self, mch_id: str, data: Mapping[str, Any]) -> tuple[SimRefund, bool]:
        """``POST /v3/refund/domestic/refunds``: the refund and whether it was made now; ``RefundRefused`` else."""
        refund_no, amount = data.get("out_refund_no"), data.get("amount")
        refund_fen = amount.get("refund") if isinstance(amount, dict) else None
        total_fen = amount.get("total") if isinstance(amount, dict) else None
        notify_url = data.get("notify_url", "")
        if (not _refund_no_ok(refund_no) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                               for v in (refund_fen, total_fen))
                or amount.get("currency", "CNY") != "CNY" or not isinstance(notify_url, str)):  # type: ignore[union-attr]
            raise RefundRefused(400, "PARAM_ERROR", "参数错误: out_refund_no, amount.refund, amount.total, currency")
        assert isinstance(refund_no, str) and isinstance(refund_fen, int) and isinstance(total_fen, int)
        trade = None
        if isinstance(data.get("transaction_id"), str) and data["transaction_id"]:
            trade = self.trades.by_trade_no(data["transaction_id"], "wechat")
        elif isinstance(data.get("out_trade_no"), str) and data["out_trade_no"]:
            trade = self.trades.get(data["out_trade_no"], "wechat")
        if trade is None or trade.merchant_id != mch_id:
            raise RefundRefused(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if trade.state != PAID or trade.trade_no is None:
            raise RefundRefused(400, "INVALID_REQUEST", "订单状态不正确，不能退款")
        if total_fen != trade.amount_fen:
            raise RefundRefused(400, "PARAM_ERROR", "订单金额total与原订单金额不一致")
        if self._failing():
            raise RefundRefused(403, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起")
        known = self.get("wechat", refund_no)
        if known is not None:
            if (known.trade_no, known.amount_fen) != (trade.trade_no, refund_fen):
                raise RefundRefused(400, "INVALID_REQUEST", "参数与首次请求时不一致")
            known.requests += 1
            return known, False
        if not self._refundable(trade, refund_fen):
            raise RefundRefused(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        refund = SimRefund(provider="wechat", refund_no=refund_no, order_no=trade.order_no, trade_no=trade.trade_no,
                           merchant_id=mch_id, amount_fen=refund_fen, total_fen=total_fen,
                           reason=str(data.get("reason") or ""), notify_url=notify_url)
        trade.refunded_fen += refund_fen
        self.refunds[("wechat", refund_no)] = refund
        return refund, True

    def wechat_refund_query(self, mch_id: str, refund_no: str) -> SimRefund:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}``: the refund, or ``RefundRefused`` 404."""
        refund = self.get("wechat", refund_no)
        if refund is None or refund.merchant_id != mch_id:
            raise RefundRefused(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return refund
