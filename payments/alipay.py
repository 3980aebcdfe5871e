"""Alipay (open platform, RSA2): asynchronous notifications, signed requests and signed replies.

Notifications are form posts signed by the platform key over the sorted ``k=v&…`` string
without ``sign``/``sign_type``; requests to the gateway are signed by our app key over the
same string keeping ``sign_type``; each reply signs the raw JSON text of its
``<method>_response`` member. A refund (``alipay.trade.refund``) is answered at once, success or
failure, and is idempotent by its ``out_request_no``; ``alipay.trade.fastpay.refund.query`` asks
about one later.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from core.timeutil import SHANGHAI, utcnow
from payments.errors import BadNotification, BadSignature
from payments.keys import MerchantKeys, PaymentKeys
from payments.money import InvalidAmount, fen_to_yuan, yuan_to_fen
from payments.notice import Notice
from payments.signing import rsa_sign, rsa_verify

GATEWAY_PATH = "/gateway.do"  # the open platform's one endpoint, under the base URL (EXAMGATE_ALIPAY_URL)
REPLY_OK = "success"  # the exact reply body that stops Alipay resending a notification
SUCCESS_STATUSES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
CODE_OK = "10000"
REFUND_SUCCESS = "REFUND_SUCCESS"  # alipay.trade.fastpay.refund.query's refund_status of a refund made
SIGN_TYPE = "RSA2"
_REQUIRED = ("notify_id", "app_id", "out_trade_no", "trade_no", "total_amount", "trade_status")


def signing_string(params: Mapping[str, Any], *, keep_sign_type: bool = False) -> str:
    """``k=v`` pairs sorted by key, joined by ``&``, without ``sign``, ``sign_type`` and empty values.

    Requests to the Alipay gateway keep ``sign_type`` in the string (``keep_sign_type``);
    notifications leave it out.
    """
    excluded = {"sign"} if keep_sign_type else {"sign", "sign_type"}
    pairs = ((str(k), "" if v is None else str(v)) for k, v in params.items() if k not in excluded)
    return "&".join(f"{k}={v}" for k, v in sorted(pairs) if v != "")


def sign(params: Mapping[str, Any], private_key: rsa.RSAPrivateKey, *, keep_sign_type: bool = False) -> str:
    """The base64 SHA256withRSA signature of ``signing_string(params)``."""
    return rsa_sign(signing_string(params, keep_sign_type=keep_sign_type).encode("utf-8"), private_key)


def verify(params: Mapping[str, Any], public_key: rsa.RSAPublicKey, *, keep_sign_type: bool = False) -> bool:
    """Whether ``params["sign"]`` signs the other parameters; False (never an exception) on garbage."""
    try:
        message = signing_string(params, keep_sign_type=keep_sign_type).encode("utf-8")
    except (TypeError, ValueError, UnicodeError):
        return False
    return rsa_verify(message, params.get("sign"), public_key)


def parse_notification(form: Mapping[str, str], keys: MerchantKeys) -> Notice:
    """Check an asynchronous notification and turn it into a ``Notice``.

    Raises ``BadSignature`` (missing, other sign type, invalid) or ``BadNotification`` (fields).
    """
    params = {str(k): str(v) for k, v in form.items()}
    if not params.get("sign"):
        raise BadSignature("missing_signature")
    if params.get("sign_type", SIGN_TYPE) != SIGN_TYPE:
        raise BadSignature("unsupported_sign_type", params["sign_type"])
    if not verify(params, keys.alipay_platform_public):
        raise BadSignature("bad_signature")
    for name in _REQUIRED:
        if not params.get(name):
            raise BadNotification("missing_field", name)
    try:
        amount_fen = yuan_to_fen(params["total_amount"])
    except InvalidAmount:
        raise BadNotification("bad_amount", params["total_amount"]) from None
    return Notice(
        provider="alipay",
        event_id=params["notify_id"],
        order_no=params["out_trade_no"],
        trade_no=params["trade_no"],
        amount_fen=amount_fen,
        app_id=params["app_id"],
        merchant_id=params.get("seller_id", ""),
        status=params["trade_status"],
        paid=params["trade_status"] in SUCCESS_STATUSES,
        payload=params,
    )


def build_notification(*, order_no: str, trade_no: str, amount_fen: int, app_id: str, seller_id: str,
                       status: str = "TRADE_SUCCESS", notify_id: str | None = None, keys: PaymentKeys,
                       subject: str = "考试报名费", buyer_id: str = "2088102177846880",
                       paid_at: datetime | None = None, now: datetime | None = None) -> dict[str, str]:
    """A notification as Alipay posts it, signed with the platform key (the simulator and tests send it).

    Resends of one event keep ``notify_id`` and ``paid_at``; ``notify_time`` is the moment of sending.
    """
    now = now or utcnow()
    paid_at = paid_at or now
    amount = fen_to_yuan(amount_fen)
    params = {
        "notify_time": alipay_time(now),
        "notify_type": "trade_status_sync",
        "notify_id": notify_id or new_notify_id(),
        "app_id": app_id,
        "auth_app_id": app_id,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": SIGN_TYPE,
        "trade_no": trade_no,
        "out_trade_no": order_no,
        "subject": subject,
        "total_amount": amount,
        "trade_status": status,
        "seller_id": seller_id,
        "buyer_id": buyer_id,
        "gmt_create": alipay_time(paid_at),
    }
    if status in SUCCESS_STATUSES:
        params.update({"gmt_payment": alipay_time(paid_at), "receipt_amount": amount,
                       "buyer_pay_amount": amount, "invoice_amount": amount, "point_amount": "0.00"})
    params["sign"] = sign(params, keys.alipay_platform_private)
    return params


def build_request(method: str, biz_content: Mapping[str, Any], *, app_id: str, private_key: rsa.RSAPrivateKey,
                  notify_url: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """The form of one gateway call (``alipay.trade.query`` …): common parameters, ``biz_content``, ``sign``."""
    params = {
        "app_id": app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": SIGN_TYPE,
        "timestamp": alipay_time(now or utcnow()),
        "version": "1.0",
        "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
    }
    if notify_url:
        params["notify_url"] = notify_url
    params["sign"] = sign(params, private_key, keep_sign_type=True)
    return params


def response_key(method: str) -> str:
    """The member of the reply that carries the result: ``alipay.trade.query`` → ``alipay_trade_query_response``."""
    return method.replace(".", "_") + "_response"


def response_body(method: str, content: Mapping[str, Any], private_key: rsa.RSAPrivateKey | None) -> str:
    """The reply text; ``sign`` covers the exact JSON text of the response member (unsigned without a key)."""
    member = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    body = f'{{"{response_key(method)}":{member}'
    if private_key is not None:
        body += f',"sign":"{rsa_sign(member.encode("utf-8"), private_key)}"'
    return body + "}"


def read_response(text: str, method: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The ``<method>_response`` (or ``error_response``) member of a reply, its signature checked.

    A successful reply (``code`` 10000) must be signed; an error reply may come unsigned, but a
    signature that is present must be right. Raises ``BadSignature``, or ``ValueError`` when the
    text is not an Alipay reply at all.
    """
    whole = json.loads(text)
    if not isinstance(whole, dict):
        raise ValueError("not an Alipay reply: not a JSON object")
    key = next((k for k in (response_key(method), "error_response") if isinstance(whole.get(k), dict)), None)
    if key is None:
        raise ValueError("not an Alipay reply: no response member")
    content: dict[str, Any] = whole[key]
    signature = whole.get("sign")
    if signature is None and content.get("code") != CODE_OK:
        return content
    if not rsa_verify(_raw_member(text, key, content), signature, public_key):
        raise BadSignature("bad_response_signature" if signature else "missing_signature")
    return content


def _raw_member(text: str, key: str, content: dict[str, Any]) -> bytes:
    """The exact text of ``key``'s value as it appears in the reply: what Alipay signed."""
    decoder = json.JSONDecoder()
    at = text.find(f'"{key}"')
    while at >= 0:
        value_at = text.find(":", at + len(key) + 2) + 1
        while value_at and value_at < len(text) and text[value_at].isspace():
            value_at += 1
        try:
            found, end = decoder.raw_decode(text, value_at)
        except ValueError:
            found = None
        if value_at and found == content:
            return text[value_at:end].encode("utf-8")
        at = text.find(f'"{key}"', at + 1)
    raise ValueError(f"{key} not found in the reply text")


def alipay_time(moment: datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, as every Alipay timestamp."""
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def new_notify_id() -> str:
    """A fresh notification id (Alipay's are long opaque strings)."""
    return secrets.token_hex(16)
