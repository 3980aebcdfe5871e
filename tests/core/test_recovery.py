"""Password recovery end to end against real PostgreSQL and Redis: question and SMS flows."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any, NamedTuple

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import db, recovery, sessions, sms
from core.idcards import make_resident_id
from core.passwords import PasswordHasher, PasswordSettings, normalise_answer
from core.recovery import (
    AttemptsExhausted,
    CodeInvalid,
    PasswordRejected,
    RecoverySettings,
    ResetInvalid,
    SendThrottled,
)
from core.scripts import load_scripts
from core.timeutil import utcnow

SECRET = b"test-recovery-secret"
OLD_PASSWORD = "Old-Passw0rd"
NEW_PASSWORD = "New-Passw0rd!"
ANSWER = "北京 Haidian"
_CODE_IN_BODY = re.compile(r"验证码为([0-9]{6})，")


class Candidate(NamedTuple):
    id: int
    username: str
    name: str
    id_number: str
    phone: str
    question: str


@pytest.fixture(scope="module")
def hasher() -> Iterator[PasswordHasher]:
    """A fast argon2id hasher (tiny memory cost): the tests check flows, not hash strength."""
    owned = PasswordHasher(PasswordSettings(memory_kib=1024, time_cost=1, threads=2))
    yield owned
    owned.close()


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool, for tests that run flows concurrently."""
    owned = await db.create_pool(db.PoolSettings(pg_dsn, min_size=1, max_size=4))
    try:
        yield owned
    finally:
        await owned.close()


def random_phone() -> str:
    return "137" + "".join(secrets.choice("0123456789") for _ in range(8))


async def make_candidate(pg: Any, hasher: PasswordHasher, *, question: str = "您的出生地是？") -> Candidate:
    """A candidate with OLD_PASSWORD and ANSWER, written straight to PostgreSQL."""
    username = f"r{secrets.token_hex(6)}"
    id_number = make_resident_id("110101", date(1990, 3, 7), secrets.randbelow(1000))
    while await pg.fetchval("SELECT 1 FROM candidates WHERE id_number = $1", id_number):
        id_number = make_resident_id("110101", date(1990, 3, 7), secrets.randbelow(1000))
    phone = random_phone()
    candidate_id = await pg.fetchval(
        """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
               security_question, security_answer_hash)
           VALUES ($1, $2, '李小明', 'resident_id', $3, $4, 'r@example.com', $5, $6) RETURNING id""",
        username, await hasher.hash(OLD_PASSWORD), id_number, phone, question,
        await hasher.hash(normalise_answer(ANSWER)),
    )  # fmt: skip
    return Candidate(candidate_id, username, "李小明", id_number, phone, question)


async def password_is(pg: Any, hasher: PasswordHasher, candidate_id: int, password: str) -> bool:
    stored = await pg.fetchval("SELECT password_hash FROM candidates WHERE id = $1", candidate_id)
    return await hasher.verify(stored, password)


async def latest_code(pg: Any, phone: str) -> str | None:
    messages = await sms.outbox(pg, phone=phone, limit=1)
    if not messages:
        return None
    match = _CODE_IN_BODY.search(messages[0].body)
    assert match is not None, messages[0].body
    return match[1]


async def outcome(coro: Any) -> Any:
    """The result, or the class of the recovery (or SMS code) error raised."""
    try:
        return await coro
    except (recovery.RecoveryError, CodeInvalid, SendThrottled) as exc:
        return type(exc)


def test_script_headers_list_keys_argv_and_return() -> None:
    scripts = load_scripts("core.lua")
    for name in ("reset_put", "reset_attempt", "sms_throttle"):
        text = scripts[name].source
        assert "KEYS[1]" in text and "ARGV[1]" in text and "Returns" in text, name


# -- by security question ----------------------------------------------------------------------------


