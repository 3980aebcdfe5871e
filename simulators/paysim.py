"""``examgate paysim``: an in-memory Alipay / WeChat Pay for development, demos and tests.

It speaks the merchant side of both APIs as the gateway's ``ProviderClient`` does (signed trade
create, query and close; refund and refund query, ``simulators.paysim_refunds``) on the real
APIs' paths (Alipay ``/gateway.do``, WeChat Pay ``/v3/…``), serves the cashier page ``pay_url``
points at, and, once a trade is paid or a WeChat Pay refund made, posts signed notifications to
its ``notify_url`` until acknowledged, on each provider's retry schedule compressed by
``time_scale``. ``/sim/*`` lets tests pay with duplicates, delays, dropped notifications and late
payments of closed trades, make refunds fail, and send a refund notification again.

Our Alipay app's seller id (PID) is the one the gateway expects (``sellers``: app id → PID, by
default the settings' defaults); any other app gets a PID derived from its app id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeGuard
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from gateway.config import Settings
from payments import alipay, wechat
from payments.errors import BadSignature
from payments.keys import PaymentKeys
from payments.money import InvalidAmount, fen_to_yuan, yuan_to_fen
from simulators.paysim_delivery import Notifier
from simulators.paysim_pages import not_found_page, pay_page
from simulators.paysim_refunds import RefundDesk, RefundRefused
from simulators.paysim_trades import (
    CLOSED,
    PAID,
    Delivery,
    SimRefund,
    SimTrade,
    TradeBook,
    alipay_seller_id,
)

log = logging.getLogger("examgate.paysim")

WECHAT_REFUND_PROCESSING_S = 60.0  # PROCESSING → SUCCESS, scaled by the time scale like the retry schedules
# Our app's seller id, as the gateway expects it by default (EXAMGATE_ALIPAY_APP_ID / _SELLER_ID).
DEFAULT_SELLERS = {str(Settings.model_fields["alipay_app_id"].default):
                   str(Settings.model_fields["alipay_seller_id"].default)}


class Simulator:
    """The simulator's state: keys, trades, refunds, and the notification deliveries in flight."""

    def __init__(self, keys: PaymentKeys, *, time_scale: float = 1.0,
                 sellers: Mapping[str, str] | None = None) -> None:
        self.keys = keys
        self.time_scale = time_scale
        self.sellers = dict(DEFAULT_SELLERS if sellers is None else sellers)
        self.book = TradeBook()
        self.refunds = RefundDesk(self.book)
        self._notifier: Notifier | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def seller_of(self, app_id: str) -> str:
        """The seller id (PID) of an Alipay app: the one configured, else one derived from the app id."""
        return self.sellers.get(app_id) or alipay_seller_id(app_id)

    async def http_session(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the HTTP session notifications go out on, open while the app runs."""
        async with aiohttp.ClientSession() as session:
            self._notifier = Notifier(self.keys, session, time_scale=self.time_scale)
            yield
            self._notifier = None

    async def stop_deliveries(self, app: web.Application | None = None) -> None:
        """on_shutdown: cancel every pending delivery and retry."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            log.info("cancelled %d pending notification deliveries", len(tasks))

    def open_trade(self, trade: SimTrade) -> tuple[SimTrade, str | None]:
        """Open ``trade``, or find the one already open under its order number.

        Returns the trade and a problem: ``inconsistent`` (another provider, app, merchant or
        amount), ``paid`` or ``closed``; None when the merchant may proceed to payment.
        """
        known = self.book.get(trade.order_no)
        if known is None:
            log.info("%s trade opened: order %s, %s yuan", trade.provider, trade.order_no,
                     fen_to_yuan(trade.amount_fen))
            return self.book.open(trade), None
        same = (known.provider, known.app_id, known.merchant_id, known.amount_fen) == (
            trade.provider, trade.app_id, trade.merchant_id, trade.amount_fen)
        if not same:
            return known, "inconsistent"
        return known, {PAID: "paid", CLOSED: "closed"}.get(known.state)

    def pay(self, trade: SimTrade, *, duplicates: int = 0, delay_s: float = 0.0, drop: bool = False) -> int:
        """Mark ``trade`` paid and start ``1 + duplicates`` notification copies (none if ``drop``)."""
        self.book.mark_paid(trade)
        log.info("%s trade paid: order %s, trade %s%s", trade.provider, trade.order_no, trade.trade_no,
                 " (notification dropped)" if drop else "")
        if drop:
            return 0
        if self._notifier is None:
            raise RuntimeError("the simulator is not running")
        copies = 1 + duplicates
        for _ in range(copies):
            delivery = Delivery(event_id=trade.event_id or "", copy=len(trade.deliveries))
            trade.deliveries.append(delivery)
            self._spawn(self._notifier.deliver(trade, delivery, delay_s))
        return copies

    def start_refund(self, refund: SimRefund) -> None:
        """A WeChat Pay refund just made: SUCCESS after a (scaled) moment, then its notification."""
        self._spawn(self._complete_refund(refund))

    async def _complete_refund(self, refund: SimRefund) -> None:
        await asyncio.sleep(WECHAT_REFUND_PROCESSING_S * self.time_scale)
        refund.succeed()
        log.info("wechat refund %s succeeded: order %s, %s yuan", refund.refund_no, refund.order_no,
                 fen_to_yuan(refund.amount_fen))
        self.notify_refund(refund)

    def notify_refund(self, refund: SimRefund, copies: int = 1) -> int:
        """Send ``copies`` of the refund's notification (one event: a resend carries the same id); how many."""
        if not refund.notify_url or refund.provider != "wechat":
            return 0
        if self._notifier is None:
            raise RuntimeError("the simulator is not running")
        for _ in range(copies):
            delivery = Delivery(event_id=refund.event_id, copy=len(refund.deliveries))
            refund.deliveries.append(delivery)
            self._spawn(self._notifier.deliver_refund(refund, delivery))
        return copies

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


SIM = web.AppKey("paysim", Simulator)


def build_app(keys: PaymentKeys, *, time_scale: float = 1.0, sellers: Mapping[str, str] | None = None,
              ) -> web.Application:
    """The simulator as an aiohttp application (state in memory, lost at exit)."""
    from simulators import paysim_controls  # it reads the simulator's state through SIM, defined above

    sim = Simulator(keys, time_scale=time_scale, sellers=sellers)
    app = web.Application()
    app[SIM] = sim
    app.cleanup_ctx.append(sim.http_session)
    app.on_shutdown.append(sim.stop_deliveries)
    app.add_routes([
        web.post(alipay.GATEWAY_PATH, alipay_gateway),
        web.post("/alipay/gateway", alipay_gateway),  # the path of earlier releases
        web.post("/v3/pay/transactions/native", _wechat_route(wechat_native)),
        web.get("/v3/pay/transactions/out-trade-no/{order_no}", _wechat_route(wechat_query)),
        web.post("/v3/pay/transactions/out-trade-no/{order_no}/close", _wechat_route(wechat_close)),
        web.post("/v3/refund/domestic/refunds", _wechat_route(wechat_refund)),
        web.get("/v3/refund/domestic/refunds/{refund_no}", _wechat_route(wechat_refund_query)),
        web.get("/pay/{order_no}", cashier_page),
        web.post("/pay/{order_no}", cashier_pay),
    ])
    app.add_routes(paysim_controls.routes())
    return app


async def serve(keys: PaymentKeys, host: str, port: int, *, time_scale: float = 1.0,
                sellers: Mapping[str, str] | None = None) -> None:
    """Serve the simulator until SIGTERM or SIGINT, then cancel pending deliveries and stop."""
    runner = web.AppRunner(build_app(keys, time_scale=time_scale, sellers=sellers), handle_signals=False,
                           access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("paysim serving on http://%s:%d (retry schedules x %g)", host, port, time_scale)
    await stop.wait()
    log.info("paysim stopping")
    await runner.cleanup()


def pay_url(request: web.Request, order_no: str) -> str:
    """The cashier page of ``order_no``, on the host the merchant reached us at."""
    return f"{request.url.origin()}/pay/{quote(order_no, safe='')}"


# --- Alipay: POST /gateway.do -------------------------------------------------------------------------

_ALIPAY_BAD_SIGNATURE = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature",
                         "sub_msg": "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配"}


def _alipay_business_error(sub_code: str, sub_msg: str) -> dict[str, str]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


async def alipay_gateway(request: web.Request) -> web.Response:
    """One Alipay open-platform call: check the app's signature, then run ``method``."""
    sim = request.app[SIM]
    params = {**request.query, **{k: v for k, v in (await request.post()).items() if isinstance(v, str)}}
    method = params.get("method", "")
    handler = _ALIPAY_METHODS.get(method)
    if handler is None:
        error = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method",
                 "sub_msg": "不存在的方法名"}
        return _alipay_reply(sim, "error", error)
    if (params.get("sign_type") != alipay.SIGN_TYPE
            or not alipay.verify(params, sim.keys.alipay_app_public, keep_sign_type=True)):
        log.info("alipay %s refused: bad signature", method)
        return _alipay_reply(sim, method, _ALIPAY_BAD_SIGNATURE)
    try:
        biz = json.loads(params.get("biz_content") or "")
    except ValueError:
        biz = None
    if not params.get("app_id") or not isinstance(biz, dict):
        return _alipay_reply(sim, method, {"code": "40002", "msg": "Invalid Arguments",
                                           "sub_code": "isv.invalid-parameter", "sub_msg": "缺少app_id或biz_content"})
    return _alipay_reply(sim, method, handler(request, sim, params, biz))


