"""Alipay RSA2: the signing string, notifications built and parsed, requests and replies signed both ways."""

from __future__ import annotations

import json

import pytest

from payments import alipay
from payments.errors import BadNotification, BadSignature
from payments.keys import PaymentKeys

pytestmark = pytest.mark.unit

APP_ID = "2021000000000001"
SELLER_ID = "2088102119685838"


def notification(keys: PaymentKeys, **overrides: object) -> dict[str, str]:
    fields: dict[str, object] = {"order_no": "EG202406010001", "trade_no": "2024060122001499991234567890",
                                 "amount_fen": 12345, "app_id": APP_ID, "seller_id": SELLER_ID, "keys": keys}
    fields.update(overrides)
    return alipay.build_notification(**fields)  # type: ignore[arg-type]


def resigned(params: dict[str, str], keys: PaymentKeys) -> dict[str, str]:
    """``params`` signed again by the platform: a genuine notification with these fields."""
    params = dict(params)
    params["sign"] = alipay.sign(params, keys.alipay_platform_private)
    return params


def test_signing_string_is_sorted_pairs_without_sign_sign_type_and_empty_values() -> None:
    params = {"total_amount": "12.34", "app_id": "2021", "sign": "abc==", "sign_type": "RSA2", "buyer_id": "",
              "subject": "考试 报名&费=1", "notify_id": "n1", "charset": "utf-8"}
    expected = "app_id=2021&charset=utf-8&notify_id=n1&subject=考试 报名&费=1&total_amount=12.34"
    assert alipay.signing_string(params) == expected
    assert alipay.signing_string(params, keep_sign_type=True) == (
        "app_id=2021&charset=utf-8&notify_id=n1&sign_type=RSA2&subject=考试 报名&费=1&total_amount=12.34")


def test_sign_verify_round_trip_and_tampering(keys: PaymentKeys) -> None:
    params = {"out_trade_no": "A1", "total_amount": "12.34", "sign_type": "RSA2"}
    params["sign"] = alipay.sign(params, keys.alipay_platform_private)
    assert alipay.verify(params, keys.alipay_platform_public)
    assert not alipay.verify({**params, "total_amount": "0.01"}, keys.alipay_platform_public)
    assert not alipay.verify(params, keys.alipay_app_public)  # another key
    assert alipay.verify({**params, "sign_type": "RSA"}, keys.alipay_platform_public)  # not covered, by design


@pytest.mark.parametrize("garbage", [None, "", "!!!not base64!!!", "YWJj", 42, b"\x00\xff", "A" * 5000])
def test_verify_never_raises_on_garbage(keys: PaymentKeys, garbage: object) -> None:
    assert not alipay.verify({"a": "1", "sign": garbage}, keys.alipay_platform_public)  # type: ignore[dict-item]


def test_notification_has_the_real_fields_and_parses_into_a_notice(keys: PaymentKeys) -> None:
    params = notification(keys, notify_id="nid-1")
    assert {"notify_time", "notify_type", "notify_id", "app_id", "charset", "version", "sign_type", "sign",
            "trade_no", "out_trade_no", "total_amount", "trade_status", "gmt_payment", "seller_id",
            "buyer_id", "subject"} <= params.keys()
    assert params["notify_type"] == "trade_status_sync" and params["total_amount"] == "123.45"
    notice = alipay.parse_notification(params, keys)
    assert (notice.provider, notice.event_id, notice.order_no, notice.trade_no) == (
        "alipay", "nid-1", "EG202406010001", "2024060122001499991234567890")
    assert (notice.amount_fen, notice.app_id, notice.merchant_id) == (12345, APP_ID, SELLER_ID)
    assert notice.status == "TRADE_SUCCESS" and notice.paid
    assert notice.payload == params
    json.dumps(notice.payload)


@pytest.mark.parametrize(("status", "paid"), [("TRADE_SUCCESS", True), ("TRADE_FINISHED", True),
                                              ("WAIT_BUYER_PAY", False), ("TRADE_CLOSED", False)])
def test_only_success_statuses_are_paid(keys: PaymentKeys, status: str, paid: bool) -> None:
    notice = alipay.parse_notification(notification(keys, status=status), keys)
    assert notice.status == status and notice.paid is paid