async def test_question_flow_end_to_end(pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher) -> None:
    me = await make_candidate(pg, hasher)
    session = await sessions.create(redis, me.id, now=utcnow())

    challenge = await recovery.start_question(pg, redis, me.name, me.id_number.lower(), secret=SECRET)
    assert challenge.question == me.question and len(challenge.reset_id) == 43

    with pytest.raises(ResetInvalid):
        await recovery.finish_question(pg, redis, hasher, challenge.reset_id, "上海", NEW_PASSWORD)
    # The answer is compared normalised: NFKC, whitespace collapsed, casefolded.
    done = await recovery.finish_question(pg, redis, hasher, challenge.reset_id, " 北京  ＨＡＩＤＩＡＮ ", NEW_PASSWORD)

    assert done == me.id
    assert await password_is(pg, hasher, me.id, NEW_PASSWORD)
    assert not await password_is(pg, hasher, me.id, OLD_PASSWORD)
    assert await sessions.resolve(redis, session.token) is None
    with pytest.raises(ResetInvalid):  # used
        await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, "Other-Passw0rd")
    assert await password_is(pg, hasher, me.id, NEW_PASSWORD)


async def test_unknown_pairs_answer_like_known_ones(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher, question=recovery.DECOY_QUESTIONS[0])
    known = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET)
    unknown_id = make_resident_id("370112", date(1991, 1, 1), 253)
    unknown = await recovery.start_question(pg, redis, "王五", unknown_id, secret=SECRET)
    wrong_name = await recovery.start_question(pg, redis, "王五", me.id_number, secret=SECRET)

    for challenge in (known, unknown, wrong_name):
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge.reset_id)
        assert challenge.question in recovery.DECOY_QUESTIONS
    # The question is the id number's, whatever the name: it confirms no name/id pair.
    assert wrong_name.question == known.question == me.question
    # The decoy is stable for an id number, and the reset ids are always new.
    again = await recovery.start_question(pg, redis, "王五", unknown_id, secret=SECRET)
    assert again.question == unknown.question and again.reset_id != unknown.reset_id
    assert unknown.question == recovery.decoy_question(SECRET, unknown_id.lower())
    # Same keys, fields and lifetime in Redis.
    records = [await redis.hgetall(recovery.question_key(c.reset_id)) for c in (known, unknown)]
    assert [sorted(r) for r in records] == [[b"answer", b"candidate", b"left"]] * 2
    ttls = [await redis.ttl(recovery.question_key(c.reset_id)) for c in (known, unknown)]
    assert all(590 <= ttl <= 600 for ttl in ttls)

    # Wrong answers: the same errors in the same order, known or not.
    seen = []
    for challenge in (known, unknown, wrong_name):
        seen.append(
            [
                await outcome(recovery.finish_question(pg, redis, hasher, challenge.reset_id, "错", NEW_PASSWORD))
                for _ in range(6)
            ]
        )
    expected = [ResetInvalid] * 4 + [AttemptsExhausted, ResetInvalid]
    assert seen == [expected] * 3
    # The right answer to an unknown pair's reset is still a wrong one, under the wrong name too.
    decoy = await recovery.start_question(pg, redis, "王五", unknown_id, secret=SECRET)
    with pytest.raises(ResetInvalid):
        await recovery.finish_question(pg, redis, hasher, decoy.reset_id, ANSWER, NEW_PASSWORD)
    wrong_name = await recovery.start_question(pg, redis, "王五", me.id_number, secret=SECRET)
    for _ in range(4):
        with pytest.raises(ResetInvalid):
            await recovery.finish_question(pg, redis, hasher, wrong_name.reset_id, ANSWER, NEW_PASSWORD)
    with pytest.raises(AttemptsExhausted):
        await recovery.finish_question(pg, redis, hasher, wrong_name.reset_id, ANSWER, NEW_PASSWORD)
    assert await password_is(pg, hasher, me.id, OLD_PASSWORD)


def test_decoy_question_depends_on_the_secret_and_the_id_number() -> None:
    ids = [make_resident_id("110101", date(1980, 1, 1), n) for n in range(40)]
    first = [recovery.decoy_question(SECRET, i) for i in ids]
    assert first == [recovery.decoy_question(SECRET, i) for i in ids]
    assert len(set(first)) > 2
    assert first != [recovery.decoy_question(b"another secret", i) for i in ids]


