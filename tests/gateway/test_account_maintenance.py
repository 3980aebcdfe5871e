"""Account maintenance over HTTP: the phone (a code to each number), the security question and the email (with the
password), education and degree records, operators' verification within their scope, and the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from core import phone_codes
from gateway import keys
from gateway.app import create_app
from tests.gateway import candidate_http as h
from tests.gateway.test_app import assert_error_shape

PHONE = "/api/v1/me/phone"
QUESTION = "/api/v1/me/security-question"
EMAIL = "/api/v1/me/email"
EDUCATIONS = "/api/v1/me/educations"
DEGREES = "/api/v1/me/degrees"
NEW_PASSWORD = "New#Pass2026"
EDUCATION = {"cert_no": "10422120100600777", "school": "山东大学", "graduated_on": "2010-06", "major": "会计学",
             "level": "bachelor", "mode": "full_time"}
DEGREE = {"cert_no": "1042232010000777", "school": "山东大学", "obtained_on": "2010-06", "major": "会计学",
          "level": "bachelor", "kind": "academic"}


@pytest.fixture
async def client(aiohttp_client: Any, pg_dsn: str, redis_url: str, redis: aioredis.Redis,
                 tmp_path: Path) -> TestClient:
    made = await aiohttp_client(create_app(h.settings(pg_dsn, redis_url, tmp_path)))
    await h.captcha_off(made)
    return made


async def call(client: TestClient, method: str, path: str, status: int, token: str | None = None,
               headers: dict[str, str] | None = None, **kw: Any) -> Any:
    """A request that must answer ``status``: its decoded body (None without one)."""
    resp = await client.request(method, path, headers={**(h.bearer(token) if token else {}), **(headers or {})},
                                **kw)
    assert resp.status == status, await resp.text()
    return await resp.json() if resp.content_length else None


async def refused(client: TestClient, method: str, path: str, status: int, code: str, token: str | None = None,
                  **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = await call(client, method, path, status, token, **kw)
    assert_error_shape(body, code)
    return body


async def change_code(client: TestClient, phone: str) -> str:
    """A change_phone code to ``phone`` (the per-phone minute between sends waived)."""
    await client.app[keys.REDIS].delete(phone_codes.sent_key(phone))
    return await h.sms_code(client, phone, "change_phone")


async def signed_up(client: TestClient) -> tuple[dict[str, Any], str]:
    account = await h.register(client)
    return account, await h.login(client, account["username"])


async def me(client: TestClient, token: str) -> dict[str, Any]:
    found: dict[str, Any] = await call(client, "GET", "/api/v1/me", 200, token)
    return found


async def code_live(client: TestClient, phone: str) -> bool:
    return bool(await client.app[keys.REDIS].execute(b"EXISTS", phone_codes.code_key(phone, "change_phone")))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# -- the phone -----------------------------------------------------------------------------------------


async def test_a_phone_change_needs_both_codes_and_ends_every_session(client: TestClient,
                                                                      pg: asyncpg.Connection) -> None:
    account, token = await signed_up(client)
    other_session = await h.login(client, account["username"])
    old_phone, new_phone = account["phone"], h.phone()
    old_code, new_code = await change_code(client, old_phone), await change_code(client, new_phone)

    for body in ({"new_phone": new_phone, "old_code": wrong(old_code), "new_code": new_code},
                 {"new_phone": new_phone, "old_code": old_code, "new_code": wrong(new_code)},
                 {"new_phone": new_phone, "old_code": new_code, "new_code": old_code}):
        await refused(client, "PUT", PHONE, 400, "code_invalid", token, json=body)
    assert (await me(client, token))["phone"] == old_phone
    await refused(client, "PUT", PHONE, 422, "validation_failed", token,
                  json={"new_phone": old_phone, "old_code": old_code, "new_code": new_code})
    await refused(client, "PUT", PHONE, 401, "unauthorized",
                  json={"new_phone": new_phone, "old_code": old_code, "new_code": new_code})

    # Full-width digits, as a phone keyboard may type them, are the same code.
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in old_code)
    changed = await call(client, "PUT", PHONE, 200, token,
                         json={"new_phone": new_phone, "old_code": full_width, "new_code": new_code})
    assert changed["phone"] == new_phone and changed["token"] != token and changed["expires_in"] > 0
    for ended in (token, other_session):
        await refused(client, "GET", "/api/v1/me", 401, "unauthorized", ended)
    assert (await me(client, changed["token"]))["phone"] == new_phone
    await h.login(client, account["username"])  # the password is unchanged

    # Both codes are spent; the old number is free for another account, the new one taken.
    for phone in (old_phone, new_phone):
        assert not await code_live(client, phone)
    await refused(client, "PUT", PHONE, 400, "code_invalid", changed["token"],
                  json={"new_phone": h.phone(), "old_code": new_code, "new_code": old_code})
    await client.app[keys.REDIS].delete(phone_codes.sent_key(old_phone))
    await h.register(client, h.registration(phone=old_phone))
    await client.app[keys.REDIS].delete(phone_codes.sent_key(new_phone))
    body = await h.with_code(client, h.registration(phone=new_phone))
    await refused(client, "POST", "/api/v1/accounts", 409, "phone_taken", json=body)

    event = await pg.fetchrow("SELECT actor, details, address FROM account_events WHERE candidate_id = $1 AND "
                              "action = 'change_phone'", account["candidate_id"])
    assert event["actor"] == f"candidate:{account['candidate_id']}" and event["address"]
    assert event["details"] == {"old": f"{old_phone[:3]}****{old_phone[-4:]}",
                                "new": f"{new_phone[:3]}****{new_phone[-4:]}"}


async def test_expired_and_exhausted_codes_are_refused(client: TestClient) -> None:
    account, token = await signed_up(client)
    old_phone, new_phone = account["phone"], h.phone()
    old_code, new_code = await change_code(client, old_phone), await change_code(client, new_phone)
    # Every wrong try spends an attempt of both codes: after five, the right codes are dead too.
    for _ in range(5):
        await refused(client, "PUT", PHONE, 400, "code_invalid", token,
                      json={"new_phone": new_phone, "old_code": wrong(old_code), "new_code": new_code})
    await refused(client, "PUT", PHONE, 400, "code_invalid", token,
                  json={"new_phone": new_phone, "old_code": old_code, "new_code": new_code})

    old_code, new_code = await change_code(client, old_phone), await change_code(client, new_phone)
    await client.app[keys.REDIS].delete(phone_codes.code_key(new_phone, "change_phone"))  # as when it expires
    await refused(client, "PUT", PHONE, 400, "code_invalid", token,
                  json={"new_phone": new_phone, "old_code": old_code, "new_code": new_code})
    assert (await me(client, token))["phone"] == old_phone


async def test_a_number_taken_by_another_account_is_409_and_keeps_the_codes(client: TestClient) -> None:
    account, token = await signed_up(client)
    other = await h.register(client)
    old_code, new_code = await change_code(client, account["phone"]), await change_code(client, other["phone"])
    body = {"new_phone": other["phone"], "old_code": old_code, "new_code": new_code}
    reply = await refused(client, "PUT", PHONE, 409, "phone_taken", token, json=body)
    assert reply["error"]["details"] == {"field": "phone"}
    assert (await me(client, token))["phone"] == account["phone"]  # the session lives, nothing changed
    assert await code_live(client, account["phone"]) and await code_live(client, other["phone"])


# -- the security question and the email -----------------------------------------------------------------


async def test_the_security_question_needs_the_password_and_recovers_the_account(
        client: TestClient, pg: asyncpg.Connection) -> None:
    account, token = await signed_up(client)
    other_session = await h.login(client, account["username"])
    body = {"password": h.PASSWORD, "question": "  我的  第一位老师？ ", "answer": "王 老师"}
    await refused(client, "PUT", QUESTION, 403, "password_incorrect", token, json={**body, "password": "Wrong#2026x"})
    fields = (await refused(client, "PUT", QUESTION, 422, "validation_failed", token,
                            json={**body, "question": "问", "answer": "\u200b"}))["error"]["details"]["fields"]
    assert fields == {"question": "too_short", "answer": "invalid_characters"}
    changed = await call(client, "PUT", QUESTION, 200, token, json=body)
    assert changed["security_question"] == "我的 第一位老师？" and changed["token"] != token
    for ended in (token, other_session):
        await refused(client, "GET", "/api/v1/me", 401, "unauthorized", ended)
    assert (await me(client, changed["token"]))["security_question"] == "我的 第一位老师？"
    details = await pg.fetchval("SELECT details FROM account_events WHERE candidate_id = $1 AND "
                                "action = 'change_security_question'", account["candidate_id"])
    assert details == {"question": "我的 第一位老师？"}  # never the answer

    # Password recovery by question asks the new one; the old answer no longer works, the new one does.
    async def reset(answer: str, status: int) -> None:
        started = await call(client, "POST", "/api/v1/password-resets/question", 200,
                             json={"name": account["name"], "id_number": account["id_number"]})
        assert started["question"] == "我的 第一位老师？"
        await call(client, "POST", f"/api/v1/password-resets/question/{started['reset_id']}", status,
                   json={"answer": answer, "new_password": NEW_PASSWORD})

    await reset(h.ANSWER, 400)
    await reset(" 王  老师", 204)
    await h.login(client, account["username"], NEW_PASSWORD)


async def test_wrong_passwords_are_counted_per_candidate(client: TestClient) -> None:
    account, token = await signed_up(client)
    body = {"password": "Wrong#2026x", "email": "new@example.com"}
    for _ in range(5):  # reauth-candidate: a burst of 5 failures
        await refused(client, "PUT", EMAIL, 403, "password_incorrect", token, json=body)
    reply = await refused(client, "PUT", EMAIL, 429, "too_many_requests", token, json={**body, "password": h.PASSWORD})
    assert reply["error"]["details"]["rules"] == ["reauth-candidate"]
    await refused(client, "PUT", QUESTION, 429, "too_many_requests", token,
                  json={"password": h.PASSWORD, "question": "我的问题？", "answer": "答案"})
    # Another candidate is not concerned; sign-in still works for this one.
    _, other_token = await signed_up(client)
    await call(client, "PUT", EMAIL, 200, other_token, json={**body, "password": h.PASSWORD})
    await h.login(client, account["username"])


async def test_the_email_needs_the_password_and_keeps_the_sessions(client: TestClient,
                                                                   pg: asyncpg.Connection) -> None:
    account, token = await signed_up(client)
    await refused(client, "PUT", EMAIL, 403, "password_incorrect", token,
                  json={"password": "Wrong#2026x", "email": "li@example.com"})
    fields = (await refused(client, "PUT", EMAIL, 422, "validation_failed", token,
                            json={"password": h.PASSWORD, "email": "not-an-address", "x": 1}))["error"]["details"]
    assert fields["fields"] == {"email": "invalid_format", "x": "unknown_field"}
    assert (await call(client, "PUT", EMAIL, 200, token,
                       json={"password": h.PASSWORD, "email": " Li.Si@Example.COM "}))["email"] == "Li.Si@example.com"
    assert (await me(client, token))["email"] == "Li.Si@example.com"  # the same session still works
    await call(client, "PUT", EMAIL, 200, token, json={"password": h.PASSWORD, "email": "Li.Si@example.com"})
    rows = await pg.fetch("SELECT details FROM account_events WHERE candidate_id = $1 AND action = 'change_email'",
                          account["candidate_id"])
    assert [row["details"] for row in rows] == [{"old": "z***@example.com", "new": "L***@example.com"}]


# -- education and degree records ----------------------------------------------------------------------


async def test_education_records_are_added_limited_and_deleted(client: TestClient) -> None:
    _, token = await signed_up(client)
    added = await call(client, "POST", EDUCATIONS, 201, token, json=EDUCATION)
    assert {k: added[k] for k in EDUCATION} == EDUCATION
    assert added["status"] == "not_checked" and added["added_at"] and added["checked_at"] is None
    assert "checked_by" not in added
    await refused(client, "POST", EDUCATIONS, 409, "duplicate_cert_no", token, json=EDUCATION)
    fields = (await refused(client, "POST", EDUCATIONS, 422, "validation_failed", token,
                            json={**EDUCATION, "graduated_on": "2999-01", "level": "phd"}))["error"]["details"]
    assert fields["fields"] == {"graduated_on": "in_future", "level": "invalid_choice"}
    for i in range(8):  # registration gave one: ten in all
        await call(client, "POST", EDUCATIONS, 201, token, json={**EDUCATION, "cert_no": f"N-{i}"})
    reply = await refused(client, "POST", EDUCATIONS, 409, "too_many_educations", token,
                          json={**EDUCATION, "cert_no": "N-9"})
    assert reply["error"]["details"] == {"max": 10}
    profile = await me(client, token)
    assert len(profile["educations"]) == 10 and {e["status"] for e in profile["educations"]} == {"not_checked"}

    # Someone else's record and a malformed id answer as an unknown one.
    _, other_token = await signed_up(client)
    await refused(client, "DELETE", f"{EDUCATIONS}/{added['education_id']}", 404, "education_not_found",
                  other_token)
    for bad in ("abc", "0", "01", "99999999999999999999"):
        await refused(client, "DELETE", f"{EDUCATIONS}/{bad}", 404, "education_not_found", token)
    await call(client, "DELETE", f"{EDUCATIONS}/{added['education_id']}", 204, token)
    await refused(client, "DELETE", f"{EDUCATIONS}/{added['education_id']}", 404, "education_not_found", token)
    for record in (await me(client, token))["educations"][1:]:
        await call(client, "DELETE", f"{EDUCATIONS}/{record['education_id']}", 204, token)
    last = (await me(client, token))["educations"]
    assert len(last) == 1
    await refused(client, "DELETE", f"{EDUCATIONS}/{last[0]['education_id']}", 409, "last_education", token)


async def test_verified_records_stay(client: TestClient) -> None:
    account, token = await signed_up(client)
    candidate = account["candidate_id"]
    education = await call(client, "POST", EDUCATIONS, 201, token, json=EDUCATION)
    degree = await call(client, "POST", DEGREES, 201, token, json=DEGREE)
    assert degree["status"] == "not_checked" and {k: degree[k] for k in DEGREE} == DEGREE
    for kind, record_id in (("educations", education["education_id"]), ("degrees", degree["degree_id"])):
        verified = await call(client, "PUT", f"/admin/api/v1/candidates/{candidate}/{kind}/{record_id}/status", 200,
                              headers=h.admin(), json={"status": "verified"})
        assert verified["status"] == "verified" and verified["checked_by"] == "ops"
        reply = await refused(client, "DELETE", f"/api/v1/me/{kind}/{record_id}", 409, "record_verified", token)
        assert "已核验" in reply["error"]["message"]
    profile = await me(client, token)
    assert [d["status"] for d in profile["degrees"]] == ["verified"]
    # Back to not_checked, it can go again.
    await call(client, "PUT", f"/admin/api/v1/candidates/{candidate}/degrees/{degree['degree_id']}/status", 200,
               headers=h.admin(), json={"status": "not_checked", "note": "误操作"})
    await call(client, "DELETE", f"{DEGREES}/{degree['degree_id']}", 204, token)
    assert (await me(client, token))["degrees"] == []


async def test_degree_records_are_limited(client: TestClient) -> None:
    _, token = await signed_up(client)
    for i in range(5):
        await call(client, "POST", DEGREES, 201, token, json={**DEGREE, "cert_no": f"D-{i}"})
    reply = await refused(client, "POST", DEGREES, 409, "too_many_degrees", token, json={**DEGREE, "cert_no": "D-5"})
    assert reply["error"]["details"] == {"max": 5}
    await refused(client, "POST", DEGREES, 422, "validation_failed", token, json={**DEGREE, "kind": "bachelor"})


# -- operators -----------------------------------------------------------------------------------------


async def reviewer(client: TestClient, name: str, province: str) -> dict[str, str]:
    await call(client, "POST", "/admin/api/v1/operators", 201, headers=h.admin(),
               json={"name": name, "role": "reviewer", "provinces": [province]})
    issued = await call(client, "POST", f"/admin/api/v1/operators/{name}/tokens", 201, headers=h.admin())
    return h.bearer(issued["token"])


async def test_operators_set_statuses_within_their_scope_and_read_the_trail(client: TestClient) -> None:
    account, token = await signed_up(client)  # a resident id of Shandong (37)
    candidate = account["candidate_id"]
    education = (await me(client, token))["educations"][0]["education_id"]
    status_path = f"/admin/api/v1/candidates/{candidate}/educations/{education}/status"
    shandong, beijing = await reviewer(client, "sd-records", "37"), await reviewer(client, "bj-records", "11")

    await refused(client, "PUT", status_path, 404, "education_not_found", headers=beijing, json={"status": "verified"})
    await refused(client, "GET", f"/admin/api/v1/candidates/{candidate}/account-events", 404, "candidate_not_found",
                  headers=beijing)
    await refused(client, "PUT", status_path, 401, "unauthorized", json={"status": "verified"})
    await refused(client, "PUT", status_path, 422, "validation_failed", headers=shandong, json={"status": "genuine"})
    await refused(client, "PUT", f"/admin/api/v1/candidates/{candidate + 1000}/educations/{education}/status", 404,
                  "education_not_found", headers=shandong, json={"status": "verified"})
    done = await call(client, "PUT", status_path, 200, headers=shandong,
                      json={"status": "needs_manual", "note": "  学信网 查询不到 "})
    assert (done["status"], done["checked_by"]) == ("needs_manual", "sd-records") and done["checked_at"]
    assert (await me(client, token))["educations"][0]["status"] == "needs_manual"
    await call(client, "PUT", status_path, 200, headers=shandong, json={"status": "rejected"})
    await call(client, "POST", EDUCATIONS, 201, token, json=EDUCATION)

    events_path = f"/admin/api/v1/candidates/{candidate}/account-events"
    page = await call(client, "GET", events_path + "?limit=2", 200, headers=shandong)
    assert [e["action"] for e in page["events"]] == ["create", "set_education_status"]
    rest = await call(client, "GET", f"{events_path}?after={page['next_after']}", 200, headers=h.admin())
    assert rest["next_after"] is None
    trail = page["events"] + rest["events"]
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("create", f"candidate:{candidate}"), ("set_education_status", "operator:sd-records"),
        ("set_education_status", "operator:sd-records"), ("add_education", f"candidate:{candidate}")]
    assert trail[1]["details"] == {"education_id": education, "cert_no": "10001120120600123",
                                   "from": "not_checked", "to": "needs_manual", "note": "学信网 查询不到"}
    await refused(client, "GET", f"{events_path}?limit=0", 422, "validation_failed", headers=shandong)
    await refused(client, "GET", "/admin/api/v1/candidates/abc/account-events", 404, "candidate_not_found",
                  headers=shandong)
