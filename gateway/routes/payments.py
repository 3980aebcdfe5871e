"""Orders and the providers' payment notifications.

``POST /api/v1/registrations/{id}/orders`` opens (or returns) the registration's pending
order and registers the trade at the provider, which gives the pay URL. The notify routes
verify the provider's signature, then hand the notification to the process's
``GroupCommitter`` (``payments.settle``): the reply — Alipay's ``success``, WeChat Pay's
204 — is sent only after the ledger row and the order's move are committed. A rejected
notification (bad signature, unknown order, wrong app id, merchant or amount) is answered
with a failure and counted (``examgate_payment_notifications_rejected_total``); PostgreSQL
or Redis down is answered with a failure too, and the provider's retries settle it later.

A notification failing verification could come from anyone: it counts against its sender
address (the ``counts: failures`` rules of the notify routes, which then refuse that address
with 429 before its body is read), and the ledger keeps only a sampled summary of it
(``payments.rejections``); the others are answered without touching PostgreSQL.

WeChat Pay's refund notifications (``REFUND.SUCCESS`` / ``ABNORMAL`` / ``CLOSED``) come to their own
route, verified the same way, and are recorded in the refund's ledger once however often they
come (``payments.refunds.record_notification``); 204 only after that commit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from core.errors import NotFound
from core.timeutil import iso_local
from gateway import auth, keys, metrics, throttle
from gateway.bodies import NO_STORE, json_response, read_body
from gateway.errors import ApiError, Overloaded
from gateway.models import Body, Reply
from gateway.routes.registrations import _not_found, _registration_id
from gateway.routing import CANDIDATE, PROVIDER, Answer, Param, Routes
from payments import orders, refunds, settle
from payments.clients import REFUND_NOTIFY_PATH
from payments.runtime import PaymentsRuntime
from queueing import holds

log = logging.getLogger("examgate.payments")

routes = Routes("Payments")
Provider = Literal["alipay", "wechat"]  # orders.PROVIDERS


def _given(value: Any) -> Any:
    if value is None:  # null is no choice at all
        raise PydanticCustomError("required", "请选择支付方式")
    return value


class OrderRequest(Body):
    """The provider the candidate will pay with."""

    provider: Annotated[Provider, BeforeValidator(_given)]


class Order(Reply):
    """A pending order: the amount (fen) and the provider's pay URL; it expires with the seat hold."""

    order_no: str
    provider: Provider
    amount_fen: int = Field(ge=0)
    pay_url: str
    expires_at: datetime


class WechatReply(Reply):
    """WeChat Pay's failure reply: the provider retries the notification."""

    code: Literal["FAIL"]
    message: str


def _runtime(request: web.Request) -> PaymentsRuntime:
    runtime = request.app.get(keys.PAYMENTS)
    if runtime is None:
        raise Overloaded("支付服务暂不可用，请稍后重试", code="service_unavailable", retry_after_s=30,
                         details={"reason": "payment_keys_missing"})
    return runtime


@routes.post("/api/v1/registrations/{registration_id}/orders", "orders.create", caller=CANDIDATE, body=OrderRequest,
             summary="Open the registration's order (or return its pending one) and the provider's pay URL",
             answers={201: Answer(Order, "order opened"), 200: Answer(Order, "the pending order, as opened before")},
             errors={404: "registration_not_found",
                     409: "not_confirmed, already_paid, registration_inactive, hold_required, payment_processing, "
                          "order_rejected_by_provider",
                     422: "validation_failed (details.fields.provider: required, invalid_choice, unknown_field "
                          "for any other field)",
                     503: "service_unavailable (details.reason payment_provider_unavailable, or payment_keys_missing); "
                          "or shed"})
async def create_order(request: web.Request) -> web.Response:
    """Open the registration's order (201), or answer its pending one (200), with the provider's pay URL."""
    registration_id = _registration_id(request)
    candidate = await auth.candidate_id(request)
    provider = (await read_body(request, OrderRequest)).provider
    runtime = _runtime(request)
    app = request.app
    ref = await app[keys.REGISTRATION_REFS].get(app[keys.PG], registration_id)
    if ref is None or ref.candidate_id != candidate:
        raise _not_found()
    site, expires_at_ms = await holds.current_hold(app[keys.REDIS], ref.exam_id, registration_id)
    expires = None if expires_at_ms is None else datetime.fromtimestamp(expires_at_ms / 1000, UTC)
    try:
        order, subject = await orders.open_order(app[keys.PG], registration_id, candidate, provider,
                                                 hold_expires_at=expires, has_hold=site is not None)
    except NotFound:
        raise _not_found() from None
    pay_url = await runtime.create_trade(order, subject)
    return json_response({"order_no": order.order_no, "provider": order.provider, "amount_fen": order.amount_fen,
                          "pay_url": pay_url, "expires_at": iso_local(order.expires_at)},
                         status=201 if order.created else 200, headers=NO_STORE)


