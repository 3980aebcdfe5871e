"""One spelling per identity, through a running two-process gateway on real stores.

Every spelling of an id number or username that reaches an account (full-width digits and
letters, another case, surrounding spaces) shares that account's rate-limit buckets; password
recovery shows the same question for an id number whatever the name, and only the right name
and answer together change the password; ids in URL paths are ASCII digits only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis

from core import phone_codes, sms
from core.timeutil import utcnow
from loadtest.processes import Process, start_gateway
from tests.factories import make_exam
from tests.gateway import candidate_http as h
from tests.gateway.seat_stack import make_candidates, make_sessions, set_live
from tests.gateway.test_app import assert_error_shape

QUESTION = "/api/v1/password-resets/question"
SMS = "/api/v1/password-resets/sms"
SESSIONS = "/api/v1/sessions"
SCORES = "/api/v1/scores/lookup"
NEW_PASSWORD = "New#Pass2026"
CAPTCHA_OFF = dict.fromkeys((
    "accounts.create", "sessions.create", "password_resets.question.start", "password_resets.sms.start",
    "password_resets.*", "tickets.lookup", "scores.lookup", "sms_codes.create", "username_recoveries.create"), "off")


def full_width(text: str) -> str:
    """``text`` with every printable ASCII character written in its full-width form (１２３Ｘ)."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def rule(rule_id: str, routes: list[str], key: str, burst: int, **extra: Any) -> dict[str, Any]:
    """A rule that allows ``burst`` requests and then one an hour."""
    return {"id": rule_id, "routes": routes, "key": key, "rate": 1, "period_s": 3600, "burst": burst,
            "mode": "enforce", "on_redis_error": "open", **extra}


def resident_id_ending_in_x() -> str:
    """A valid resident id whose check character is X (so a lower-case x is another spelling of it)."""
    for _ in range(2000):
        number = h.resident_id()
        if number.endswith("X"):
            return number
    raise AssertionError("no resident id with an X check character drawn")


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, **h.FAST_ARGON)
    process.extra["pg_dsn"] = pg_dsn  # where the tests read the SMS codes the gateway sends
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
async def http(gateway: Process) -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request, so the two processes both answer.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(gateway.url, connector=connector) as session:
        yield session


