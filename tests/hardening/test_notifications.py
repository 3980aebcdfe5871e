"""Payment notifications under attack, through a running 2-process gateway on real PostgreSQL and Redis.

A flood of unsigned or badly signed 60 KB notifications must leave the ledger a bounded
summary (not 60 KB a row) and get its senders throttled, while a provider's signed
notifications still settle; NUL bytes, signed or not, are answered by the verification
result and never fail the group they are committed with.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from gateway.liveconfig import DEFAULT
from loadtest.processes import Process, start_gateway
from payments import wechat
from payments.keys import PaymentKeys
from tests.factories import make_exam
from tests.payments.conftest import keys, keys_dir  # noqa: F401  (fixtures)
from tests.payments.order_data import PendingOrder, make_orders
from tests.payments.test_settle import APP_IDS, MCH_ID, alipay_form, wechat_request

ALIPAY = "/api/v1/payments/notify/alipay"
WECHAT = "/api/v1/payments/notify/wechat"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FLOOD = 5_000
FLOOD_CONCURRENCY = 50
FLOOD_SENDERS = ("203.0.113.11", "203.0.113.12", "203.0.113.13", "203.0.113.14")
BODY_BYTES = 60 * 1024
MAX_GROWTH_BYTES = 5 * 1024 * 1024
FAILURE_RULE = "notify-failures-ip"


@pytest.fixture(scope="module")
def gateway(pg_dsn: str, keys_dir: Path) -> Iterator[Process]:  # noqa: F811
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_KEYS_DIR=str(keys_dir),
                            EXAMGATE_PAYSIM_URL="http://127.0.0.1:9", EXAMGATE_TRUSTED_PROXIES="127.0.0.1")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


async def _orders(pg: asyncpg.Connection, rd: aioredis.Redis, count: int,
                  providers: tuple[str, ...] = ("alipay", "wechat")) -> list[PendingOrder]:
    exam_id = await make_exam(pg, sites=[("11", count)])
    site_id = await pg.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
    return await make_orders(pg, rd, exam_id, site_id, count, providers=providers)


async def _ledger_bytes(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT pg_total_relation_size('payment_notifications')"))


async def _settled(pg: asyncpg.Connection, orders: list[PendingOrder]) -> list[tuple[str, str, bool]]:
    """(order status, registration status, has a ticket) of each order, in order."""
    rows = await pg.fetch(
        "SELECT o.order_no, o.status, r.status AS reg, t.ticket_no IS NOT NULL AS ticket "
        "FROM orders o JOIN registrations r ON r.id = o.registration_id "
        "LEFT JOIN admission_tickets t ON t.registration_id = r.id WHERE o.order_no = ANY($1::text[])",
        [o.order_no for o in orders])
    found = {r["order_no"]: (r["status"], r["reg"], r["ticket"]) for r in rows}
    return [found[o.order_no] for o in orders]


def _alipay_junk(filler: str, signed_badly: bool) -> bytes:
    """An Alipay-looking form of ~60 KB, unsigned or with a signature that cannot verify."""
    form = {"notify_id": uuid.uuid4().hex, "app_id": APP_IDS["alipay"], "out_trade_no": secrets.token_hex(8),
            "trade_status": "TRADE_SUCCESS", "total_amount": "0.01"}
    if signed_badly:
        form.update(sign_type="RSA2", sign="QUJD" * 86)
    head = urlencode(form).encode()
    return head + b"&subject=" + filler.encode()[:BODY_BYTES - len(head) - 9]


def _wechat_junk(filler: str, keys: PaymentKeys, signed_badly: bool) -> tuple[dict[str, str], bytes]:  # noqa: F811
    """A WeChat-looking JSON body of ~60 KB (not always valid JSON), with bogus or no signature headers."""
    body = json.dumps({"id": str(uuid.uuid4()), "resource": {"ciphertext": "x"}, "junk": filler}).encode()
    body = body[:BODY_BYTES]  # cut mid-string: no longer JSON either
    headers = {"Content-Type": "application/json"}
    if signed_badly:
        headers.update({"Wechatpay-Timestamp": str(int(time.time())), "Wechatpay-Nonce": secrets.token_hex(16),
                        "Wechatpay-Signature": "QUJD" * 86, "Wechatpay-Serial": keys.wechat_platform_serial})
    return headers, body


async def _flood(url: str, keys: PaymentKeys) -> Counter[int]:  # noqa: F811
    """``FLOOD`` rejected notifications from ``FLOOD_SENDERS``, ``FLOOD_CONCURRENCY`` at a time; statuses seen."""
    filler = secrets.token_urlsafe(BODY_BYTES)  # random: it does not compress in the ledger either
    statuses: Counter[int] = Counter()
    retry_after_seen: list[str] = []
    queue = iter(range(FLOOD))
    connector = aiohttp.TCPConnector(limit=FLOOD_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def sender() -> None:
            for n in queue:
                unique = f"{n:06d}" + filler[6:]
                forwarded = {"X-Forwarded-For": FLOOD_SENDERS[n % len(FLOOD_SENDERS)]}
                if n % 2:
                    path, headers, body = ALIPAY, {**FORM, **forwarded}, _alipay_junk(unique, n % 4 == 1)
                else:
                    wx_headers, body = _wechat_junk(unique, keys, n % 4 == 0)
                    path, headers = WECHAT, {**wx_headers, **forwarded}
                async with http.post(url + path, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                    if resp.status == 429:
                        retry_after_seen.append(resp.headers.get("Retry-After", ""))

        await asyncio.gather(*(sender() for _ in range(FLOOD_CONCURRENCY)))
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after_seen), retry_after_seen[:5]
    return statuses


async def _rejected_metric(gateway: Process) -> dict[tuple[str, str], float]:
    url, headers = gateway.url, {"Authorization": f"Bearer {gateway.admin_token()}"}
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=headers) as resp:
        text = await resp.text()
    found = re.findall(r'^examgate_payment_notifications_rejected_total\{provider="(\w+)",reason="(\w+)"\} (\S+)$',
                       text, re.MULTILINE)
    return {(provider, reason): float(value) for provider, reason, value in found}


async def _post(http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


@pytest.mark.timeout(110)
async def test_a_flood_of_rejected_notifications_stays_small_and_signed_ones_still_settle(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    (order,) = await _orders(pg, redis, 1, providers=("alipay",))
    before = await _ledger_bytes(pg)
    started = time.monotonic()

    statuses = await _flood(gateway.url, keys)

    elapsed_s = time.monotonic() - started
    growth = await _ledger_bytes(pg) - before
    assert growth < MAX_GROWTH_BYTES, (growth, statuses, elapsed_s)
    assert set(statuses) <= {400, 429} and sum(statuses.values()) == FLOOD, statuses
    assert statuses[429] > FLOOD // 2, statuses  # the senders were throttled after their failures
    summaries = await pg.fetch("SELECT provider, reason, payload FROM payment_notifications WHERE outcome = 'rejected' "
                               "AND payload ->> 'sender' = ANY($1::text[])", list(FLOOD_SENDERS))
    assert {(r["provider"], r["reason"]) for r in summaries} >= {
        ("alipay", "missing_signature"), ("alipay", "bad_signature"), ("wechat", "missing_signature"),
        ("wechat", "bad_signature")}
    for row in summaries:
        summary = row["payload"]
        assert BODY_BYTES - 64 <= summary["size_bytes"] <= BODY_BYTES, summary["size_bytes"]
        assert re.fullmatch(r"[0-9a-f]{64}", summary["sha256"])
        assert len(summary["prefix"].encode()) <= 512
    counted = await _rejected_metric(gateway)
    assert counted.get(("alipay", "missing_signature"), 0) > 0 and counted.get(("wechat", "bad_signature"), 0) > 0

    async with aiohttp.ClientSession() as http:
        status, text = await _post(http, gateway.url + ALIPAY, FORM, urlencode(alipay_form(keys, order)).encode())
    assert (status, text) == (200, "success"), gateway.log()[-2000:]
    assert await _settled(pg, [order]) == [("paid", "paid", True)]


async def test_only_failed_verifications_count_against_a_sender(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    rule = next((r for r in DEFAULT["ratelimit"]["rules"] if r["id"] == FAILURE_RULE), None)
    assert rule is not None and rule.get("counts") == "failures", "no failures-counted rule on the notify routes"
    burst = rule["burst"]
    (order,) = await _orders(pg, redis, 1, providers=("alipay",))
    provider_address = {**FORM, "X-Forwarded-For": "198.51.100.7"}
    signed = urlencode(alipay_form(keys, order)).encode()
    unsigned = urlencode({"notify_id": "n", "out_trade_no": order.order_no}).encode()
    async with aiohttp.ClientSession() as http:
        verified = [await _post(http, gateway.url + ALIPAY, provider_address, signed) for _ in range(burst + 10)]
        assert {status for status, _ in verified} == {200}, verified[:3]  # the first paid, the rest duplicates
        failed = [await _post(http, gateway.url + ALIPAY, provider_address, unsigned) for _ in range(burst)]
        assert [status for status, _ in failed] == [400] * burst
        refused = [await _post(http, gateway.url + ALIPAY, provider_address, unsigned) for _ in range(3)]
        assert 429 in [status for status, _ in refused], refused
        problem = json.loads(next(text for status, text in refused if status == 429))
        assert problem["error"]["code"] == "too_many_requests" and FAILURE_RULE in problem["error"]["details"]["rules"]
        # another address is not affected
        status, text = await _post(http, gateway.url + ALIPAY, {**FORM, "X-Forwarded-For": "198.51.100.8"}, signed)
    assert (status, text) == (200, "success")


async def test_nul_bytes_in_alipay_forms_get_the_verification_answer(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    (order,) = await _orders(pg, redis, 1, providers=("alipay",))
    signed_with_nul = urlencode(alipay_form(keys, order, subject="考试\x00报名费")).encode()
    assert b"%00" in signed_with_nul
    bad_sign = urlencode({**alipay_form(keys, order), "sign": "QUJD\x00"}).encode()
    unsigned = urlencode({"notify_id": "x\x00y", "out_trade_no": order.order_no, "subject": "a\x00b"}).encode()
    async with aiohttp.ClientSession() as http:
        answers = [await _post(http, gateway.url + ALIPAY, {**FORM, "X-Forwarded-For": sender}, body)
                   for sender, body in (("192.0.2.31", unsigned), ("192.0.2.32", bad_sign),
                                        ("192.0.2.33", signed_with_nul))]
    assert answers == [(400, "fail"), (400, "fail"), (200, "success")], gateway.log()[-2000:]
    assert await _settled(pg, [order]) == [("paid", "paid", True)]
    rows = await pg.fetch("SELECT reason, payload FROM payment_notifications WHERE outcome = 'rejected' "
                          "AND payload ->> 'sender' = ANY($1::text[]) ORDER BY id", ["192.0.2.31", "192.0.2.32"])
    assert [r["reason"] for r in rows] == ["missing_signature", "bad_signature"]
    assert [r["payload"]["sha256"] for r in rows] == [hashlib.sha256(b).hexdigest() for b in (unsigned, bad_sign)]
    assert [r["payload"]["prefix"] for r in rows] == [b[:512].decode() for b in (unsigned, bad_sign)]
    stored = await pg.fetchval("SELECT payload ->> 'subject' FROM payment_notifications WHERE order_no = $1 "
                               "AND outcome = 'accepted'", order.order_no)
    assert stored == "考试\\u0000报名费"


def _wechat_with_nul(keys: PaymentKeys, order: PendingOrder) -> tuple[dict[str, str], bytes]:  # noqa: F811
    """A correctly signed WeChat Pay notification with NUL in ``summary`` and in the resource's ``description``."""
    tx = wechat.transaction(order_no=order.order_no, transaction_id=f"42{secrets.randbelow(10**26):026d}",
                            amount_fen=order.amount_fen, app_id=APP_IDS["wechat"], mch_id=MCH_ID,
                            trade_state="SUCCESS", description="考试\x00报名费")
    envelope = {"id": str(uuid.uuid4()), "create_time": tx["success_time"], "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS", "summary": "支付\x00成功",
                "resource": wechat.encrypt_resource(tx, keys.wechat_apiv3_key)}
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
    assert b"\\u0000" in body
    return {"Content-Type": "application/json",
            **wechat.sign_headers(body, keys.wechat_platform_private, keys.wechat_platform_serial)}, body