def _sender(request: web.Request) -> str:
    return request.app[keys.CLIENT_IP].of(request)


async def _failed_verification(request: web.Request, incoming: settle.Incoming) -> settle.Outcome | None:
    """Count a notification that failed verification; its outcome when it is not recorded (no commit needed)."""
    metrics.PAYMENT_REJECTED.labels(incoming.provider, incoming.reason).inc()
    await throttle.record_failure(request)
    if incoming.record:
        log.warning("payment notification from %s failed verification: %s (sender %s, %s bytes; recorded, "
                    "%s left out before)", incoming.provider, incoming.reason, incoming.payload["sender"],
                    incoming.payload["size_bytes"], incoming.payload["unrecorded_before"])
        return None
    return settle.Outcome("rejected", incoming.reason)


async def _settle(request: web.Request, incoming: settle.Incoming) -> settle.Outcome | None:
    """The outcome after the commit, or None when it could not be committed (the provider retries)."""
    if incoming.notice is None:
        counted = await _failed_verification(request, incoming)
        if counted is not None:
            return counted
    try:
        outcome = await _runtime(request).committer.submit(incoming)
    except ApiError:
        raise
    except Exception as exc:  # store down, or a bug: never acknowledge what was not committed
        log.warning("payment notification from %s not settled: %s", incoming.provider, exc)
        return None
    if not outcome.acknowledged and incoming.notice is not None:  # signed, but not for this order or us
        metrics.PAYMENT_REJECTED.labels(incoming.provider, outcome.reason).inc()
        log.warning("payment notification from %s rejected: %s (order %s)", incoming.provider, outcome.reason,
                    outcome.order_no)
    return outcome


ALIPAY_FORM = {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "additionalProperties": {"type": "string"},
    "description": "Alipay's fields (notify_id, app_id, out_trade_no, trade_no, total_amount in yuan, "
                   "trade_status, …) with sign and sign_type RSA2: SHA256withRSA over the sorted k=v&… string "
                   "without sign and sign_type; checked on the bytes received"}}}
TEXT = "text/plain"


@routes.post("/api/v1/payments/notify/alipay", "payments.notify.alipay", caller=PROVIDER, shedding="payment_notify",
             raw_body=ALIPAY_FORM,
             summary="Alipay asynchronous notification (RSA2-signed form); text success only after the commit",
             answers={
                 200: Answer({"const": "success"}, "success: recorded (paid, duplicate or refund_pending)", TEXT),
                 400: Answer({"const": "fail"}, "fail: rejected and recorded (bad signature, unknown order, app id, "
                             "amount); malformed_request (the API's error) when the body's framing is broken", TEXT),
                 503: Answer({"const": "fail"}, "fail: not committed (store down); Alipay retries. "
                             "service_unavailable (the API's error) when payment keys are missing, or shed", TEXT),
             })
async def notify_alipay(request: web.Request) -> web.Response:
    """Alipay's asynchronous notification: text ``success`` after the commit, ``fail`` otherwise."""
    runtime = _runtime(request)
    incoming = runtime.verify_alipay_body(await request.read(), _sender(request))
    outcome = await _settle(request, incoming)
    if outcome is None:
        return web.Response(text="fail", status=503)
    if not outcome.acknowledged:
        return web.Response(text="fail", status=400)
    return web.Response(text="success")


def _wechat_fail(status: int, message: str) -> web.Response:
    return json_response({"code": "FAIL", "message": message}, status=status)


WECHAT_ENVELOPE = {"application/json": {"schema": {
    "type": "object", "required": ["id", "resource"],
    "properties": {"id": {"type": "string", "minLength": 1},
                   "resource": {"type": "object", "description": "the transaction, AEAD_AES_256_GCM-encrypted "
                                                                 "(ciphertext, nonce, associated_data)"}},
    "description": "WeChat Pay's v3 notification, signed over timestamp, nonce and these bytes"}}}
