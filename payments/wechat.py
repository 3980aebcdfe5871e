"""WeChat Pay API v3: signed notifications with encrypted resources, signed requests and replies.

Messages from the platform (notifications, replies) carry ``Wechatpay-Timestamp``, ``-Nonce``,
``-Signature`` and ``-Serial`` headers: SHA256withRSA by the platform key over
``"{timestamp}\\n{nonce}\\n{body}\\n"``. Requests carry ``Authorization: WECHATPAY2-SHA256-RSA2048 …``
signed by the merchant key over ``"METHOD\\nPATH?QUERY\\ntimestamp\\nnonce\\nbody\\n"``. A notification's
``resource`` is AEAD_AES_256_GCM-encrypted under the API v3 key; a refund notification
(``REFUND.SUCCESS`` / ``REFUND.ABNORMAL`` / ``REFUND.CLOSED``) carries the refund the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.timeutil import iso_local
from payments.errors import BadNotification, BadSignature
from payments.keys import MerchantKeys, PaymentKeys
from payments.notice import Notice, RefundNotice
from payments.signing import rsa_sign, rsa_verify

AUTH_SCHEMA = "WECHATPAY2-SHA256-RSA2048"
ALGORITHM = "AEAD_AES_256_GCM"
SUCCESS_STATE = "SUCCESS"
MAX_SKEW_S = 300
_NONCE_ALPHABET = string.ascii_uppercase + string.digits


def signed_message(*parts: str | bytes) -> bytes:
    """Each part followed by a newline: the text every v3 signature covers."""
    return b"".join((p.encode("utf-8") if isinstance(p, str) else p) + b"\n" for p in parts)


def new_nonce(length: int = 32) -> str:
    """A random nonce string of upper-case letters and digits."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


# --- platform → merchant: notifications and replies -------------------------------------------------

def sign_headers(body: bytes, private_key: rsa.RSAPrivateKey, serial: str, *, now: float | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """The ``Wechatpay-*`` headers the platform puts on a notification or a reply with ``body``."""
    timestamp, nonce = str(int(time.time() if now is None else now)), nonce or new_nonce()
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": rsa_sign(signed_message(timestamp, nonce, body), private_key),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": AUTH_SCHEMA,
    }


