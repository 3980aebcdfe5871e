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
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from core.errors import NotFound
from core.timeutil import iso_local
from gateway import auth, keys, metrics, throttle
from gateway.bodies import json_response, read_json
from gateway.errors import ApiError, Overloaded, ValidationFailed
from gateway.routes.registrations import _not_found, _registration_id
from payments import orders, settle
from payments.runtime import PaymentsRuntime
from queueing import holds

log = logging.getLogger("examgate.payments")

NO_STORE = {"Cache-Control": "no-store"}


def _provider(body: dict[str, Any]) -> str:
    problems = {key: "unknown_field" for key in body if key != "provider"}
    provider = body.get("provider")
    if provider is None:
        problems["provider"] = "required"
    elif provider not in orders.PROVIDERS:
        problems["provider"] = "invalid_choice"
    if problems:
        raise ValidationFailed(problems)
    return str(provider)


def _runtime(request: web.Request) -> PaymentsRuntime:
    runtime = request.app.get(keys.PAYMENTS)
    if runtime is None:
        raise Overloaded("支付服务暂不可用，请稍后重试", code="service_unavailable", retry_after_s=30,
                         details={"reason": "payment_keys_missing"})
    return runtime


async def create_order(request: web.Request) -> web.Response:
    """Open the registration's order: 201 ``{"order_no", "provider", "amount_fen", "pay_url", "expires_at"}`` (200 when it existed)."""
    registration_id = _registration_id(request)
    candidate = await auth.candidate_id(request)
    provider = _provider(await read_json(request))
    runtime = _runtime(request)
    app = request.app
    ref = await app[keys.REGISTRATION_REFS].get(app[keys.PG], registration_id)
    if ref is None or ref.candidate_id != candidate:
        raise _not_found()
    site, expires_at_ms = await holds.current_hold(app[keys.REDIS], ref.exam_id, registration_id)
    expires = None if expires_at_ms is None else datetime.fromtimestamp(expires_at_ms / 1000, timezone.utc)
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


def setup(app: web.Application) -> None:
    """Add the order and notification routes."""
    app.router.add_post("/api/v1/registrations/{registration_id}/orders", create_order, name="orders.create")
    app.router.add_post("/api/v1/payments/notify/alipay", notify_alipay, name="payments.notify.alipay")
    app.router.add_post("/api/v1/payments/notify/wechat", notify_wechat, name="payments.notify.wechat")