WECHAT_HEADERS = tuple(Param(name, "header", {"type": "string"}, why, required=True) for name, why in (
    ("Wechatpay-Timestamp", "Unix seconds; stale ones are rejected"),
    ("Wechatpay-Nonce", "the signed nonce"),
    ("Wechatpay-Signature", "base64 SHA256withRSA by the platform key"),
    ("Wechatpay-Serial", "the platform certificate's serial"),
))
# Both are JSON: WeChat Pay's reply, or the API's error when the gateway refuses before the handler.
WECHAT_REFUSED = {"oneOf": [{"$ref": "#/components/schemas/WechatReply"}, {"$ref": "#/components/schemas/Error"}]}


@routes.post("/api/v1/payments/notify/wechat", "payments.notify.wechat", caller=PROVIDER, shedding="payment_notify",
             raw_body=WECHAT_ENVELOPE, params=WECHAT_HEADERS,
             summary="WeChat Pay v3 notification (signed headers, AES-256-GCM resource); 204 only after the commit",
             answers={
                 204: Answer(None, "recorded (paid, duplicate or refund_pending)"),
                 400: Answer(WECHAT_REFUSED, "rejected and recorded; malformed_request (the API's error) when the "
                                             "body's framing is broken"),
                 500: Answer(WechatReply, "not committed (store down); WeChat Pay retries"),
             },
             errors={503: "service_unavailable: payment keys missing; or shed"})
async def notify_wechat(request: web.Request) -> web.Response:
    """WeChat Pay's v3 notification: 204 after the commit, ``{"code": "FAIL", "message"}`` otherwise."""
    runtime = _runtime(request)
    body = await request.read()
    incoming = runtime.verify_wechat(request.headers, body, _sender(request))
    outcome = await _settle(request, incoming)
    if outcome is None:
        return _wechat_fail(500, "not settled, retry")
    if not outcome.acknowledged:
        return _wechat_fail(400, outcome.reason or "rejected")
    return web.Response(status=204)


WECHAT_REFUND_ENVELOPE = {"application/json": {"schema": {
    "type": "object", "required": ["id", "event_type", "resource"],
    "properties": {"id": {"type": "string", "minLength": 1},
                   "event_type": {"enum": ["REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"]},
                   "resource": {"type": "object", "description": "the refund (out_refund_no, refund_id, "
                                                                 "refund_status, amount), AEAD_AES_256_GCM-encrypted"}},
    "description": "WeChat Pay's v3 refund notification, signed over timestamp, nonce and these bytes"}}}


@routes.post(REFUND_NOTIFY_PATH, "payments.notify.wechat_refund", caller=PROVIDER, shedding="payment_notify",
             raw_body=WECHAT_REFUND_ENVELOPE, params=WECHAT_HEADERS,
             summary="WeChat Pay v3 refund notification (REFUND.SUCCESS, ABNORMAL, CLOSED); 204 only after it is "
                     "recorded in the refund's ledger",
             answers={
                 204: Answer(None, "recorded (or recorded before: a notification sent twice changes nothing)"),
                 400: Answer(WECHAT_REFUSED, "rejected: bad signature, malformed, an unknown refund, or one that "
                                             "does not match it; malformed_request (the API's error) when the "
                                             "body's framing is broken"),
                 500: Answer(WechatReply, "not recorded (store down); WeChat Pay retries"),
             },
             errors={503: "service_unavailable: payment keys missing; or shed"})
async def notify_wechat_refund(request: web.Request) -> web.Response:
    """WeChat Pay's refund notification: the refund moved and the event recorded once, then 204."""
    runtime = _runtime(request)
    verified = runtime.verify_wechat_refund(request.headers, await request.read())
    if isinstance(verified, str):
        metrics.PAYMENT_REJECTED.labels("wechat", verified).inc()
        await throttle.record_failure(request)
        log.warning("refund notification from wechat failed verification: %s (sender %s)", verified,
                    _sender(request))
        return _wechat_fail(400, verified)
    try:
        outcome = await refunds.record_notification(request.app[keys.PG], verified,
                                                    merchant_id=request.app[keys.SETTINGS].wechat_mch_id)
    except Exception as exc:  # store down, or a bug: never acknowledge what was not recorded
        log.warning("refund notification %s not recorded: %s", verified.event_id, exc)
        return _wechat_fail(500, "not recorded, retry")
    if not outcome.acknowledged:
        metrics.PAYMENT_REJECTED.labels("wechat", outcome.reason).inc()
        log.warning("refund notification %s rejected: %s (refund %s)", verified.event_id, outcome.reason,
                    verified.refund_no)
        return _wechat_fail(400, outcome.reason or "rejected")
    log.info("refund %s: %s from wechat (%s)", verified.refund_no, verified.event_type, outcome.result)
    return web.Response(status=204)
