"""Alibaba Cloud SMS (Dysmsapi 2017-05-25), RPC style: ``SendSms`` and ``QuerySendDetails``, signed requests.

Every request carries the common parameters (AccessKeyId, Action, Format, RegionId,
SignatureMethod HMAC-SHA1, SignatureNonce, SignatureVersion 1.0, Timestamp, Version) and
``Signature``, computed as the provider documents it:

1. the canonical query string: every parameter but Signature, sorted by name, name and value
   each percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` kept, so a space is ``%20``,
   ``*`` is ``%2A``, ``~`` stays), joined as ``name=value`` with ``&``;
2. the string to sign: ``<HTTP method>&%2F&`` + the canonical query string percent-encoded again;
3. ``Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", string to sign))``.

Requests go by POST with a form body (codes stay out of URLs and access logs), so the method
signed is ``POST``. ``AliyunSms`` is the ``messaging.sender.Sender`` of the delivery worker;
the simulator (``simulators.smssim``) verifies with the same functions.

What its answers mean here (``classify``): ``OK`` is accepted; throttling
(``isv.BUSINESS_LIMIT_CONTROL``, ``Throttling*``) and the provider's own failures (``isp.*``,
``ServiceUnavailable``, HTTP 5xx with a provider code) are retryable; a limit per number shows in
the message (``触发分钟级流控`` / ``小时级`` / ``天级``), and a day's limit spent is permanent
(a code sent tomorrow is of no use); every other refusal (``isv.*``, a bad signature, an unknown
key) is permanent. A timeout, a connection lost after the request went out, or an answer that is
not the provider's JSON is ambiguous: the message may have been taken.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp

from core.timeutil import utcnow
from messaging.sender import Accepted, Outgoing, Permanent, Retryable, SendResult

__all__ = [
    "API_VERSION", "AliyunSms", "ProviderSettings", "canonical_query", "classify", "percent_encode", "sign",
    "signed", "string_to_sign", "timestamp", "verify",
]  # fmt: skip

API_VERSION = "2017-05-25"
SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
REGION_ID = "cn-hangzhou"
PAGE_SIZE = 50  # QuerySendDetails' largest page
MAX_PAGES = 20  # per day looked at: 1,000 messages to one number in a day is past any per-number limit

_ACCOUNT_THROTTLES = ("Throttling",)  # Throttling, Throttling.User, Throttling.Api: the POP gateway's rate limits
_PHONE_WINDOWS = ("分钟级", "小时级")
_PHONE_DAY = "天级"
_RETRYABLE = ("ServiceUnavailable", "InternalError", "SignatureNonceUsed")


class ProviderSettings(NamedTuple):
    """Where the provider is and who we are there."""

    url: str  # the endpoint, e.g. https://dysmsapi.aliyuncs.com
    access_key_id: str
    access_key_secret: str
    sign_name: str  # SignName: the 【签名】 the carrier shows
    timeout_s: float = 5.0


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of UTF-8: only letters, digits and ``-_.~`` are kept."""
    return quote(value, safe="")


def canonical_query(params: Mapping[str, str]) -> str:
    """Every parameter but Signature, sorted by name, each ``name=value`` percent-encoded, joined by ``&``."""
    return "&".join(f"{percent_encode(name)}={percent_encode(params[name])}" for name in sorted(params)
                    if name != "Signature")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&`` + the canonical query string, percent-encoded again."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64(HMAC-SHA1(secret + "&", string to sign))."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(secret: str, method: str, params: Mapping[str, str]) -> bool:
    """Whether ``params`` carry the Signature ``secret`` makes of them (constant time)."""
    return hmac.compare_digest(sign(secret, method, params).encode(), params.get("Signature", "").encode())