def verify_headers(headers: Mapping[str, str], body: bytes, public_key: rsa.RSAPublicKey, serial: str, *,
                   now: float | None = None, max_skew_s: int = MAX_SKEW_S) -> None:
    """Check the ``Wechatpay-*`` headers of a platform message; raise ``BadSignature`` with the reason."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get("wechatpay-timestamp", "")
    nonce = lowered.get("wechatpay-nonce", "")
    signature = lowered.get("wechatpay-signature", "")
    if not (timestamp and nonce and signature and lowered.get("wechatpay-serial")):
        raise BadSignature("missing_signature")
    if lowered["wechatpay-serial"].upper() != serial.upper():
        raise BadSignature("unknown_serial", lowered["wechatpay-serial"])
    if not timestamp.isascii() or not timestamp.isdigit():
        raise BadSignature("bad_timestamp", timestamp[:32])
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew_s:
        raise BadSignature("stale_timestamp", timestamp)
    if not rsa_verify(signed_message(timestamp, nonce, body), signature, public_key):
        raise BadSignature("bad_signature")


def encrypt_resource(plaintext: Mapping[str, Any], apiv3_key: bytes, *, original_type: str = "transaction",
                     associated_data: str = "transaction") -> dict[str, str]:
    """A notification ``resource``: the JSON ``plaintext`` sealed with AEAD_AES_256_GCM."""
    nonce = new_nonce(12)
    data = json.dumps(plaintext, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode(), data, associated_data.encode())
    return {"original_type": original_type, "algorithm": ALGORITHM, "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": associated_data, "nonce": nonce}


def decrypt_resource(resource: Mapping[str, Any], apiv3_key: bytes) -> dict[str, Any]:
    """The JSON object inside a ``resource``; ``BadNotification`` when it cannot be opened."""
    if resource.get("algorithm") != ALGORITHM:
        raise BadNotification("unsupported_algorithm", str(resource.get("algorithm"))[:64])
    ciphertext, nonce = resource.get("ciphertext"), resource.get("nonce")
    associated = resource.get("associated_data") or ""
    if not (isinstance(ciphertext, str) and isinstance(nonce, str) and isinstance(associated, str)):
        raise BadNotification("malformed_resource", "ciphertext, nonce and associated_data must be strings")
    try:
        plain = AESGCM(apiv3_key).decrypt(nonce.encode(), base64.b64decode(ciphertext, validate=True),
                                          associated.encode())
    except (InvalidTag, binascii.Error, ValueError, UnicodeError):
        raise BadNotification("undecryptable_resource") from None
    try:
        opened = json.loads(plain)
    except ValueError:
        raise BadNotification("malformed_resource", "not JSON") from None
    if not isinstance(opened, dict):
        raise BadNotification("malformed_resource", "not a JSON object")
    return opened


def parse_notification(headers: Mapping[str, str], body: bytes, keys: MerchantKeys, now: float | None = None,
                       max_skew_s: int = MAX_SKEW_S) -> Notice:
    """Check a v3 payment notification and turn it into a ``Notice``.

    The ``payload`` is the notification with its ``resource`` replaced by the decrypted transaction.
    Raises ``BadSignature`` (headers) or ``BadNotification`` (body, resource, fields).
    """
    verify_headers(headers, body, keys.wechat_platform_public, keys.wechat_platform_serial, now=now,
                   max_skew_s=max_skew_s)
    try:
        envelope = json.loads(body)
    except ValueError:
        raise BadNotification("malformed_body", "not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("resource"), dict):
        raise BadNotification("missing_field", "resource")
    if not isinstance(envelope.get("id"), str) or not envelope["id"]:
        raise BadNotification("missing_field", "id")
    transaction = decrypt_resource(envelope["resource"], keys.wechat_apiv3_key)
    return _notice(envelope["id"], transaction, {**envelope, "resource": transaction})


def _notice(event_id: str, tx: dict[str, Any], payload: dict[str, Any]) -> Notice:
    for name in ("appid", "mchid", "out_trade_no", "trade_state"):
        if not isinstance(tx.get(name), str) or not tx[name]:
            raise BadNotification("missing_field", name)
    paid = tx["trade_state"] == SUCCESS_STATE
    trade_no = tx.get("transaction_id") or ""
    if not isinstance(trade_no, str) or (paid and not trade_no):
        raise BadNotification("missing_field", "transaction_id")
    amount = tx.get("amount")
    if not isinstance(amount, dict):
        raise BadNotification("missing_field", "amount")
    total = amount.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise BadNotification("bad_amount", repr(total)[:64])
    if amount.get("currency", "CNY") != "CNY":
        raise BadNotification("bad_currency", str(amount.get("currency"))[:16])
    return Notice(provider="wechat", event_id=event_id, order_no=tx["out_trade_no"], trade_no=trade_no,
                  amount_fen=total, app_id=tx["appid"], merchant_id=tx["mchid"], status=tx["trade_state"],
                  paid=paid, payload=payload)


def transaction(*, order_no: str, transaction_id: str | None, amount_fen: int, app_id: str, mch_id: str,
                trade_state: str, paid_at: datetime | None = None, payer_openid: str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                description: str = "考试报名费") -> dict[str, Any]:
    """A transaction object as v3 shows it (notification resource and order query reply)."""
    tx: dict[str, Any] = {
        "appid": app_id,
        "mchid": mch_id,
        "out_trade_no": order_no,
        "trade_type": "NATIVE",
        "trade_state": trade_state,
        "trade_state_desc": _STATE_DESC.get(trade_state, trade_state),
        "description": description,
        "attach": "",
        "amount": {"total": amount_fen, "currency": "CNY"},
    }
    if trade_state in (SUCCESS_STATE, "REFUND"):  # paid (and maybe refunded since): the payment's fields
        tx.update({
            "transaction_id": transaction_id,
            "bank_type": "OTHERS",
            "success_time": iso_local(paid_at or datetime.now(UTC)),
            "payer": {"openid": payer_openid},
            "amount": {"total": amount_fen, "payer_total": amount_fen, "currency": "CNY", "payer_currency": "CNY"},
        })
    return tx


_STATE_DESC = {"SUCCESS": "支付成功", "NOTPAY": "未支付", "CLOSED": "已关闭", "REFUND": "转入退款",
               "USERPAYING": "用户支付中", "PAYERROR": "支付失败"}


def build_notification(*, order_no: str, transaction_id: str, amount_fen: int, app_id: str, mch_id: str,
                       trade_state: str = "SUCCESS", event_id: str | None = None, keys: PaymentKeys,
                       now: float | None = None, paid_at: datetime | None = None,
                       description: str = "考试报名费") -> tuple[dict[str, str], bytes]:
    """Headers and body of a notification as the platform posts it (the simulator and tests send it).

    Resends of one event keep ``event_id``; each is signed afresh at ``now``.
    """
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    tx = transaction(order_no=order_no, transaction_id=transaction_id, amount_fen=amount_fen, app_id=app_id,
                     mch_id=mch_id, trade_state=trade_state, paid_at=paid_at or moment, description=description)
    envelope = {
        "id": event_id or str(uuid.uuid4()),
        "create_time": iso_local(moment),
        "resource_type": "encrypt-resource",
        "event_type": f"TRANSACTION.{trade_state}",
        "summary": _STATE_DESC.get(trade_state, trade_state),
        "resource": encrypt_resource(tx, keys.wechat_apiv3_key),
    }
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json",
               **sign_headers(body, keys.wechat_platform_private, keys.wechat_platform_serial, now=now)}
    return headers, body


# --- refunds ---------------------------------------------------------------------------------------------

REFUND_EVENTS = {"REFUND.SUCCESS": "SUCCESS", "REFUND.ABNORMAL": "ABNORMAL", "REFUND.CLOSED": "CLOSED"}
REFUND_STATES = ("SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED")
_REFUND_SUMMARY = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}


def refund(*, out_refund_no: str, refund_id: str, order_no: str, transaction_id: str, amount_fen: int,
           total_fen: int, status: str, created_at: datetime, succeeded_at: datetime | None = None,
           account: str = "支付用户零钱") -> dict[str, Any]:
    """A refund as v3 shows it (the create and query replies; without ``mchid``, a notification's resource)."""
    found: dict[str, Any] = {
        "refund_id": refund_id,
        "out_refund_no": out_refund_no,
        "transaction_id": transaction_id,
        "out_trade_no": order_no,
        "channel": "ORIGINAL",
        "user_received_account": account,
        "create_time": iso_local(created_at),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {"total": total_fen, "refund": amount_fen, "payer_total": total_fen, "payer_refund": amount_fen,
                   "settlement_total": total_fen, "settlement_refund": amount_fen, "discount_refund": 0,
                   "currency": "CNY"},
    }
    if succeeded_at is not None:
        found["success_time"] = iso_local(succeeded_at)
    return found


def build_refund_notification(found: Mapping[str, Any], *, mch_id: str, keys: PaymentKeys,
                              event_id: str | None = None, now: float | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of a REFUND.* notification for refund ``found`` (its v3 form), signed at ``now``."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    status = str(found["status"])
    resource = {"mchid": mch_id, "out_trade_no": found["out_trade_no"], "transaction_id": found["transaction_id"],
                "out_refund_no": found["out_refund_no"], "refund_id": found["refund_id"], "refund_status": status,
                "user_received_account": found.get("user_received_account", ""),
                "amount": {k: found["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")}}
    if found.get("success_time"):
        resource["success_time"] = found["success_time"]
    envelope = {
        "id": event_id or str(uuid.uuid4()),
        "create_time": iso_local(moment),
        "resource_type": "encrypt-resource",
        "event_type": f"REFUND.{status}",
        "summary": _REFUND_SUMMARY.get(status, status),
        "resource": encrypt_resource(resource, keys.wechat_apiv3_key, original_type="refund",
                                     associated_data="refund"),
    }
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json",
               **sign_headers(body, keys.wechat_platform_private, keys.wechat_platform_serial, now=now)}
    return headers, body


def parse_refund_notification(headers: Mapping[str, str], body: bytes, keys: MerchantKeys,
                              now: float | None = None, max_skew_s: int = MAX_SKEW_S) -> RefundNotice:
    """Check a v3 refund notification and turn it into a ``RefundNotice``.

    Raises ``BadSignature`` (headers) or ``BadNotification`` (body, resource, fields, an event
    type that is not a refund's).
    """
    verify_headers(headers, body, keys.wechat_platform_public, keys.wechat_platform_serial, now=now,
                   max_skew_s=max_skew_s)
    try:
        envelope = json.loads(body)
    except ValueError:
        raise BadNotification("malformed_body", "not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("resource"), dict):
        raise BadNotification("missing_field", "resource")
    if not isinstance(envelope.get("id"), str) or not envelope["id"]:
        raise BadNotification("missing_field", "id")
    event_type = envelope.get("event_type")
    if event_type not in REFUND_EVENTS:
        raise BadNotification("unexpected_event_type", str(event_type)[:64])
    found = decrypt_resource(envelope["resource"], keys.wechat_apiv3_key)
    for name in ("mchid", "out_refund_no", "refund_id", "out_trade_no", "transaction_id", "refund_status"):
        if not isinstance(found.get(name), str) or not found[name]:
            raise BadNotification("missing_field", name)
    if found["refund_status"] != REFUND_EVENTS[event_type]:
        raise BadNotification("status_mismatch", f"{event_type} with refund_status {found['refund_status']}"[:64])
    amount = found.get("amount")
    refund_fen = amount.get("refund") if isinstance(amount, dict) else None
    total_fen = amount.get("total") if isinstance(amount, dict) else None
    for value in (refund_fen, total_fen):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadNotification("bad_amount", repr(amount)[:64])
    assert isinstance(refund_fen, int) and isinstance(total_fen, int)
    return RefundNotice(provider="wechat", event_id=envelope["id"], event_type=event_type,
                        refund_no=found["out_refund_no"], provider_refund_no=found["refund_id"],
                        order_no=found["out_trade_no"], trade_no=found["transaction_id"], amount_fen=refund_fen,
                        total_fen=total_fen, merchant_id=found["mchid"], status=found["refund_status"],
                        payload={**envelope, "resource": found})


# --- merchant → platform: request signatures ----------------------------------------------------------

def authorization(method: str, url_path: str, body: bytes, *, mch_id: str, serial: str,
                  private_key: rsa.RSAPrivateKey, now: float | None = None, nonce: str | None = None) -> str:
    """The ``Authorization`` header of a v3 request; ``url_path`` includes the query string."""
    timestamp, nonce = str(int(time.time() if now is None else now)), nonce or new_nonce()
    signature = rsa_sign(signed_message(method.upper(), url_path, timestamp, nonce, body), private_key)
    return (f'{AUTH_SCHEMA} mchid="{mch_id}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial}"')


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of a v3 ``Authorization`` header; ``BadSignature`` when it is not one."""
    schema, _, rest = header.strip().partition(" ")
    if schema != AUTH_SCHEMA:
        raise BadSignature("missing_signature", "not a WECHATPAY2-SHA256-RSA2048 authorization")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name] = value.strip('"')
    missing = {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} - fields.keys()
    if missing:
        raise BadSignature("missing_signature", f"authorization lacks {', '.join(sorted(missing))}")
    return fields


def verify_authorization(method: str, url_path: str, body: bytes, header: str, public_key: rsa.RSAPublicKey,
                         serial: str, *, now: float | None = None, max_skew_s: int = MAX_SKEW_S) -> str:
    """Check a request's ``Authorization``; return the merchant id it names, or raise ``BadSignature``."""
    fields = parse_authorization(header)
    if fields["serial_no"].upper() != serial.upper():
        raise BadSignature("unknown_serial", fields["serial_no"])
    timestamp = fields["timestamp"]
    if not timestamp.isascii() or not timestamp.isdigit():
        raise BadSignature("bad_timestamp", timestamp[:32])
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew_s:
        raise BadSignature("stale_timestamp", timestamp)
    message = signed_message(method.upper(), url_path, timestamp, fields["nonce_str"], body)
    if not rsa_verify(message, fields["signature"], public_key):
        raise BadSignature("bad_signature")
    return fields["mchid"]
