"""WeChat Pay v3: signed headers, encrypted resources, request authorization."""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import pytest

from payments import wechat
from payments.errors import BadNotification, BadSignature
from payments.keys import PaymentKeys

pytestmark = pytest.mark.unit

APP_ID = "wx00000000000000e1"
MCH_ID = "1900000001"


def notification(keys: PaymentKeys, **overrides: object) -> tuple[dict[str, str], bytes]:
    fields: dict[str, object] = {"order_no": "EG202406010002", "transaction_id": "4200001234202406011234567890",
                                 "amount_fen": 8800, "app_id": APP_ID, "mch_id": MCH_ID, "keys": keys}
    fields.update(overrides)
    return wechat.build_notification(**fields)  # type: ignore[arg-type]


def resigned(body: bytes, keys: PaymentKeys) -> tuple[dict[str, str], bytes]:
    """``body`` with fresh, valid platform signature headers."""
    return wechat.sign_headers(body, keys.wechat_platform_private, keys.wechat_platform_serial), body


def with_resource(
    keys: PaymentKeys, transaction: dict[str, object], apiv3_key: bytes | None = None
) -> tuple[dict[str, str], bytes]:
    """A correctly signed notification carrying ``transaction`` as its resource."""
    envelope = {"id": "evt-1", "create_time": "2024-06-01T10:00:00+08:00", "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
                "resource": wechat.encrypt_resource(transaction, apiv3_key or keys.wechat_apiv3_key)}
    return resigned(json.dumps(envelope).encode(), keys)


def test_signed_message_is_lines_each_ending_in_newline() -> None:
    assert wechat.signed_message("1700000000", "NONCE", b'{"a":1}') == b'1700000000\nNONCE\n{"a":1}\n'
    assert wechat.signed_message("GET", "/v3/x?mchid=1", "1", "N", b"") == b"GET\n/v3/x?mchid=1\n1\nN\n\n"


def test_notification_round_trip(keys: PaymentKeys) -> None:
    headers, body = notification(keys, event_id="EV-1")
    envelope = json.loads(body)
    assert envelope["resource_type"] == "encrypt-resource" and envelope["event_type"] == "TRANSACTION.SUCCESS"
    resource = envelope["resource"]
    assert (resource["original_type"], resource["algorithm"], resource["associated_data"]) == (
        "transaction", "AEAD_AES_256_GCM", "transaction")
    assert "EG202406010002" not in body.decode()  # the transaction travels encrypted
    assert headers["Wechatpay-Serial"] == keys.wechat_platform_serial
    notice = wechat.parse_notification(headers, body, keys)
    assert (notice.provider, notice.event_id, notice.order_no, notice.trade_no) == (
        "wechat", "EV-1", "EG202406010002", "4200001234202406011234567890")
    assert (notice.amount_fen, notice.app_id, notice.merchant_id, notice.status, notice.paid) == (
        8800, APP_ID, MCH_ID, "SUCCESS", True)
    assert notice.payload["id"] == "EV-1"
    assert notice.payload["resource"]["amount"] == {"total": 8800, "payer_total": 8800, "currency": "CNY",
                                                    "payer_currency": "CNY"}
    json.dumps(notice.payload)


def test_header_names_are_case_insensitive(keys: PaymentKeys) -> None:
    headers, body = notification(keys)
    assert wechat.parse_notification({k.lower(): v for k, v in headers.items()}, body, keys).paid


def test_other_states_are_not_paid(keys: PaymentKeys) -> None:
    headers, body = notification(keys, trade_state="CLOSED", transaction_id="")
    notice = wechat.parse_notification(headers, body, keys)
    assert (notice.status, notice.paid, notice.trade_no) == ("CLOSED", False, "")


def test_unknown_serial_is_a_bad_signature(keys: PaymentKeys) -> None:
    headers, body = notification(keys)
    with pytest.raises(BadSignature) as caught:
        wechat.parse_notification({**headers, "Wechatpay-Serial": "0" * 40}, body, keys)
    assert caught.value.reason == "unknown_serial"


def test_stale_timestamps_are_refused_within_the_skew_accepted(keys: PaymentKeys) -> None:
    now = time.time()
    headers, body = notification(keys, now=now)
    assert wechat.parse_notification(headers, body, keys, now=now + 299).paid
    for later in (now + 301, now - 301):
        with pytest.raises(BadSignature) as caught:
            wechat.parse_notification(headers, body, keys, now=later)
        assert caught.value.reason == "stale_timestamp"
    assert wechat.parse_notification(headers, body, keys, now=now + 3000, max_skew_s=3600).paid


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"])
def test_missing_headers_are_a_bad_signature(keys: PaymentKeys, missing: str) -> None:
    headers, body = notification(keys)
    del headers[missing]
    with pytest.raises(BadSignature) as caught:
        wechat.parse_notification(headers, body, keys)
    assert caught.value.reason == "missing_signature"


def test_a_changed_body_or_header_fails_the_signature(keys: PaymentKeys) -> None:
    headers, body = notification(keys)
    for bad_headers, bad_body in [(headers, body.replace(b'"id":"', b'"id":"X')),
                                  ({**headers, "Wechatpay-Nonce": "OTHER"}, body),
                                  ({**headers, "Wechatpay-Signature": "bm90IGEgc2lnbmF0dXJl"}, body),
                                  ({**headers, "Wechatpay-Timestamp": str(int(time.time()) - 1)}, body)]:
        with pytest.raises(BadSignature) as caught:
            wechat.parse_notification(bad_headers, bad_body, keys)
        assert caught.value.reason == "bad_signature"