async def test_five_wrong_answers_kill_the_reset(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    challenge = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET)
    for _ in range(4):
        with pytest.raises(ResetInvalid):
            await recovery.finish_question(pg, redis, hasher, challenge.reset_id, "错", NEW_PASSWORD)
    with pytest.raises(AttemptsExhausted):
        await recovery.finish_question(pg, redis, hasher, challenge.reset_id, "错", NEW_PASSWORD)
    with pytest.raises(ResetInvalid):
        await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, NEW_PASSWORD)
    assert await password_is(pg, hasher, me.id, OLD_PASSWORD)


async def test_fifth_attempt_can_still_be_right(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    challenge = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET)
    for _ in range(4):
        with pytest.raises(ResetInvalid):
            await recovery.finish_question(pg, redis, hasher, challenge.reset_id, "错", NEW_PASSWORD)
    assert await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, NEW_PASSWORD) == me.id


async def test_weak_password_is_rejected_and_the_reset_stays_usable(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    challenge = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET)

    for weak, reason in [("short", "too_short"), (f"X{me.username}1!", "contains_username")] * 3:
        with pytest.raises(PasswordRejected) as caught:
            await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, weak)
        assert caught.value.reason == reason

    # Six refusals, yet attempts were given back: the right answer still works.
    assert await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, NEW_PASSWORD) == me.id
    assert await password_is(pg, hasher, me.id, NEW_PASSWORD)


async def test_reset_expires_and_malformed_ids_are_invalid(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    short = RecoverySettings(reset_ttl_s=1)
    challenge = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET, settings=short)
    await asyncio.sleep(1.1)
    for reset_id in (challenge.reset_id, "", "x" * 43 + "!", "A" * 43):
        with pytest.raises(ResetInvalid):
            await recovery.finish_question(pg, redis, hasher, reset_id, ANSWER, NEW_PASSWORD)
    assert await password_is(pg, hasher, me.id, OLD_PASSWORD)


async def test_credential_cache_gets_the_new_hash(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    from core import candidates

    me = await make_candidate(pg, hasher)
    cached = await candidates.credentials(redis, pg, me.username)  # fills the cache with the old hash
    assert cached is not None and await hasher.verify(cached.password_hash, OLD_PASSWORD)

    challenge = await recovery.start_question(pg, redis, me.name, me.id_number, secret=SECRET)
    await recovery.finish_question(pg, redis, hasher, challenge.reset_id, ANSWER, NEW_PASSWORD)

    cached = await candidates.credentials(redis, pg, me.username)
    assert cached is not None and await hasher.verify(cached.password_hash, NEW_PASSWORD)


# -- by SMS code -------------------------------------------------------------------------------------


async def test_sms_flow_end_to_end(pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher) -> None:
    me = await make_candidate(pg, hasher)
    session = await sessions.create(redis, me.id, now=utcnow())

    assert await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET) is None

    [message] = await sms.outbox(pg, phone=me.phone)
    assert message.template == recovery.SMS_TEMPLATE and message.sent_at is None
    code = await latest_code(pg, me.phone)
    assert code is not None
    assert message.body == f"【考试报名】您的验证码为{code}，5分钟内有效。如非本人操作，请忽略。"
    # Redis has a keyed hash of the code, never the code.
    record = await redis.hgetall(recovery.code_key(me.phone))
    assert code.encode() not in b"".join(record.values())
    assert 290 <= await redis.ttl(recovery.code_key(me.phone)) <= 300

    done = await recovery.confirm_sms(pg, redis, hasher, me.phone, code, NEW_PASSWORD, secret=SECRET)

    assert done == me.id
    assert await password_is(pg, hasher, me.id, NEW_PASSWORD)
    assert await sessions.resolve(redis, session.token) is None
    with pytest.raises(CodeInvalid):  # consumed
        await recovery.confirm_sms(pg, redis, hasher, me.phone, code, "Other-Passw0rd", secret=SECRET)