@pytest.mark.parametrize(("field", "value"), [("total_amount", "0.01"), ("out_trade_no", "EG-OTHER"),
                                              ("app_id", "2021999999999999"), ("trade_status", "TRADE_SUCCESS ")])
def test_a_tampered_field_fails_the_signature(keys: PaymentKeys, field: str, value: str) -> None:
    params = {**notification(keys), field: value}
    with pytest.raises(BadSignature) as caught:
        alipay.parse_notification(params, keys)
    assert caught.value.reason == "bad_signature"


def test_signed_by_another_key_missing_or_other_sign_type_is_a_bad_signature(keys: PaymentKeys) -> None:
    params = notification(keys)
    forged = {**params, "sign": alipay.sign(params, keys.alipay_app_private)}
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    for bad, reason in [(forged, "bad_signature"), (unsigned, "missing_signature"),
                        ({**params, "sign_type": "RSA"}, "unsupported_sign_type")]:
        with pytest.raises(BadSignature) as caught:
            alipay.parse_notification(bad, keys)
        assert caught.value.reason == reason


@pytest.mark.parametrize("field", ["notify_id", "out_trade_no", "trade_no", "total_amount", "app_id", "trade_status"])
def test_a_signed_notification_without_a_needed_field_is_bad(keys: PaymentKeys, field: str) -> None:
    params = resigned({k: v for k, v in notification(keys).items() if k != field}, keys)
    with pytest.raises(BadNotification) as caught:
        alipay.parse_notification(params, keys)
    assert (caught.value.reason, caught.value.detail) == ("missing_field", field)


@pytest.mark.parametrize("amount", ["1.234", "-1.00", "abc", "1e3"])
def test_a_signed_notification_with_a_bad_amount_is_bad(keys: PaymentKeys, amount: str) -> None:
    params = resigned({**notification(keys), "total_amount": amount}, keys)
    with pytest.raises(BadNotification) as caught:
        alipay.parse_notification(params, keys)
    assert caught.value.reason == "bad_amount"


def test_requests_keep_sign_type_in_the_signed_string(keys: PaymentKeys) -> None:
    form = alipay.build_request("alipay.trade.query", {"out_trade_no": "A1"}, app_id=APP_ID,
                                private_key=keys.alipay_app_private)
    assert form["method"] == "alipay.trade.query" and json.loads(form["biz_content"]) == {"out_trade_no": "A1"}
    assert {"app_id", "format", "charset", "sign_type", "timestamp", "version", "sign"} <= form.keys()
    assert alipay.verify(form, keys.alipay_app_public, keep_sign_type=True)
    assert not alipay.verify({**form, "sign_type": "RSA"}, keys.alipay_app_public, keep_sign_type=True)
    assert not alipay.verify({**form, "biz_content": '{"out_trade_no":"A2"}'}, keys.alipay_app_public,
                             keep_sign_type=True)


def test_replies_sign_the_raw_response_member(keys: PaymentKeys) -> None:
    content = {"code": "10000", "msg": "Success", "out_trade_no": "A1", "total_amount": "1.00"}
    body = alipay.response_body("alipay.trade.query", content, keys.alipay_platform_private)
    assert body.startswith('{"alipay_trade_query_response":{')
    assert alipay.read_response(body, "alipay.trade.query", keys.alipay_platform_public) == content
    # Whitespace around the member is allowed; the signed text itself is what counts.
    spaced = body.replace('"alipay_trade_query_response":', '"alipay_trade_query_response" : ')
    assert alipay.read_response(spaced, "alipay.trade.query", keys.alipay_platform_public) == content
    with pytest.raises(BadSignature):
        alipay.read_response(body.replace("1.00", "9.00"), "alipay.trade.query", keys.alipay_platform_public)
    with pytest.raises(BadSignature):
        alipay.read_response(alipay.response_body("alipay.trade.query", content, None), "alipay.trade.query",
                             keys.alipay_platform_public)


def test_unsigned_error_replies_are_read_and_garbage_is_refused(keys: PaymentKeys) -> None:
    error = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method"}
    assert alipay.read_response(alipay.response_body("error", error, None), "alipay.trade.query",
                                keys.alipay_platform_public) == error
    for garbage in ["", "<html>", "[]", '{"other_response":{}}']:
        with pytest.raises(ValueError):
            alipay.read_response(garbage, "alipay.trade.query", keys.alipay_platform_public)