def test_a_signed_but_tampered_ciphertext_cannot_be_decrypted(keys: PaymentKeys) -> None:
    _, body = notification(keys)
    envelope = json.loads(body)
    sealed = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    sealed[5] ^= 0x01
    envelope["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    headers, body = resigned(json.dumps(envelope).encode(), keys)
    with pytest.raises(BadNotification) as caught:
        wechat.parse_notification(headers, body, keys)
    assert caught.value.reason == "undecryptable_resource"


@pytest.mark.parametrize(("change", "reason"), [
    ({"associated_data": "other"}, "undecryptable_resource"),
    ({"nonce": "AAAAAAAAAAAA"}, "undecryptable_resource"),
    ({"ciphertext": "%%%"}, "undecryptable_resource"),
    ({"algorithm": "AES_128_CBC"}, "unsupported_algorithm"),
    ({"ciphertext": None}, "malformed_resource"),
])
def test_resource_fields_that_do_not_open(keys: PaymentKeys, change: dict[str, object], reason: str) -> None:
    _, body = notification(keys)
    envelope = json.loads(body)
    envelope["resource"].update(change)
    headers, body = resigned(json.dumps(envelope).encode(), keys)
    with pytest.raises(BadNotification) as caught:
        wechat.parse_notification(headers, body, keys)
    assert caught.value.reason == reason


def test_another_apiv3_key_cannot_open_the_resource(keys: PaymentKeys) -> None:
    headers, body = notification(keys)
    other = dataclasses.replace(keys, wechat_apiv3_key=b"0" * 32)
    with pytest.raises(BadNotification) as caught:
        wechat.parse_notification(headers, body, other)
    assert caught.value.reason == "undecryptable_resource"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"id":"e"}', b'{"resource":{}}'])
def test_signed_bodies_of_the_wrong_shape(keys: PaymentKeys, body: bytes) -> None:
    headers, body = resigned(body, keys)
    with pytest.raises(BadNotification) as caught:
        wechat.parse_notification(headers, body, keys)
    assert caught.value.reason in {"malformed_body", "missing_field"}


@pytest.mark.parametrize(("transaction", "reason", "detail"), [
    ({"mchid": MCH_ID, "out_trade_no": "A", "trade_state": "NOTPAY", "amount": {"total": 1}}, "missing_field", "appid"),
    ({"appid": APP_ID, "mchid": MCH_ID, "trade_state": "NOTPAY", "amount": {"total": 1}},
     "missing_field", "out_trade_no"),
    ({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "A", "trade_state": "SUCCESS", "amount": {"total": 1}},
     "missing_field", "transaction_id"),
    ({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "A", "trade_state": "NOTPAY"}, "missing_field", "amount"),
    ({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "A", "trade_state": "NOTPAY", "amount": {"total": "1"}},
     "bad_amount", "'1'"),
    ({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "A", "trade_state": "NOTPAY", "amount": {"total": -1}},
     "bad_amount", "-1"),
    ({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "A", "trade_state": "NOTPAY",
      "amount": {"total": 1, "currency": "USD"}}, "bad_currency", "USD"),
])
def test_decrypted_transactions_missing_what_is_needed(keys: PaymentKeys, transaction: dict[str, object],
                                                      reason: str, detail: str) -> None:
    headers, body = with_resource(keys, transaction)
    with pytest.raises(BadNotification) as caught:
        wechat.parse_notification(headers, body, keys)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


def test_request_authorization_round_trip(keys: PaymentKeys) -> None:
    path, body = "/v3/pay/transactions/out-trade-no/A1/close", b'{"mchid":"1900000001"}'
    header = wechat.authorization("POST", path, body, mch_id=MCH_ID, serial=keys.wechat_merchant_serial,
                                  private_key=keys.wechat_merchant_private)
    assert header.startswith('WECHATPAY2-SHA256-RSA2048 mchid="1900000001",nonce_str="')
    fields = wechat.parse_authorization(header)
    assert fields.keys() == {"mchid", "nonce_str", "signature", "timestamp", "serial_no"}
    verify = (keys.wechat_merchant_public, keys.wechat_merchant_serial)
    assert wechat.verify_authorization("POST", path, body, header, *verify) == MCH_ID
    for method, other_path, other_body in [("GET", path, body), ("POST", path + "?x=1", body),
                                           ("POST", path, b'{"mchid":"1900000002"}')]:
        with pytest.raises(BadSignature):
            wechat.verify_authorization(method, other_path, other_body, header, *verify)
    with pytest.raises(BadSignature, match="unknown_serial"):
        wechat.verify_authorization("POST", path, body, header, keys.wechat_merchant_public, "ABCDEF")
    for garbage in ["", "Bearer x", "WECHATPAY2-SHA256-RSA2048 mchid=1"]:
        with pytest.raises(BadSignature, match="missing_signature"):
            wechat.verify_authorization("POST", path, body, garbage, *verify)