async def test_sms_for_unknown_pairs_sends_nothing_and_looks_the_same(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    other = await make_candidate(pg, hasher)
    third = await make_candidate(pg, hasher)
    now = utcnow()
    stranger_phone = random_phone()
    cases = [
        (me.name, me.id_number, me.phone),  # matches: sends
        ("王五", make_resident_id("370112", date(1991, 1, 1), 7), stranger_phone),  # nobody
        ("王五", me.id_number, other.phone),  # wrong name
        (me.name, me.id_number, third.phone),  # someone else's phone
    ]

    first = [await outcome(recovery.start_sms(pg, redis, *case, now=now, secret=SECRET)) for case in cases]
    assert first == [None] * 4
    # The throttle counts every request the same way, matching or not.
    later = now + timedelta(seconds=10)
    retries = []
    for case in cases:
        with pytest.raises(SendThrottled) as caught:
            await recovery.start_sms(pg, redis, *case, now=later, secret=SECRET)
        retries.append(caught.value.retry_after_s)
    assert retries == [50] * 4

    assert len(await sms.outbox(pg, phone=me.phone)) == 1
    for phone in (other.phone, third.phone, stranger_phone):
        assert await sms.outbox(pg, phone=phone) == []
    # Nothing stored for the phones that did not match, and other's phone has no code to guess.
    assert await redis.exists(*(recovery.code_key(p) for p in (other.phone, third.phone, stranger_phone))) == 0
    with pytest.raises(CodeInvalid):
        await recovery.confirm_sms(pg, redis, hasher, other.phone, "000000", NEW_PASSWORD, secret=SECRET)


async def test_send_limits_per_phone(pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher) -> None:
    me = await make_candidate(pg, hasher)
    t0 = utcnow()

    async def send(after_s: float) -> Any:
        moment = t0 + timedelta(seconds=after_s)
        return await outcome(recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=moment, secret=SECRET))

    assert await send(0) is None
    with pytest.raises(SendThrottled) as caught:
        await recovery.start_sms(
            pg, redis, me.name, me.id_number, me.phone, now=t0 + timedelta(seconds=30.5), secret=SECRET
        )
    assert caught.value.retry_after_s == 30  # 29.5 s, rounded up
    assert [await send(s) for s in (60, 120, 180, 240)] == [None] * 4
    assert await send(300) is SendThrottled  # six in an hour is one too many
    with pytest.raises(SendThrottled) as caught:
        await recovery.start_sms(
            pg, redis, me.name, me.id_number, me.phone, now=t0 + timedelta(seconds=1000), secret=SECRET
        )
    assert caught.value.retry_after_s == 2600  # until the first send leaves the hour
    assert await send(3600) is None
    assert len(await sms.outbox(pg, phone=me.phone)) == 6


async def test_a_new_code_replaces_the_old_one(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    t0 = utcnow()
    await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=t0, secret=SECRET)
    old = await latest_code(pg, me.phone)
    await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=t0 + timedelta(seconds=61), secret=SECRET)
    new = await latest_code(pg, me.phone)
    assert old is not None and new is not None

    if old != new:
        with pytest.raises(CodeInvalid):
            await recovery.confirm_sms(pg, redis, hasher, me.phone, old, NEW_PASSWORD, secret=SECRET)
    assert await recovery.confirm_sms(pg, redis, hasher, me.phone, new, NEW_PASSWORD, secret=SECRET) == me.id


async def test_five_wrong_codes_kill_the_code(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET)
    code = await latest_code(pg, me.phone)
    assert code is not None
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for _ in range(5):
        with pytest.raises(CodeInvalid):
            await recovery.confirm_sms(pg, redis, hasher, me.phone, wrong, NEW_PASSWORD, secret=SECRET)
    assert await redis.exists(recovery.code_key(me.phone)) == 0
    with pytest.raises(CodeInvalid):
        await recovery.confirm_sms(pg, redis, hasher, me.phone, code, NEW_PASSWORD, secret=SECRET)
    assert await password_is(pg, hasher, me.id, OLD_PASSWORD)