async def post(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(path, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def register(gateway: Process, http: aiohttp.ClientSession, **changes: Any) -> dict[str, Any]:
    """Register through the API with captcha off and no throttles; the body used."""
    await set_live(gateway, {"captcha": {"routes": CAPTCHA_OFF}, "ratelimit": {"rules": []}})
    body = h.registration(**changes)
    pg = await asyncpg.connect(gateway.extra["pg_dsn"])
    try:
        body["sms_code"] = await h.code_over_http(http, "", pg, body["phone"])
    finally:
        await pg.close()
    from tests.conftest import TEST_REDIS_URL

    with redis.Redis.from_url(TEST_REDIS_URL) as store:  # the registration code's send does not hold up the tests'
        store.delete(phone_codes.sent_key(body["phone"]))
    status, reply = await post(http, "/api/v1/accounts", body)
    assert status == 201, reply
    return body


# -- one bucket per identity ------------------------------------------------------------------------


async def test_reset_throttle_is_one_bucket_for_every_spelling_of_the_id_number(
    gateway: Process, http: aiohttp.ClientSession
) -> None:
    id_number = resident_id_ending_in_x()
    account = await register(gateway, http, id_number=id_number)
    await set_live(gateway, {"ratelimit": {"rules": [
        rule("recovery-id", ["password_resets.question.start", "password_resets.sms.start"], "id_number", 3)]}})

    # The full-width spelling reaches the account (its real question) and spends the one budget.
    status, started = await post(http, QUESTION, {"name": "张三", "id_number": full_width(id_number)})
    assert status == 200 and started["question"] == account["security_question"], started
    for _ in range(2):
        status, started = await post(http, QUESTION, {"name": "张三", "id_number": id_number})
        assert status == 200, started

    spellings = [id_number, full_width(id_number), f"  {id_number.lower()} ", "\u3000" + full_width(id_number.lower()),
                 id_number[:1] + full_width(id_number[1:9]) + id_number[9:]]
    for spelling in spellings:
        status, refused = await post(http, QUESTION, {"name": "张三", "id_number": spelling})
        assert status == 429, (spelling, refused)
        assert_error_shape(refused, "too_many_requests")
        assert refused["error"]["details"]["rules"] == ["recovery-id"]
    # The SMS start shares the rule and the bucket.
    status, refused = await post(http, SMS, {"name": "张三", "id_number": full_width(id_number),
                                             "phone": full_width(account["phone"])})
    assert status == 429 and refused["error"]["details"]["rules"] == ["recovery-id"], refused


async def test_login_failures_share_one_bucket_across_spellings_of_the_username(
    gateway: Process, http: aiohttp.ClientSession
) -> None:
    account, other = await register(gateway, http), await register(gateway, http)
    username = account["username"]
    await set_live(gateway, {"ratelimit": {"rules": [
        # Not named login-account: live config may answer that rule with a captcha instead of a 429.
        rule("account-failures", ["sessions.create"], "account", 3, counts="failures")]}})
    for spelling in (username, full_width(username), username.upper()):
        status, reply = await post(http, SESSIONS, {"username": spelling, "password": "Wrong#Pass2026"})
        assert status == 401, (spelling, reply)
    for spelling in (full_width(username.upper()), f" {username} ", username):
        status, refused = await post(http, SESSIONS, {"username": spelling, "password": h.PASSWORD})
        assert status == 429, (spelling, refused)
        assert_error_shape(refused, "too_many_attempts")
    # Every spelling signs in to the one account (the one its throttle counts).
    for spelling in (other["username"].upper(), full_width(other["username"]),
                     f" {full_width(other['username'].upper())} "):
        status, reply = await post(http, SESSIONS, {"username": spelling, "password": h.PASSWORD})
        assert status == 201, (spelling, reply)


async def test_lookup_id_number_rule_shares_buckets_across_spellings(
    gateway: Process, http: aiohttp.ClientSession, pg: asyncpg.Connection
) -> None:
    exam_id = await make_exam(pg, sites=[("11", 30)])
    await pg.execute("UPDATE exams SET score_release_at = $2 WHERE id = $1", exam_id, utcnow() - timedelta(minutes=1))
    await set_live(gateway, {"captcha": {"routes": CAPTCHA_OFF}, "ratelimit": {"rules": [
        rule("lookup-id", ["scores.lookup", "tickets.lookup"], "id_number", 2)]}})
    id_number = resident_id_ending_in_x()
    body = {"exam_id": exam_id, "name": "张三"}
    await asyncio.sleep(1.2)  # each process re-reads the catalogue every 0.5 s
    for _ in range(100):
        status, reply = await post(http, SCORES, {**body, "id_number": id_number})
        if reply["error"]["code"] not in ("exam_not_found", "not_yet_released"):  # decided before the throttle
            break
        await asyncio.sleep(0.1)
    assert status == 404 and reply["error"]["code"] == "not_found", reply
    status, reply = await post(http, SCORES, {**body, "id_number": full_width(id_number.lower())})
    assert status == 404 and reply["error"]["code"] == "not_found", reply

    for spelling in (full_width(id_number), f" {id_number.lower()} ", id_number):
        status, refused = await post(http, SCORES, {**body, "id_number": spelling})
        assert status == 429, (spelling, refused)
        assert refused["error"]["details"]["rules"] == ["lookup-id"]


# -- recovery confirms no name/id pair --------------------------------------------------------------


async def test_the_question_does_not_depend_on_the_name(gateway: Process, http: aiohttp.ClientSession) -> None:
    account = await register(gateway, http)
    id_number = account["id_number"]
    right = await post(http, QUESTION, {"name": "张三", "id_number": id_number})
    wrong = await post(http, QUESTION, {"name": "李四", "id_number": full_width(id_number)})
    assert right[0] == wrong[0] == 200
    assert set(right[1]) == set(wrong[1]) == {"reset_id", "question"}
    assert wrong[1]["question"] == right[1]["question"] == account["security_question"]


async def test_a_reset_started_with_the_wrong_name_never_changes_the_password(
    gateway: Process, http: aiohttp.ClientSession
) -> None:
    account = await register(gateway, http)
    id_number = account["id_number"]
    _, wrong_name = await post(http, QUESTION, {"name": "李四", "id_number": id_number})
    _, right_name = await post(http, QUESTION, {"name": "张三", "id_number": id_number})

    # The right answer under the wrong name fails exactly like a wrong answer under the right name.
    replies = []
    for started, answer in ((wrong_name, h.ANSWER), (right_name, "别的小学")):
        seen = []
        for _ in range(6):
            seen.append(await post(http, f"{QUESTION}/{started['reset_id']}",
                                   {"answer": answer, "new_password": NEW_PASSWORD}))
        replies.append(seen)
    assert replies[0] == replies[1]
    assert [status for status, _ in replies[0]] == [400] * 6
    assert [reply["error"]["code"] for _, reply in replies[0]] == (
        ["reset_invalid"] * 4 + ["reset_attempts_exhausted", "reset_invalid"])

    status, reply = await post(http, SESSIONS, {"username": account["username"], "password": h.PASSWORD})
    assert status == 201, reply  # the password did not change
    # The real owner still recovers the account.
    _, started = await post(http, QUESTION, {"name": " 张三 ", "id_number": id_number.lower()})
    status, reply = await post(http, f"{QUESTION}/{started['reset_id']}",
                               {"answer": h.ANSWER, "new_password": NEW_PASSWORD})
    assert status == 204, reply
    status, reply = await post(http, SESSIONS, {"username": account["username"], "password": NEW_PASSWORD})
    assert status == 201, reply


async def test_sms_start_answers_alike_for_a_wrong_name(
    gateway: Process, http: aiohttp.ClientSession, pg: asyncpg.Connection
) -> None:
    mine, theirs = await register(gateway, http), await register(gateway, http)
    right = await post(http, SMS, {"name": "张三", "id_number": mine["id_number"], "phone": mine["phone"]})
    wrong = await post(http, SMS, {"name": "李四", "id_number": theirs["id_number"],
                                   "phone": full_width(theirs["phone"])})
    assert right == wrong and right[0] == 202
    assert len(await resets(pg, mine["phone"])) == 1
    assert await resets(pg, theirs["phone"]) == []
    # The phone's send throttle is keyed on its one spelling too.
    status, refused = await post(http, SMS, {"name": "张三", "id_number": theirs["id_number"],
                                             "phone": theirs["phone"]})
    assert status == 429, refused
    assert await resets(pg, theirs["phone"]) == []


async def resets(pg: asyncpg.Connection, phone: str) -> list[sms.OutboxMessage]:
    """The password-reset codes sent to ``phone`` (its registration code aside)."""
    return [m for m in await sms.outbox(pg, phone=phone) if m.template == "password_reset_code"]


# -- ids in URL paths are ASCII digits --------------------------------------------------------------


async def test_path_ids_in_other_digit_sets_are_unknown_ids(
    gateway: Process, http: aiohttp.ClientSession, pg: asyncpg.Connection
) -> None:
    exam_id = await make_exam(pg, sites=[("11", 30)])
    for _ in range(100):  # the catalogue refreshes every 0.5 s
        async with http.get(f"/api/v1/exams/{exam_id}/sites") as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.1)
    assert resp.status == 200

    # The registration routes are a candidate's: signed in, so the path id (not the 401) is what is judged.
    from tests.conftest import TEST_REDIS_URL

    [token] = await make_sessions(TEST_REDIS_URL, await make_candidates(pg, 1))

    async def answer(path: str) -> tuple[int, Any]:
        async with http.get(path, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body["error"]["code"] if isinstance(body, dict) and "error" in body else body

    arabic_indic = "".join(chr(0x0660 + int(d)) for d in str(exam_id))
    superscript = "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for d in str(exam_id))
    for spelling in ("abc", full_width(str(exam_id)), arabic_indic, superscript, f"0{exam_id}", "9" * 5000):
        assert await answer(f"/api/v1/exams/{spelling}/sites") == (404, "exam_not_found"), spelling
    for spelling in ("abc", full_width(str(exam_id)), superscript):
        assert await answer(f"/api/v1/registrations/{spelling}") == (404, "registration_not_found"), spelling