def _alipay_reply(sim: Simulator, method: str, content: dict[str, Any]) -> web.Response:
    body = alipay.response_body(method, content, sim.keys.alipay_platform_private)
    return web.Response(text=body, content_type="application/json", charset="utf-8")


def _alipay_precreate(
    request: web.Request, sim: Simulator, params: dict[str, str], biz: dict[str, Any]
) -> dict[str, Any]:
    order_no, subject = biz.get("out_trade_no"), biz.get("subject")
    try:
        amount_fen = yuan_to_fen(str(biz.get("total_amount")))
    except InvalidAmount:
        amount_fen = 0
    notify_url = params.get("notify_url", "")
    if not _order_no_ok(order_no) or not isinstance(subject, str) or not subject or amount_fen <= 0:
        return _alipay_business_error("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no, subject, total_amount")
    if not _http_url(notify_url):
        return _alipay_business_error("ACQ.INVALID_PARAMETER", "参数无效: notify_url")
    trade, problem = sim.open_trade(SimTrade(
        provider="alipay", order_no=order_no, amount_fen=amount_fen, app_id=params["app_id"],
        merchant_id=sim.seller_of(params["app_id"]), subject=subject, notify_url=notify_url))
    if problem == "inconsistent":
        return _alipay_business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
    if problem == "paid":
        return _alipay_business_error("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
    if problem == "closed":
        return _alipay_business_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
    return {"code": alipay.CODE_OK, "msg": "Success", "out_trade_no": trade.order_no,
            "qr_code": pay_url(request, trade.order_no)}


def _alipay_trade(sim: Simulator, params: dict[str, str], biz: dict[str, Any]) -> SimTrade | None:
    trade = sim.book.get(str(biz.get("out_trade_no", "")), "alipay")
    return trade if trade is not None and trade.app_id == params["app_id"] else None


def _alipay_query(request: web.Request, sim: Simulator, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
    trade = _alipay_trade(sim, params, biz)
    if trade is None:
        return _alipay_business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
    reply = {"code": alipay.CODE_OK, "msg": "Success", "out_trade_no": trade.order_no,
             "trade_status": trade.query_status, "total_amount": fen_to_yuan(trade.amount_fen),
             "seller_id": trade.merchant_id}
    if trade.trade_no is not None:
        reply["trade_no"] = trade.trade_no
    if trade.paid_at is not None:
        reply.update({"buyer_pay_amount": fen_to_yuan(trade.amount_fen),
                      "send_pay_date": alipay.alipay_time(trade.paid_at), "buyer_user_id": "2088102177846880"})
    return reply


def _alipay_close(request: web.Request, sim: Simulator, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
    trade = _alipay_trade(sim, params, biz)
    if trade is None:
        return _alipay_business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
    if trade.state == PAID:
        return _alipay_business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法：交易已支付")
    sim.book.mark_closed(trade)
    log.info("alipay trade closed: order %s", trade.order_no)
    return {"code": alipay.CODE_OK, "msg": "Success", "out_trade_no": trade.order_no}


def _alipay_refund(request: web.Request, sim: Simulator, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
    reply = sim.refunds.alipay_refund(params["app_id"], biz)
    log.info("alipay refund %s of trade %s: %s", biz.get("out_request_no"), biz.get("trade_no") or
             biz.get("out_trade_no"), reply.get("sub_code") or f"fund_change {reply.get('fund_change')}")
    return reply


def _alipay_refund_query(request: web.Request, sim: Simulator, params: dict[str, str],
                         biz: dict[str, Any]) -> dict[str, Any]:
    return sim.refunds.alipay_refund_query(params["app_id"], biz)


_ALIPAY_METHODS: dict[str, Callable[[web.Request, Simulator, dict[str, str], dict[str, Any]], dict[str, Any]]] = {
    "alipay.trade.precreate": _alipay_precreate,
    "alipay.trade.query": _alipay_query,
    "alipay.trade.close": _alipay_close,
    "alipay.trade.refund": _alipay_refund,
    "alipay.trade.fastpay.refund.query": _alipay_refund_query,
}


# --- WeChat Pay v3 --------------------------------------------------------------------------------------

class WechatFailure(Exception):
    """A v3 error reply: HTTP status, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


WechatHandler = Callable[[web.Request, Simulator, str, bytes], Awaitable[tuple[int, dict[str, Any] | None]]]


def _wechat_route(handler: WechatHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a v3 handler: check the merchant's ``Authorization``, sign the reply, render failures."""

    async def route(request: web.Request) -> web.Response:
        sim = request.app[SIM]
        body = await request.read()
        try:
            mch_id = wechat.verify_authorization(request.method, request.raw_path, body,
                                                 request.headers.get("Authorization", ""),
                                                 sim.keys.wechat_merchant_public, sim.keys.wechat_merchant_serial)
        except BadSignature as exc:
            log.info("wechat %s %s refused: %s", request.method, request.path, exc)
            return _wechat_reply(sim, 401, {"code": "SIGN_ERROR", "message": f"签名错误 ({exc.reason})"}, signed=False)
        try:
            status, payload = await handler(request, sim, mch_id, body)
        except WechatFailure as fail:
            status, payload = fail.status, {"code": fail.code, "message": fail.message}
        return _wechat_reply(sim, status, payload)

    return route


def _wechat_reply(sim: Simulator, status: int, payload: dict[str, Any] | None, *, signed: bool = True) -> web.Response:
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = (wechat.sign_headers(body, sim.keys.wechat_platform_private, sim.keys.wechat_platform_serial)
               if signed else {})
    if payload is not None:
        headers["Content-Type"] = "application/json; charset=utf-8"
    return web.Response(status=status, body=body or None, headers=headers)


async def wechat_native(request: web.Request, sim: Simulator, mch_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """``POST /v3/pay/transactions/native``: open a trade, answer its ``code_url`` (here: the cashier page)."""
    data = _json_object(body)
    amount = data.get("amount")
    total = amount.get("total") if isinstance(amount, dict) else None
    order_no, description = data.get("out_trade_no"), data.get("description")
    if data.get("mchid") != mch_id:
        raise WechatFailure(400, "PARAM_ERROR", "mchid与请求头中的商户号不一致")
    if (not _order_no_ok(order_no) or not isinstance(description, str) or not description
            or not isinstance(data.get("appid"), str) or isinstance(total, bool) or not isinstance(total, int)
            or total <= 0 or not _http_url(data.get("notify_url"))):
        raise WechatFailure(400, "PARAM_ERROR", "参数错误: appid, description, out_trade_no, notify_url, amount.total")
    trade, problem = sim.open_trade(SimTrade(
        provider="wechat", order_no=order_no, amount_fen=total, app_id=data["appid"], merchant_id=mch_id,
        subject=description, notify_url=data["notify_url"]))
    if problem == "inconsistent":
        raise WechatFailure(400, "INVALID_REQUEST", "参数与首次请求时不一致")
    if problem == "paid":
        raise WechatFailure(403, "ORDERPAID", "该订单已支付")
    if problem == "closed":
        raise WechatFailure(400, "ORDER_CLOSED", "订单已关闭")
    return 200, {"code_url": pay_url(request, trade.order_no)}


def _wechat_trade(sim: Simulator, request: web.Request, mch_id: str) -> SimTrade:
    trade = sim.book.get(request.match_info["order_no"], "wechat")
    if trade is None or trade.merchant_id != mch_id:
        raise WechatFailure(404, "ORDER_NOT_EXIST", "订单不存在")
    return trade


async def wechat_query(request: web.Request, sim: Simulator, mch_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """``GET /v3/pay/transactions/out-trade-no/{order_no}?mchid=…``: the transaction as v3 shows it."""
    if request.query.get("mchid") != mch_id:
        raise WechatFailure(400, "PARAM_ERROR", "mchid与请求头中的商户号不一致")
    trade = _wechat_trade(sim, request, mch_id)
    return 200, wechat.transaction(order_no=trade.order_no, transaction_id=trade.trade_no, amount_fen=trade.amount_fen,
                                   app_id=trade.app_id, mch_id=trade.merchant_id, trade_state=trade.query_status,
                                   paid_at=trade.paid_at, description=trade.subject)


async def wechat_close(request: web.Request, sim: Simulator, mch_id: str, body: bytes) -> tuple[int, None]:
    """``POST /v3/pay/transactions/out-trade-no/{order_no}/close``: 204, or 400 ORDERPAID when paid."""
    if _json_object(body).get("mchid") != mch_id:
        raise WechatFailure(400, "PARAM_ERROR", "mchid与请求头中的商户号不一致")
    trade = _wechat_trade(sim, request, mch_id)
    if trade.state == PAID:
        raise WechatFailure(400, "ORDERPAID", "订单已支付")
    sim.book.mark_closed(trade)
    log.info("wechat trade closed: order %s", trade.order_no)
    return 204, None


async def wechat_refund(request: web.Request, sim: Simulator, mch_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """``POST /v3/refund/domestic/refunds``: refund a paid trade (PROCESSING, then SUCCESS and its notification)."""
    data = _json_object(body)
    if "notify_url" in data and not _http_url(data["notify_url"]):
        raise WechatFailure(400, "PARAM_ERROR", "notify_url 格式不正确")
    try:
        refund, made = sim.refunds.wechat_refund(mch_id, data)
    except RefundRefused as refused:
        log.info("wechat refund %s refused: %s", data.get("out_refund_no"), refused)
        raise WechatFailure(refused.status, refused.code, refused.message) from None
    if made:
        log.info("wechat refund %s accepted: order %s, %s yuan", refund.refund_no, refund.order_no,
                 fen_to_yuan(refund.amount_fen))
        sim.start_refund(refund)
    return 200, refund.as_wechat()


async def wechat_refund_query(request: web.Request, sim: Simulator, mch_id: str,
                              body: bytes) -> tuple[int, dict[str, Any]]:
    """``GET /v3/refund/domestic/refunds/{out_refund_no}``: the refund as it is now."""
    try:
        refund = sim.refunds.wechat_refund_query(mch_id, request.match_info["refund_no"])
    except RefundRefused as refused:
        raise WechatFailure(refused.status, refused.code, refused.message) from None
    return 200, refund.as_wechat()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise WechatFailure(400, "PARAM_ERROR", "请求体不是JSON对象")
    return data


# --- cashier pages ---------------------------------------------------------------------------------------

async def cashier_page(request: web.Request) -> web.Response:
    """``GET /pay/{order_no}``: the cashier page with its 支付 button."""
    trade = request.app[SIM].book.get(request.match_info["order_no"])
    if trade is None:
        return web.Response(status=404, text=not_found_page(request.match_info["order_no"]), content_type="text/html")
    return web.Response(text=pay_page(trade, request.query.get("return_url")), content_type="text/html")


async def cashier_pay(request: web.Request) -> web.Response:
    """``POST /pay/{order_no}`` (the page's form): pay, then show 支付成功 and the way back."""
    sim = request.app[SIM]
    form = await request.post()
    return_url = form.get("return_url")
    return_url = return_url if isinstance(return_url, str) else request.query.get("return_url")
    trade = sim.book.get(request.match_info["order_no"])
    if trade is None:
        return web.Response(status=404, text=not_found_page(request.match_info["order_no"]), content_type="text/html")
    status = 200
    if trade.state == CLOSED:
        status = 409
    elif trade.state != PAID:  # paying a paid trade again from the page changes nothing
        sim.pay(trade)
    return web.Response(status=status, text=pay_page(trade, return_url), content_type="text/html")


def _order_no_ok(order_no: object) -> TypeGuard[str]:
    return isinstance(order_no, str) and 0 < len(order_no) <= 64 and order_no.isprintable()


def _http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
