"""Alibaba Cloud SMS request signing and what its answers mean, without the network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from messaging import aliyun
from messaging.sender import Accepted, Permanent, Retryable

pytestmark = pytest.mark.unit

# The worked example of the provider's signature documentation (SendSms, signed as a GET).
DOCUMENTED = {
    "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123", "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用", "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466", "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007", "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}


def test_the_documented_example_signs_as_documented() -> None:
    assert aliyun.canonical_query(DOCUMENTED) == (
        "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001&RegionId=cn-hangzhou"
        "&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95%E4%B8%93%E7%94%A8"
        "&SignatureMethod=HMAC-SHA1&SignatureNonce=45e25e9b-0a6f-4070-8c85-2956eda1b466&SignatureVersion=1.0"
        "&TemplateCode=SMS_71390007&TemplateParam=%7B%22customer%22%3A%22test%22%7D"
        "&Timestamp=2017-07-12T02%3A42%3A19Z&Version=2017-05-25")
    assert aliyun.string_to_sign("GET", DOCUMENTED).startswith("GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms")
    assert aliyun.sign("testSecret", "GET", DOCUMENTED) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    assert aliyun.verify("testSecret", "GET", {**DOCUMENTED, "Signature": "zJDF+Lrzhj/ThnlvIToysFRq6t4="})
    assert not aliyun.verify("testSecret", "POST", {**DOCUMENTED, "Signature": "zJDF+Lrzhj/ThnlvIToysFRq6t4="})
    assert not aliyun.verify("otherSecret", "GET", {**DOCUMENTED, "Signature": "zJDF+Lrzhj/ThnlvIToysFRq6t4="})


@pytest.mark.parametrize(("raw", "encoded"), [
    ("a b", "a%20b"), ("*", "%2A"), ("~-_.", "~-_."), ("+/=", "%2B%2F%3D"), ("考", "%E8%80%83"), ("&", "%26"),
])
def test_percent_encoding_is_rfc_3986(raw: str, encoded: str) -> None:
    assert aliyun.percent_encode(raw) == encoded


def test_signed_adds_the_common_parameters_and_a_signature_that_verifies() -> None:
    moment = datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)
    params = aliyun.signed("SendSms", {"PhoneNumbers": "13800000000", "TemplateParam": '{"code":"1 2"}'},
                           access_key_id="LTAIkey", secret="s3cret", nonce="n-1", moment=moment)
    assert params["Timestamp"] == "2026-03-01T08:00:05Z" and params["SignatureNonce"] == "n-1"
    assert (params["Action"], params["Version"], params["Format"]) == ("SendSms", "2017-05-25", "JSON")
    assert aliyun.verify("s3cret", "POST", params)
    assert not aliyun.verify("s3cret", "POST", {**params, "PhoneNumbers": "13800000001"})
    assert not aliyun.verify("s3cret", "POST", {k: v for k, v in params.items() if k != "Signature"})


def answer(status: int = 200, **body: object) -> tuple[int, bytes]:
    return status, json.dumps(body, ensure_ascii=False).encode()


@pytest.mark.parametrize(("reply", "expected"), [
    (answer(Code="OK", Message="OK", BizId="900619746936498440^0", RequestId="R"),
     Accepted("900619746936498440^0", "R")),
    (answer(Code="isv.BUSINESS_LIMIT_CONTROL", Message="触发分钟级流控Permits:1"),
     Retryable("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1", throttle="phone")),
    (answer(Code="isv.BUSINESS_LIMIT_CONTROL", Message="触发小时级流控Permits:5"),
     Retryable("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5", throttle="phone")),
    (answer(Code="isv.BUSINESS_LIMIT_CONTROL", Message="触发天级流控Permits:10"),
     Permanent("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10")),
    (answer(Code="isv.BUSINESS_LIMIT_CONTROL", Message="触发业务流控"),
     Retryable("isv.BUSINESS_LIMIT_CONTROL", "触发业务流控", throttle="account")),
    (answer(400, Code="Throttling.User", Message="Request was denied due to user flow control."),
     Retryable("Throttling.User", "Request was denied due to user flow control.", throttle="account")),
    (answer(Code="isp.SYSTEM_ERROR", Message="系统出现错误"), Retryable("isp.SYSTEM_ERROR", "系统出现错误")),
    (answer(503, Code="ServiceUnavailable", Message="busy"), Retryable("ServiceUnavailable", "busy")),
    (answer(500, Code="InternalError", Message="oops"), Retryable("InternalError", "oops")),
    (answer(Code="isv.MOBILE_NUMBER_ILLEGAL", Message="非法手机号"),
     Permanent("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")),
    (answer(Code="isv.TEMPLATE_MISSING_PARAMETERS", Message="模板缺少变量"),
     Permanent("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量")),
    (answer(Code="isv.BLACK_KEY_CONTROL_LIMIT", Message="黑名单管控"),
     Permanent("isv.BLACK_KEY_CONTROL_LIMIT", "黑名单管控")),
    (answer(400, Code="SignatureDoesNotMatch", Message="no"), Permanent("SignatureDoesNotMatch", "no")),
    (answer(404, Code="InvalidAccessKeyId.NotFound", Message="no"), Permanent("InvalidAccessKeyId.NotFound", "no")),
])
def test_answers_are_accepted_retryable_or_permanent(reply: tuple[int, bytes], expected: object) -> None:
    assert aliyun.classify(*reply)[0] == expected


@pytest.mark.parametrize("reply", [(504, b"<html>504 Gateway Time-out</html>"), (200, b""), (502, b"{}"),
                                   (200, b'{"Message": "no code"}')])
def test_an_answer_that_is_not_the_providers_is_ambiguous(reply: tuple[int, bytes]) -> None:
    result, parsed = aliyun.classify(*reply)
    assert isinstance(result, Retryable) and result.ambiguous and parsed is None
