"""Certificate verification in-process: the answers, no enumeration, Redis only once warm, throttle and captcha
in one batch with the record's read, the signed PDF behind its expiring link, and the check of a signed PDF."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.app import create_app
from gateway.routes import certificates as cert_routes
from lookups import cert_prewarm, certificates
from tests.factories import settled_reads
from tests.gateway import candidate_http as h
from tests.lookups.test_certificates_store import add_certificates

VERIFY = "/api/v1/certificates/verify"
CHECK = "/api/v1/certificates/check-pdf"
# Differ between any two answers whatever they say; every other header must be the same.
PER_REQUEST = {"Date", "X-Request-ID"}


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> AsyncIterator[TestClient]:
    client = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path,
                                                        EXAMGATE_KEYS_DIR=str(tmp_path / "keys"))))
    # no captcha and no throttles: what is measured here is the verification itself
    await _configure(client, {"captcha": {"routes": {"certificates.verify": "off"}}, "ratelimit": {"rules": []}})
    try:
        yield client
    finally:
        await redis.flushdb()  # the relaxed live config must not outlive these tests


async def _configure(client: TestClient, patch: dict[str, Any]) -> None:
    resp = await client.patch("/admin/api/v1/config", headers=h.admin(), json=patch)
    assert resp.status == 200, await resp.text()
    await client.app[keys.LIVE].refresh()


async def _answer(resp: ClientResponse) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {name: value for name, value in resp.headers.items() if name not in PER_REQUEST}
    return resp.status, await resp.json(), headers


async def test_the_holder_gets_the_certificate_with_a_pdf_link(client: TestClient, pg: asyncpg.Connection) -> None:
    number = (await add_certificates(pg, 1, names=["阿依古丽·买买提"]))[0]
    resp = await client.post(VERIFY, json={"cert_no": f" {number.lower().upper()} ", "name": "阿依古丽•买买提"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    exam = await pg.fetchrow("SELECT e.id, e.name FROM certificates c JOIN exams e ON e.id = c.exam_id "
                             "WHERE c.cert_no = $1", number)
    assert {k: v for k, v in body.items() if k != "pdf_url"} == {
        "cert_no": number, "name": "阿依古丽·买买提", "exam": {"id": exam["id"], "name": exam["name"]},
        "level": {"code": "mid", "name": "中级"}, "approved_on": "2026-05-01", "management_no": f"GL-{number}"}
    assert body["pdf_url"].startswith(f"/api/v1/certificates/{number}.pdf?exp=")
    assert "id_number" not in body and resp.headers["Cache-Control"] == "no-store"


async def test_a_wrong_name_and_an_unknown_number_are_indistinguishable(client: TestClient,
                                                                        pg: asyncpg.Connection) -> None:
    number = (await add_certificates(pg, 1, names=["张三"]))[0]
    await client.post("/admin/api/v1/certificates/prewarm", headers=h.admin())
    wrong_name = await _answer(await client.post(VERIFY, json={"cert_no": number, "name": "李四"}))
    unknown = await _answer(await client.post(VERIFY, json={"cert_no": "ZZ" + number, "name": "张三"}))
    both_wrong = await _answer(await client.post(VERIFY, json={"cert_no": "ZZ" + number, "name": "李四"}))
    assert wrong_name == unknown == both_wrong
    assert client.app[cert_routes.SERVICE].pg_queries == 0  # the same work too: one Redis read each
    status, body, _ = wrong_name
    assert status == 404 and body["error"]["code"] == "not_found"
    assert body["error"]["message"] == certificates.NO_CERTIFICATE
    right = await client.post(VERIFY, json={"cert_no": number, "name": "张三"})
    assert right.status == 200  # what differs is only the match


async def test_bad_numbers_and_names_are_422_before_anything_is_read(client: TestClient) -> None:
    service = client.app[cert_routes.SERVICE]
    for body, field, code in (({"cert_no": "ZG-2026", "name": "张三"}, "cert_no", "must_be_cert_no"),
                              ({"cert_no": "ZG2026000001", "name": "  "}, "name", "must_be_text"),
                              ({"cert_no": "ZG2026000001"}, "name", "required"),
                              ({"cert_no": 2026000001, "name": "张三"}, "cert_no", "must_be_cert_no")):
        resp = await client.post(VERIFY, json=body)
        assert resp.status == 422, body
        assert (await resp.json())["error"]["details"]["fields"][field] == code, body
    assert service.pg_queries == 0


async def test_once_prewarmed_verifications_never_ask_postgresql_known_or_not(client: TestClient,
                                                                              pg: asyncpg.Connection) -> None:
    numbers = await add_certificates(pg, 30, names=[f"持证人{i}" for i in range(30)])
    resp = await client.post("/admin/api/v1/certificates/prewarm", headers=h.admin())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["certificates"] == await pg.fetchval("SELECT count(*) FROM certificates")
    reads = await settled_reads(pg, "certificates")
    answers = await asyncio.gather(*(client.post(VERIFY, json={"cert_no": number, "name": f"持证人{i}"})
                                     for i, number in enumerate(numbers)))
    wrong = await asyncio.gather(*(client.post(VERIFY, json={"cert_no": number, "name": "某人"})
                                   for number in numbers))
    unknown = await asyncio.gather(*(client.post(VERIFY, json={"cert_no": "ZZ" + number, "name": f"持证人{i}"})
                                     for i, number in enumerate(numbers)))
    assert [a.status for a in answers] == [200] * 30 and [a.status for a in wrong] == [404] * 30
    assert [a.status for a in unknown] == [404] * 30  # every bucket complete: no such certificate, from Redis
    assert client.app[cert_routes.SERVICE].pg_queries == 0
    assert await settled_reads(pg, "certificates") == reads


async def test_a_cold_number_asks_postgresql_once_for_every_concurrent_verification(
        client: TestClient, pg: asyncpg.Connection) -> None:
    number = (await add_certificates(pg, 1, names=["赵六"]))[0]
    answers = await asyncio.gather(*(client.post(VERIFY, json={"cert_no": number, "name": "赵六"})
                                     for _ in range(100)))
    assert [a.status for a in answers] == [200] * 100
    assert client.app[cert_routes.SERVICE].pg_queries == 1


async def test_a_full_fallback_answers_503(client: TestClient, pg: asyncpg.Connection) -> None:
    service = client.app[cert_routes.SERVICE]
    service.max_pg_in_flight = 0  # every miss refused, as when the cap is reached
    resp = await client.post(VERIFY, json={"cert_no": "ZG9999000001", "name": "张三"})
    assert resp.status == 503
    assert (await resp.json())["error"]["details"]["reason"] == "lookup_fallback_full"


async def test_throttle_captcha_and_record_read_leave_in_one_batch(client: TestClient, pg: asyncpg.Connection,
                                                                   redis: aioredis.Redis) -> None:
    from captcha import keys as captcha_keys

    number = (await add_certificates(pg, 1, names=["张三"]))[0]
    await cert_prewarm.prewarm(client.app[keys.PG], redis)
    await _configure(client, {
        "captcha": {"routes": {"certificates.verify": "image"}},
        "ratelimit": {"rules": [{"id": "certificates-ip", "routes": ["certificates.verify"], "key": "ip", "rate": 2,
                                 "period_s": 3600, "burst": 2, "mode": "enforce", "on_redis_error": "open"}]}})
    pipelines = (client.app[keys.REDIS], client.app[keys.LIMITER].client)

    async def verify(**body: Any) -> tuple[int, dict[str, Any], list[tuple[int, int]]]:
        image_id = secrets.token_urlsafe(16)
        await redis.set(captcha_keys.answer_key(image_id), "12345", ex=60)
        before = [(p.batches_sent, p.commands_sent) for p in pipelines]
        resp = await client.post(VERIFY, json={"cert_no": number, "name": "张三",
                                               "captcha": {"kind": "image", "id": image_id, "answer": "12345"},
                                               **body})
        sent = [(p.batches_sent - b, p.commands_sent - c) for p, (b, c) in zip(pipelines, before, strict=True)]
        return resp.status, await resp.json(), sent

    no_captcha = await client.post(VERIFY, json={"cert_no": number, "name": "张三"})
    assert no_captcha.status == 400 and (await no_captcha.json())["error"]["code"] == "captcha_invalid"
    status, answer, sent = await verify()
    assert status == 200, answer
    # GETDEL of the captcha answer and HGET of the record in one batch; the GCRA script beside it
    assert sent == [(1, 2), (1, 1)]
    status, answer, sent = await verify()
    assert status == 429 and answer["error"]["code"] == "too_many_requests"
    assert client.app[cert_routes.SERVICE].pg_queries == 0


async def test_the_default_live_config_guards_verification_like_the_score_lookup() -> None:
    from gateway.liveconfig import DEFAULT

    captcha = DEFAULT["captcha"]["routes"]
    assert captcha["certificates.verify"] == captcha["scores.lookup"]
    rules = {rule["id"]: rule for rule in DEFAULT["ratelimit"]["rules"]}
    mine, theirs = rules["certificates-ip"], rules["lookup-ip"]
    assert mine["routes"] == ["certificates.verify"]
    assert {k: v for k, v in mine.items() if k not in ("id", "routes")} == \
        {k: v for k, v in theirs.items() if k not in ("id", "routes")}


async def _pdf_url(client: TestClient, pg: asyncpg.Connection, name: str = "张三") -> tuple[str, str]:
    number = (await add_certificates(pg, 1, names=[name]))[0]
    resp = await client.post(VERIFY, json={"cert_no": number, "name": name})
    assert resp.status == 200, await resp.text()
    return number, (await resp.json())["pdf_url"]


async def test_the_pdf_behind_its_link_is_signed_and_checks(client: TestClient, pg: asyncpg.Connection) -> None:
    number, url = await _pdf_url(client, pg)
    resp = await client.get(url)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/pdf" and resp.headers["Cache-Control"].startswith("private, max-age=")
    signed = await resp.read()
    assert signed.startswith(b"%PDF-")
    again = await client.get(url)
    assert await again.read() == signed  # rendered once, kept under its content's hash
    checked = await client.post(CHECK, data=signed, headers={"Content-Type": "application/pdf"})
    assert checked.status == 200
    answer = await checked.json()
    assert answer["valid"] is True and answer["cert_no"] == number and len(answer["key_id"]) == 16


async def test_a_tampered_pdf_fails_the_check(client: TestClient, pg: asyncpg.Connection) -> None:
    _, url = await _pdf_url(client, pg)
    signed = await (await client.get(url)).read()
    verdicts = []
    for at in (100, len(signed) // 2, len(signed) - 20):
        altered = bytearray(signed)
        altered[at] = ord("0") if altered[at] != ord("0") else ord("1")
        resp = await client.post(CHECK, data=bytes(altered), headers={"Content-Type": "application/pdf"})
        assert resp.status == 200
        verdicts.append(await resp.json())
    assert all(v["valid"] is False for v in verdicts)
    assert {v["reason"] for v in verdicts} <= {"mismatch", "malformed"}
    unsigned = signed[:signed.rindex(b"%EXAMGATE-SIGNATURE")]
    resp = await client.post(CHECK, data=unsigned, headers={"Content-Type": "application/pdf"})
    assert await resp.json() == {"valid": False, "reason": "unsigned"}


async def test_the_check_is_throttled_per_address_by_default(client: TestClient) -> None:
    from gateway.liveconfig import DEFAULT

    (rule,) = [r for r in DEFAULT["ratelimit"]["rules"] if "certificates.check_pdf" in r["routes"]]
    assert rule["key"] == "ip" and rule["mode"] == "enforce"
    await _configure(client, {"ratelimit": {"rules": [{**rule, "burst": 2, "period_s": 3600}]}})
    answers = [await client.post(CHECK, data=b"GIF89a", headers={"Content-Type": "application/pdf"})
               for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    assert (await answers[2].json())["error"]["code"] == "too_many_requests"
    assert int(answers[2].headers["Retry-After"]) > 0


async def test_check_refuses_what_is_not_a_pdf_upload(client: TestClient) -> None:
    empty = await client.post(CHECK, data=b"", headers={"Content-Type": "application/pdf"})
    assert empty.status == 400 and (await empty.json())["error"]["code"] == "malformed_body"
    wrong_type = await client.post(CHECK, data=b"%PDF-1.7", headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    too_big = await client.post(CHECK, data=io.BytesIO(b"%PDF-" + b"0" * cert_routes.MAX_PDF_BYTES),
                                headers={"Content-Type": "application/pdf"})
    assert too_big.status == 413
    not_pdf = await client.post(CHECK, data=b"GIF89a", headers={"Content-Type": "application/pdf"})
    assert await not_pdf.json() == {"valid": False, "reason": "not_pdf"}


async def test_a_tampered_foreign_or_expired_link_is_403(client: TestClient, pg: asyncpg.Connection) -> None:
    number, url = await _pdf_url(client, pg)
    other, _ = await _pdf_url(client, pg, "李四")
    expired = certificates.sign_pdf_link(client.app[cert_routes.LINK_KEY], number, ttl_s=10, now=1_000_000)
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    foreign = url.replace(number, other)
    answers = [await client.get(u) for u in (tampered, expired, foreign)]
    assert [a.status for a in answers] == [403, 403, 403]
    assert {(await a.json())["error"]["code"] for a in answers} == {"link_invalid"}


async def test_prewarm_is_an_operators_route(client: TestClient) -> None:
    resp = await client.post("/admin/api/v1/certificates/prewarm")
    assert resp.status == 401


async def test_an_import_writes_its_certificates_to_redis_and_verification_never_asks_postgresql(
        client: TestClient, pg: asyncpg.Connection, redis: aioredis.Redis) -> None:
    from core.idcards import make_resident_id
    from tests.factories import make_exam

    exam_id = await make_exam(pg)
    await pg.execute("UPDATE exams SET exam_starts_at = now() - interval '40 days' WHERE id = $1", exam_id)
    code = await pg.fetchval("SELECT code FROM exams WHERE id = $1", exam_id)
    number = "IM" + secrets.token_hex(5).upper()
    holder = make_resident_id("370112", date(1988, 3, 4), 17)
    csv = ("cert_no,name,id_number,exam_code,level,approved_on,management_no\n"
           f"{number},钱七,{holder},{code},mid,{(await pg.fetchval('SELECT current_date - 1'))},GL-IMPORTED\n")
    resp = await client.post("/admin/api/v1/imports/certificates", data=csv.encode(),
                             headers=h.admin(**{"Content-Type": "text/csv", "Idempotency-Key": f"cert-{number}"}))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["applied"] == 1
    stored = await redis.hget(certificates.bucket_key(number), number)  # written by the hook before the commit
    assert stored is not None and certificates.decode(stored).management_no == "GL-IMPORTED"
    service = client.app[cert_routes.SERVICE]
    found = await client.post(VERIFY, json={"cert_no": number, "name": "钱七"})
    assert found.status == 200 and (await found.json())["management_no"] == "GL-IMPORTED"
    assert service.pg_queries == 0
    # a correction of the same certificate (another management number) reaches Redis the same way
    corrected = csv.replace("GL-IMPORTED", "GL-CORRECTED")
    resp = await client.post("/admin/api/v1/imports/certificates", data=corrected.encode(),
                             headers=h.admin(**{"Content-Type": "text/csv", "Idempotency-Key": f"fix-{number}"}))
    assert resp.status == 200, await resp.text()
    again = await client.post(VERIFY, json={"cert_no": number, "name": "钱七"})
    assert (await again.json())["management_no"] == "GL-CORRECTED"
    assert service.pg_queries == 0