def timestamp(moment: datetime) -> str:
    """The Timestamp parameter: UTC, ISO 8601 to the second, ``Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def signed(action: str, params: Mapping[str, str], *, access_key_id: str, secret: str, method: str = "POST",
           nonce: str | None = None, moment: datetime | None = None) -> dict[str, str]:
    """``params`` of ``action`` with the common parameters and the Signature added."""
    every = {
        "AccessKeyId": access_key_id, "Action": action, "Format": "JSON", "RegionId": REGION_ID,
        "SignatureMethod": SIGNATURE_METHOD, "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": SIGNATURE_VERSION, "Timestamp": timestamp(moment or utcnow()), "Version": API_VERSION,
        **params,
    }
    every["Signature"] = sign(secret, method, every)
    return every


def classify(status: int, body: bytes) -> tuple[SendResult, dict[str, Any] | None]:
    """What a ``SendSms`` answer means (see the module's docstring), with the answer's JSON when it was JSON."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("Code"), str):
        return Retryable(f"HTTP{status}", f"not the provider's answer: {body[:100]!r}", ambiguous=True), None
    code, message = answer["Code"], str(answer.get("Message") or "")
    if code == "OK":
        return Accepted(str(answer.get("BizId") or ""), str(answer.get("RequestId") or "")), answer
    if code == "isv.BUSINESS_LIMIT_CONTROL":
        if _PHONE_DAY in message:
            return Permanent(code, message), answer
        if any(window in message for window in _PHONE_WINDOWS):
            return Retryable(code, message, throttle="phone"), answer
        return Retryable(code, message, throttle="account"), answer
    if code.startswith(_ACCOUNT_THROTTLES):
        return Retryable(code, message, throttle="account"), answer
    if code.startswith("isp.") or code in _RETRYABLE or (status >= 500 and not code.startswith("isv.")):
        return Retryable(code, message), answer
    return Permanent(code, message), answer


class AliyunSms:
    """The delivery worker's ``Sender``: signed SendSms and QuerySendDetails calls over one HTTP session."""

    def __init__(self, settings: ProviderSettings, *, connections: int = 16,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.endpoint = settings.url.rstrip("/") + "/"
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._connections = connections
        self._session = session
        self._owns_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: inside the running loop
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._connections))
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session if this sender opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _signed(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        return signed(action, params, access_key_id=self.settings.access_key_id,
                      secret=self.settings.access_key_secret)

    async def _post(self, form: Mapping[str, str]) -> tuple[int, bytes] | Retryable:
        """POST one signed call: the status and body, or why there is none (``ambiguous`` unless it never left)."""
        try:
            async with self._http().post(self.endpoint, data=form, timeout=self.timeout) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:  # no connection, so no request: nothing was sent
            return Retryable("connect", str(exc) or type(exc).__name__)
        except TimeoutError:
            return Retryable("timeout", f"no answer within {self.settings.timeout_s:g} s", ambiguous=True)
        except aiohttp.ClientError as exc:
            return Retryable(type(exc).__name__, str(exc) or type(exc).__name__, ambiguous=True)

    async def send(self, message: Outgoing) -> SendResult:
        """``SendSms`` of one message under its OutId."""
        form = self._signed("SendSms", {
            "PhoneNumbers": message.phone, "SignName": self.settings.sign_name, "TemplateCode": message.template_code,
            "TemplateParam": json.dumps(dict(message.params), ensure_ascii=False, separators=(",", ":")),
            "OutId": message.out_id,
        })
        answered = await self._post(form)
        if isinstance(answered, Retryable):
            return answered
        result, _ = classify(*answered)
        return result

    async def find(self, phone: str, out_id: str, days: Sequence[date]) -> bool | Retryable:
        """``QuerySendDetails`` of ``phone`` on each of ``days``, page by page, until ``out_id`` shows up."""
        for day in days:
            for page in range(1, MAX_PAGES + 1):
                answered = await self._post(self._signed("QuerySendDetails", {
                    "PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"), "PageSize": str(PAGE_SIZE),
                    "CurrentPage": str(page)}))
                if isinstance(answered, Retryable):
                    return answered._replace(ambiguous=False)
                found = _details(*answered)
                if isinstance(found, Retryable):
                    return found
                out_ids, total = found
                if out_id in out_ids:
                    return True
                if page * PAGE_SIZE >= total or not out_ids:
                    break
        return False


def _details(status: int, body: bytes) -> tuple[set[str], int] | Retryable:
    """The OutIds listed by one QuerySendDetails page and the total count, or why the look-up failed."""
    result, answer = classify(status, body)
    if answer is None or not isinstance(result, Accepted):
        code, message = (result.code, result.message) if not isinstance(result, Accepted) else ("HTTP", "")
        return Retryable(code, f"look-up failed: {message}")
    listed = answer.get("SmsSendDetailDTOs") or {}
    details = listed.get("SmsSendDetailDTO") if isinstance(listed, dict) else None
    out_ids = {str(item.get("OutId")) for item in details or () if isinstance(item, dict) and item.get("OutId")}
    try:
        total = int(answer.get("TotalCount") or 0)
    except (TypeError, ValueError):
        total = 0
    return out_ids, total