async def test_wrong_guesses_at_once_spend_the_budget_exactly(
    pool: asyncpg.Pool, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pool, hasher)
    await recovery.start_sms(pool, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET)
    code = await latest_code(pool, me.phone)
    assert code is not None
    guesses = [f"{n:06d}" for n in range(20) if f"{n:06d}" != code][:12]

    results = await asyncio.gather(
        *(
            outcome(recovery.confirm_sms(pool, redis, hasher, me.phone, g, NEW_PASSWORD, secret=SECRET))
            for g in guesses
        )
    )
    assert results == [CodeInvalid] * 12
    with pytest.raises(CodeInvalid):  # twelve at once still count as more than five
        await recovery.confirm_sms(pool, redis, hasher, me.phone, code, NEW_PASSWORD, secret=SECRET)


async def test_sms_code_expires(pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher) -> None:
    me = await make_candidate(pg, hasher)
    short = RecoverySettings(code_ttl_s=1)
    await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET, settings=short)
    code = await latest_code(pg, me.phone)
    assert code is not None
    await asyncio.sleep(1.1)
    with pytest.raises(CodeInvalid):
        await recovery.confirm_sms(pg, redis, hasher, me.phone, code, NEW_PASSWORD, secret=SECRET)


@pytest.mark.parametrize(
    ("phone", "code"),
    [("12345", "123456"), ("13800000000", "12345"), ("13800000000", "１２３４５６"), ("13800000000", "12345a")],
)
async def test_malformed_phone_or_code_is_invalid(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher, phone: str, code: str
) -> None:
    with pytest.raises(CodeInvalid):
        await recovery.confirm_sms(pg, redis, hasher, phone, code, NEW_PASSWORD, secret=SECRET)


async def test_sms_weak_password_keeps_the_code(
    pg: asyncpg.Connection, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pg, hasher)
    await recovery.start_sms(pg, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET)
    code = await latest_code(pg, me.phone)
    assert code is not None
    with pytest.raises(PasswordRejected) as caught:
        await recovery.confirm_sms(pg, redis, hasher, me.phone, code, f"Ab!{me.id_number}", secret=SECRET)
    assert caught.value.reason == "contains_id_number"
    assert await recovery.confirm_sms(pg, redis, hasher, me.phone, code, NEW_PASSWORD, secret=SECRET) == me.id


async def test_same_code_confirmed_twice_at_once_succeeds_once(
    pool: asyncpg.Pool, redis_url: str, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    from core.redis import AutoPipeline

    me = await make_candidate(pool, hasher)
    await recovery.start_sms(pool, redis, me.name, me.id_number, me.phone, now=utcnow(), secret=SECRET)
    code = await latest_code(pool, me.phone)
    assert code is not None
    pipeline = await AutoPipeline.connect(redis_url)
    try:
        results = await asyncio.gather(
            outcome(recovery.confirm_sms(pool, pipeline, hasher, me.phone, code, "First-Passw0rd", secret=SECRET)),
            outcome(recovery.confirm_sms(pool, redis, hasher, me.phone, code, "Second-Passw0rd", secret=SECRET)),
        )
    finally:
        await pipeline.close()

    assert sorted(map(str, results)) == sorted([str(me.id), str(CodeInvalid)])
    winner = "First-Passw0rd" if results[0] == me.id else "Second-Passw0rd"
    assert await password_is(pool, hasher, me.id, winner)


async def test_same_reset_finished_twice_at_once_succeeds_once(
    pool: asyncpg.Pool, redis: aioredis.Redis, hasher: PasswordHasher
) -> None:
    me = await make_candidate(pool, hasher)
    challenge = await recovery.start_question(pool, redis, me.name, me.id_number, secret=SECRET)
    results = await asyncio.gather(
        *(
            outcome(recovery.finish_question(pool, redis, hasher, challenge.reset_id, ANSWER, f"Pass-{n}-w0rd"))
            for n in range(3)
        )
    )
    assert sorted(results, key=str) == sorted([me.id, ResetInvalid, ResetInvalid], key=str)
    winner = results.index(me.id)
    assert await password_is(pool, hasher, me.id, f"Pass-{winner}-w0rd")