async def test_a_signed_wechat_payment_with_nul_settles_and_an_unsigned_one_is_rejected(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    (order,) = await _orders(pg, redis, 1, providers=("wechat",))
    headers, body = _wechat_with_nul(keys, order)
    unsigned = b'{"id":"a\\u0000b","summary":"\\u0000","resource":{},"raw":"\x00"}'
    async with aiohttp.ClientSession() as http:
        rejected = await _post(http, gateway.url + WECHAT,
                               {"Content-Type": "application/json", "X-Forwarded-For": "192.0.2.41"}, unsigned)
        paid = await _post(http, gateway.url + WECHAT, headers, body)
    assert rejected[0] == 400 and json.loads(rejected[1])["code"] == "FAIL", rejected
    assert paid == (204, ""), (paid, gateway.log()[-2000:])
    assert await _settled(pg, [order]) == [("paid", "paid", True)]
    (summary,) = await pg.fetch("SELECT reason, payload FROM payment_notifications WHERE outcome = 'rejected' "
                                "AND payload ->> 'sender' = '192.0.2.41'")
    assert summary["reason"] == "missing_signature"
    assert summary["payload"]["prefix"] == unsigned.decode().replace("\x00", "\\u0000")
    assert summary["payload"]["sha256"] == hashlib.sha256(unsigned).hexdigest()


async def test_poison_notifications_do_not_fail_their_group(
        gateway: Process, pg: asyncpg.Connection, redis: aioredis.Redis, keys: PaymentKeys) -> None:  # noqa: F811
    orders = await _orders(pg, redis, 40)
    requests: list[tuple[str, dict[str, str], bytes]] = []
    for index, order in enumerate(orders):
        poison = index % 10 == 3
        if order.provider == "alipay":
            form = alipay_form(keys, order, subject="考试\x00报名费") if poison else alipay_form(keys, order)
            requests.append((ALIPAY, FORM, urlencode(form).encode()))
        else:
            headers, body = _wechat_with_nul(keys, order) if poison else wechat_request(keys, order)
            requests.append((WECHAT, headers, body))
    log_before = len(gateway.log())
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(_post(http, gateway.url + path, headers, body)
                                         for path, headers, body in requests))
    assert all(answer in ((200, "success"), (204, "")) for answer in answers), answers
    assert await _settled(pg, orders) == [("paid", "paid", True)] * len(orders)
    assert "one by one" not in gateway.log()[log_before:]  # no group fell back to one transaction per notification
