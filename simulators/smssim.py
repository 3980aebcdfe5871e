"""``examgate smssim``: an in-memory Alibaba Cloud SMS for development, demos and tests.

It speaks the provider's RPC API as ``messaging.aliyun`` does — ``SendSms`` and
``QuerySendDetails`` on ``/``, GET or form POST — and checks requests as the provider does: the
common parameters, our AccessKey id, the HMAC-SHA1 signature (a wrong secret is
``SignatureDoesNotMatch``), the timestamp (15 minutes), a nonce used once, the signature name,
the template code (the approved templates are ``core.sms.TEMPLATES``, under the codes the
settings give) and its parameters. A message it takes is delivered: recorded with its text as
the phone shows it (``GET /sim/messages?phone=…``, newest first).

Like the provider it throttles — per phone (``phone_per_minute``, the provider's default being
one a minute; ``minute_s`` shortens the minute for tests) and for the account (``rate_per_s``),
answering ``isv.BUSINESS_LIMIT_CONTROL`` — and it can be slow (``latency_ms``), fail
(``failure_ratio``: ``isp.SYSTEM_ERROR`` or a 503, nothing delivered) or lose answers
(``lost_ratio``: delivered, then a gateway's 504). Like the real one it does NOT treat OutId as
an idempotency key: a message sent twice is delivered twice, and counted (``duplicates`` in
``GET /sim/stats``), so a test sees any. Settings change at start (the command's options) or
through ``PUT /sim/config`` (``simulators.smssim_controls``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from core.sms import TEMPLATES
from core.timeutil import SHANGHAI
from messaging import aliyun

log = logging.getLogger("examgate.smssim")

HOST_ID = "dysmsapi.aliyuncs.com"
TIMESTAMP_SKEW_S = 15 * 60  # the provider's window for Timestamp and for a nonce's single use
MAX_PARAM_CHARS = 35  # longest template parameter value
_PHONE = re.compile(r"(?:\+?86)?(1[3-9][0-9]{9})").fullmatch
_SIGN_PREFIX = re.compile(r"^【[^】]*】")
_COMMON = ("AccessKeyId", "Action", "SignatureMethod", "SignatureNonce", "SignatureVersion", "Timestamp", "Version",
           "Signature")


@dataclass
class SimConfig:
    """How the simulator behaves; every field can change while it runs."""

    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    failure_ratio: float = 0.0  # answered as a provider error, nothing delivered
    lost_ratio: float = 0.0  # delivered, but the answer is a gateway's 504
    rate_per_s: float = 0.0  # the account's sending rate (0: no limit)
    phone_per_minute: int = 1  # messages per number per minute (0: no limit)
    minute_s: float = 60.0  # how long the simulator's minute lasts
    blacklist: list[str] = field(default_factory=list)  # numbers refused: isv.BLACK_KEY_CONTROL_LIMIT


@dataclass
class Delivered:
    """One message the simulator took and delivered."""

    phone: str
    content: str  # the text as the phone shows it: 【SignName】 + the template filled in
    sign_name: str
    template_code: str
    params: dict[str, str]
    out_id: str
    biz_id: str
    request_id: str
    at: float  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["at"]
        shown["sent_at"] = datetime.fromtimestamp(self.at, SHANGHAI).isoformat(timespec="milliseconds")
        return shown


class Refused(Exception):
    """A provider error answer: HTTP status, Code, Message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class SmsSimulator:
    """The simulator's state: who we are, the approved templates, the messages delivered, the limits."""

    def __init__(self, *, access_key_id: str, access_key_secret: str, sign_name: str,
                 template_codes: Mapping[str, str] | None = None, config: SimConfig | None = None,
                 seed: int | None = None) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_name = sign_name
        codes = dict(template_codes or {})
        # code → the template's text without its 【签名】 prefix (the SignName takes its place)
        self.templates = {codes.get(name, template.code): _SIGN_PREFIX.sub("", template.text)
                          for name, template in TEMPLATES.items()}
        self.config = config or SimConfig()
        self.random = random.Random(seed)
        self.delivered: list[Delivered] = []
        self.by_phone: dict[str, list[Delivered]] = {}
        self.out_ids: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._nonces: dict[str, float] = {}
        self._nonce_order: deque[tuple[float, str]] = deque()
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._phone_sends: dict[str, deque[float]] = {}

    def reset(self) -> None:
        """Forget every message and counter (the configuration stays)."""
        self.delivered.clear()
        self.by_phone.clear()
        self.out_ids.clear()
        self.counters.clear()
        self._phone_sends.clear()

    def stats(self) -> dict[str, Any]:
        """Counters, and how many OutIds were delivered more than once."""
        return {**{name: self.counters[name] for name in (
            "requests", "accepted", "delivered", "failed", "lost", "throttled_phone", "throttled_account",
            "refused", "rejected", "queries")},
            "out_ids": len(self.out_ids), "duplicates": sum(n - 1 for n in self.out_ids.values() if n > 1)}

    # -- checks, as the provider makes them ------------------------------------------------------------

    def authenticate(self, method: str, params: Mapping[str, str], now_s: float) -> None:
        """The POP gateway's checks: common parameters, key, signature, timestamp, nonce, version."""
        for name in _COMMON:
            if not params.get(name):
                raise Refused(400, f"Missing{name}", f"{name} is mandatory for this action.")
        if params["AccessKeyId"] != self.access_key_id:
            raise Refused(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if params["SignatureMethod"] != aliyun.SIGNATURE_METHOD or params["SignatureVersion"] != "1.0":
            raise Refused(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        if not aliyun.verify(self.access_key_secret, method, params):
            raise Refused(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation. "
                          f"server string to sign is:{aliyun.string_to_sign(method, params)}")
        try:
            signed_at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise Refused(400, "InvalidTimeStamp.Format",
                          "Specified time stamp or date value is not well formatted.") from None
        if abs(now_s - signed_at) > TIMESTAMP_SKEW_S:
            raise Refused(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        self._use_nonce(params["SignatureNonce"], now_s)
        if params["Version"] != aliyun.API_VERSION:
            raise Refused(400, "InvalidVersion", "Specified parameter Version is not valid.")

    def _use_nonce(self, nonce: str, now_s: float) -> None:
        while self._nonce_order and self._nonce_order[0][0] < now_s - TIMESTAMP_SKEW_S:
            self._nonces.pop(self._nonce_order.popleft()[1], None)
        if nonce in self._nonces:
            raise Refused(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces[nonce] = now_s
        self._nonce_order.append((now_s, nonce))

    def _account_allows(self, now: float) -> bool:
        rate = self.config.rate_per_s
        if rate <= 0:
            return True
        capacity = max(1.0, rate)  # a second's worth at once
        self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * rate) if self._tokens_at else capacity
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _phone_allows(self, phone: str, now: float) -> bool:
        limit = self.config.phone_per_minute
        if limit <= 0:
            return True
        sends = self._phone_sends.setdefault(phone, deque())
        while sends and sends[0] <= now - self.config.minute_s:
            sends.popleft()
        return len(sends) < limit

    # -- the actions --------------------------------------------------------------------------------------

    def send_sms(self, params: Mapping[str, str], request_id: str) -> tuple[dict[str, Any], bool]:
        """SendSms: the answer, and whether to lose it (delivered, answered with a 504)."""
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                raise Refused(400, f"Missing{name}", f"{name} is mandatory for this action.")
        phones = [_PHONE(number.strip()) for number in params["PhoneNumbers"].split(",")]
        if not phones or any(match is None for match in phones) or len(phones) > 1000:
            return self._rejected("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"), False
        numbers = [match[1] for match in phones if match is not None]
        if params["SignName"] != self.sign_name:
            return self._rejected("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法(不存在或被拉黑)"), False
        text = self.templates.get(params["TemplateCode"])
        if text is None:
            return self._rejected("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法(不存在或被拉黑)"), False
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            values = None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return self._rejected("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值"), False
        if any(len(value) > MAX_PARAM_CHARS for value in values.values()):
            return self._rejected("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制"), False
        try:
            content = f"【{params['SignName']}】" + text.format(**values)
        except (KeyError, IndexError):
            return self._rejected("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量"), False
        if len(params.get("OutId", "")) > 256:
            return self._rejected("isv.INVALID_PARAMETERS", "参数异常: OutId"), False
        if any(number in self.config.blacklist for number in numbers):
            return self._rejected("isv.BLACK_KEY_CONTROL_LIMIT", "黑名单管控"), False
        now = time.monotonic()
        if not self._account_allows(now):
            self.counters["throttled_account"] += 1
            return {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发业务流控"}, False
        if not all(self._phone_allows(number, now) for number in numbers):
            self.counters["throttled_phone"] += 1
            return {"Code": "isv.BUSINESS_LIMIT_CONTROL",
                    "Message": f"触发分钟级流控Permits:{self.config.phone_per_minute}"}, False
        biz_id = f"{secrets.randbelow(10**18):018d}^0"
        for number in numbers:
            self._deliver(Delivered(number, content, params["SignName"], params["TemplateCode"], dict(values),
                                    params.get("OutId", ""), biz_id, request_id, time.time()), now)
        self.counters["accepted"] += 1
        lost = self.random.random() < self.config.lost_ratio
        if lost:
            self.counters["lost"] += 1
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}, lost

    def _deliver(self, message: Delivered, now: float) -> None:
        self.delivered.append(message)
        self.by_phone.setdefault(message.phone, []).append(message)
        self._phone_sends.setdefault(message.phone, deque()).append(now)
        if message.out_id:
            self.out_ids[message.out_id] += 1
            if self.out_ids[message.out_id] > 1:
                log.warning("OutId %s delivered %d times (to %s)", message.out_id, self.out_ids[message.out_id],
                            message.phone)
        self.counters["delivered"] += 1

    def _rejected(self, code: str, message: str) -> dict[str, Any]:
        self.counters["rejected"] += 1
        return {"Code": code, "Message": message}

    def query_send_details(self, params: Mapping[str, str]) -> dict[str, Any]:
        """QuerySendDetails: one page of the messages to a number on a day (Asia/Shanghai), newest first."""
        self.counters["queries"] += 1
        for name in ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"):
            if not params.get(name):
                raise Refused(400, f"Missing{name}", f"{name} is mandatory for this action.")
        try:
            size, page = int(params["PageSize"]), int(params["CurrentPage"])
            day = datetime.strptime(params["SendDate"], "%Y%m%d").date()
        except ValueError:
            return self._rejected("isv.INVALID_PARAMETERS", "参数异常: SendDate, PageSize, CurrentPage")
        if not 1 <= size <= 50 or page < 1:
            return self._rejected("isv.INVALID_PARAMETERS", "参数异常: PageSize 1~50, CurrentPage ≥ 1")
        match = _PHONE(params["PhoneNumber"])
        if match is None:
            return self._rejected("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        wanted = [m for m in reversed(self.by_phone.get(match[1], []))
                  if datetime.fromtimestamp(m.at, SHANGHAI).date() == day
                  and (not params.get("BizId") or m.biz_id == params["BizId"])]
        shown = wanted[(page - 1) * size:page * size]
        return {"Code": "OK", "Message": "OK", "TotalCount": len(wanted), "SmsSendDetailDTOs": {"SmsSendDetailDTO": [
            {"PhoneNum": m.phone, "SendStatus": 3, "ErrCode": "DELIVERED", "TemplateCode": m.template_code,
             "Content": m.content, "SendDate": _local(m.at), "ReceiveDate": _local(m.at), "OutId": m.out_id}
            for m in shown]}}

    async def handle(self, method: str, params: Mapping[str, str]) -> web.Response:
        """One API call: authenticate, wait the latency, maybe fail, then run the action."""
        self.counters["requests"] += 1
        request_id = _request_id()
        try:
            self.authenticate(method, params, time.time())
            action = params["Action"]
            if action not in ("SendSms", "QuerySendDetails"):
                raise Refused(404, "InvalidAction.NotFound", f"Specified api {action} is not found, please check "
                              "your url and method.")
        except Refused as refused:
            self.counters["refused"] += 1
            log.info("refused %s: %s", params.get("Action"), refused)
            return _answer(refused.status, {"Code": refused.code, "Message": refused.message}, request_id)
        config = self.config
        if config.latency_max_ms > 0:
            low = min(config.latency_min_ms, config.latency_max_ms)
            await asyncio.sleep(self.random.uniform(low, config.latency_max_ms) / 1000)
        if self.random.random() < config.failure_ratio:
            self.counters["failed"] += 1
            if self.random.random() < 0.5:
                return _answer(503, {"Code": "ServiceUnavailable",
                                     "Message": "The request has failed due to a temporary failure of the server."},
                               request_id)
            return _answer(200, {"Code": "isp.SYSTEM_ERROR", "Message": "系统出现错误，请重新调用"}, request_id)
        try:
            if action == "QuerySendDetails":
                return _answer(200, self.query_send_details(params), request_id)
            answer, lost = self.send_sms(params, request_id)
        except Refused as refused:
            self.counters["refused"] += 1
            return _answer(refused.status, {"Code": refused.code, "Message": refused.message}, request_id)
        if lost:
            return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                                content_type="text/html")
        return _answer(200, answer, request_id)


def _request_id() -> str:
    raw = secrets.token_hex(16).upper()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _local(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _answer(status: int, payload: dict[str, Any], request_id: str) -> web.Response:
    body = {"RequestId": request_id, **payload}
    if status >= 400:
        body["HostId"] = HOST_ID
    return web.json_response(body, status=status, dumps=lambda data: json.dumps(data, ensure_ascii=False))


SIM = web.AppKey("smssim", SmsSimulator)


async def api(request: web.Request) -> web.Response:
    """``/``: the provider's RPC endpoint, parameters in the query (GET) or a form body (POST)."""
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return await request.app[SIM].handle(request.method, params)


def build_app(sim: SmsSimulator) -> web.Application:
    """The simulator as an aiohttp application (state in memory, lost at exit)."""
    from simulators import smssim_controls  # it reads the simulator's state through SIM, defined above

    app = web.Application()
    app[SIM] = sim
    app.add_routes([web.get("/", api), web.post("/", api)])
    app.add_routes(smssim_controls.routes())
    return app


async def serve(sim: SmsSimulator, host: str, port: int) -> None:
    """Serve the simulator until SIGTERM or SIGINT."""
    runner = web.AppRunner(build_app(sim), handle_signals=False, access_log=None)
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
    log.info("smssim serving on http://%s:%d (%s)", host, port, asdict(sim.config))
    await stop.wait()
    log.info("smssim stopping")
    await runner.cleanup()
