"""Password recovery: by security question, or by a code sent through the SMS outbox.

Neither flow confirms that a name goes with an id number. The question shown depends on the
id number alone: a registered one shows its account's question whatever the name, an unknown
one a decoy (chosen from the id number with an HMAC, so asking again shows the same one).
A reset started with the wrong name keeps the account's answer hash but no candidate: its
answers cost a real argon2 verify, spend attempts and fail exactly like wrong answers, and
the right answer changes nothing. An unknown id number's reset runs a dummy verify and fails
alike. An SMS reset that does not match (name, id number and phone) sends nothing but passes
the same throttle and makes the same round trips.

Keys (each script touches one key):
    eg:recovery:question:<sha256 of reset id>   hash: left, candidate, answer (argon2 hash) — TTL reset_ttl_s
    eg:{sms:<phone>}:reset_code                 hash: left, candidate, code (HMAC) — TTL code_ttl_s
    eg:{sms:<phone>}:sent                       sorted set: the phone's SMS sends in the window (ms)

Send limits are enforced here (``sms_throttle.lua``, per phone, on the caller's clock), not
left to the gateway: they protect a third party's phone, whoever asks and from wherever.
How often one IP or one id number may *start* a recovery, or guess answers across many reset
ids, is the gateway's rate limiter's job (rules keyed on ip and id_number), behind a captcha.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from core import candidates, phone_codes, sessions, sms
from core.errors import CoreError
from core.identity import normalise_id_number, normalise_name
from core.passwords import PoolFull, check_policy, normalise_answer
from core.phone_codes import CodeInvalid, SendThrottled
from core.scripts import ScriptClient

if TYPE_CHECKING:
    import asyncpg

    from core.passwords import PasswordHasher

__all__ = [
    "AttemptsExhausted", "CodeInvalid", "DECOY_QUESTIONS", "PasswordRejected", "QuestionChallenge",
    "RecoveryError", "RecoverySettings", "ResetInvalid", "SendThrottled", "SMS_TEMPLATE",
    "code_key", "confirm_sms", "decoy_question", "finish_question", "question_key", "sent_key",
    "start_question", "start_sms",
]  # fmt: skip

SMS_TEMPLATE = "password_reset_code"
_RESET_ID = re.compile(r"[A-Za-z0-9_-]{43}").fullmatch  # token_urlsafe(32)

# Decoys are drawn from the questions candidates actually pick, so a decoy looks like any other.
DECOY_QUESTIONS = (
    "您母亲的姓名是？",
    "您父亲的姓名是？",
    "您的出生地是？",
    "您就读的小学名称是？",
    "您最喜欢的老师姓什么？",
    "您配偶的姓名是？",
    "您高中班主任的姓名是？",
    "您的小学班主任姓什么？",
)


# -- errors ------------------------------------------------------------------------------------------


class RecoveryError(CoreError):
    """Base class of the errors of password recovery."""


class ResetInvalid(RecoveryError):
    """Unknown, expired or used reset id, or a wrong answer: one error, so nothing is revealed."""

    def __init__(self) -> None:
        super().__init__("reset invalid or expired, or wrong answer")


class AttemptsExhausted(RecoveryError):
    """The reset id's last attempt was spent on a wrong answer; it is dead, start again."""

    def __init__(self) -> None:
        super().__init__("no attempts left for this reset; start again")


class PasswordRejected(RecoveryError):
    """The secret was right but the new password breaks the policy; ``reason`` is the policy's code."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"new password rejected: {reason}")
        self.reason = reason


# -- settings and results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoverySettings:
    """Lifetimes, attempt budgets and SMS send limits of password recovery."""

    reset_ttl_s: int = 10 * 60
    reset_attempts: int = 5
    code_ttl_s: int = 5 * 60
    code_attempts: int = 5
    sms_min_interval_s: float = 60
    sms_window_s: float = 60 * 60
    sms_max_per_window: int = 5

    def __post_init__(self) -> None:
        if min(self.reset_ttl_s, self.reset_attempts) < 1:
            raise ValueError("recovery lifetimes and attempt budgets must be at least 1")
        self.codes()  # the code settings' own checks

    @classmethod
    def of(cls, codes: phone_codes.CodeSettings) -> RecoverySettings:
        """The default reset lifetimes with ``codes``' SMS code lifetime, tries and per-phone limits."""
        return cls(code_ttl_s=codes.code_ttl_s, code_attempts=codes.code_attempts,
                   sms_min_interval_s=codes.sms_min_interval_s, sms_window_s=codes.sms_window_s,
                   sms_max_per_window=codes.sms_max_per_window)

    def codes(self) -> phone_codes.CodeSettings:
        """The SMS code lifetime, attempts and send limits, as ``core.phone_codes`` takes them."""
        return phone_codes.CodeSettings(self.code_ttl_s, self.code_attempts, self.sms_min_interval_s,
                                        self.sms_window_s, self.sms_max_per_window)


DEFAULT_SETTINGS = RecoverySettings()


class QuestionChallenge(NamedTuple):
    """What ``start_question`` shows: the reset id to finish with and the question to answer."""

    reset_id: str
    question: str


# -- keys and scripts --------------------------------------------------------------------------------


def question_key(reset_id: str) -> str:
    """A question reset: ``eg:recovery:question:<sha256 of the reset id>`` (a dump yields no usable id)."""
    return f"eg:recovery:question:{hashlib.sha256(reset_id.encode()).hexdigest()}"


def code_key(phone: str) -> str:
    """The live SMS reset code of a phone (``core.phone_codes``, purpose ``reset``)."""
    return phone_codes.code_key(phone, "reset")


sent_key = phone_codes.sent_key
_put, _take, _refund = phone_codes.put, phone_codes.take, phone_codes.refund


def decoy_question(secret: bytes, id_number: str) -> str:
    """The question shown for an unknown name/id pair: fixed per id number, unpredictable without ``secret``."""
    digest = hmac.new(secret, normalise_id_number(id_number).encode(), hashlib.sha256).digest()
    return DECOY_QUESTIONS[int.from_bytes(digest[:8], "big") % len(DECOY_QUESTIONS)]


def _same_name(stored: str, given: str) -> bool:
    # Constant time; the stored name is already normalised (registration stores it so).
    return hmac.compare_digest(stored.encode(), normalise_name(given).encode())


async def _change_password(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: ScriptClient,
    hasher: PasswordHasher,
    key: str,
    candidate_id: int,
    new_password: str,
    invalid: type[RecoveryError | CodeInvalid],
) -> None:
    """Policy, hash, consume the record (exactly one caller wins), store the hash, end every session."""
    row = await pg.fetchrow("SELECT username, id_number FROM candidates WHERE id = $1", candidate_id)
    if row is None:  # the account went away since the reset started
        raise invalid()
    reason = check_policy(new_password, username=row["username"], id_number=row["id_number"])
    if reason is not None:
        await _refund(redis, key)
        raise PasswordRejected(reason)
    try:
        new_hash = await hasher.hash(new_password)
    except PoolFull:
        await _refund(redis, key)
        raise
    # Consumed only now, so a policy refusal or a full pool leaves the reset usable; DEL
    # answers 1 to exactly one of several concurrent callers holding the same secret.
    if not await redis.delete(key):
        raise invalid()
    try:
        await candidates.update_password(pg, redis, candidate_id, new_hash)  # type: ignore[arg-type]
    finally:
        # Even when the credential cache could not be refreshed: the password did change. The epoch
        # first, so a sign-in that verified the old password either sees it or is indexed already.
        await sessions.bump_epoch(redis, row["username"])
        await sessions.revoke_all(redis, candidate_id)


# -- by security question ----------------------------------------------------------------------------


async def start_question(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: ScriptClient,
    name: str,
    id_number: str,
    *,
    secret: bytes,
    settings: RecoverySettings = DEFAULT_SETTINGS,
) -> QuestionChallenge:
    """Open a question reset; the question depends on the id number alone, and only the right name can finish it.

    A registered id number shows its account's question whatever the name; with the wrong name
    the reset holds no candidate, so even the right answer fails like a wrong one. An unknown id
    number gets a decoy question that behaves alike.
    """
    found = await candidates.find_by_id_number(pg, id_number)
    reset_id = secrets.token_urlsafe(32)
    if found is None:
        question = decoy_question(secret, id_number)
        fields = {"candidate": "0", "answer": ""}
    else:
        question = found.security_question
        candidate = found.candidate_id if _same_name(found.name, name) else 0
        # The real hash either way: a wrong name's answers cost the same verify as the owner's.
        fields = {"candidate": str(candidate), "answer": found.security_answer_hash}
    await _put(redis, question_key(reset_id), settings.reset_ttl_s, settings.reset_attempts, fields)
    return QuestionChallenge(reset_id, question)


async def finish_question(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: ScriptClient,
    hasher: PasswordHasher,
    reset_id: str,
    answer: str,
    new_password: str,
) -> int:
    """Check the answer and set the new password, ending every session; the candidate's id.

    Raises ``ResetInvalid`` (unknown/expired/used reset id or wrong answer), ``AttemptsExhausted``
    (the last attempt was wrong), ``PasswordRejected`` (right answer, bad password: the reset stays
    usable) or ``PoolFull`` (try again; the attempt is given back).
    """
    if not isinstance(reset_id, str) or _RESET_ID(reset_id) is None:
        raise ResetInvalid()
    key = question_key(reset_id)
    taken = await _take(redis, key, ("candidate", "answer"))
    if taken is None:
        raise ResetInvalid()
    left, (candidate, answer_hash) = taken
    try:
        # A decoy has no hash: verify(None, …) costs a real verify and is False.
        ok = await hasher.verify(answer_hash or None, normalise_answer(answer))
    except PoolFull:
        await _refund(redis, key)
        raise
    candidate_id = int(candidate)
    if not ok or candidate_id == 0:
        if left == 0:
            await redis.delete(key)
            raise AttemptsExhausted()
        raise ResetInvalid()
    await _change_password(pg, redis, hasher, key, candidate_id, new_password, ResetInvalid)
    return candidate_id


# -- by SMS code -------------------------------------------------------------------------------------


async def start_sms(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: ScriptClient,
    name: str,
    id_number: str,
    phone: str,
    *,
    now: datetime,
    secret: bytes,
    settings: RecoverySettings = DEFAULT_SETTINGS,
) -> None:
    """Send a reset code to ``phone`` if name, id number and phone belong to one account; else send nothing.

    The caller answers 202 either way. Raises ``SendThrottled`` when the phone had a code within
    ``sms_min_interval_s`` or ``sms_max_per_window`` in ``sms_window_s`` — counted for every request,
    matching or not, so the throttle reveals nothing. A new code replaces the phone's previous one.
    """
    valid = phone_codes.valid_phone(phone)
    if valid is None:
        return  # no account has such a phone (the column's CHECK); the gateway answers 422 before this
    phone = valid
    await phone_codes.throttle(redis, phone, now=now, settings=settings.codes())
    found = await candidates.find_by_id_number(pg, id_number)
    if found is not None and _same_name(found.name, name) and hmac.compare_digest(found.phone, phone):
        code = phone_codes.new_code()
        fields = {"candidate": str(found.candidate_id), "code": phone_codes.digest(secret, phone, code)}
        body = sms.render(SMS_TEMPLATE, code=code, minutes=math.ceil(settings.code_ttl_s / 60))
        await asyncio.gather(
            _put(redis, code_key(phone), settings.code_ttl_s, settings.code_attempts, fields),
            sms.enqueue(pg, phone, SMS_TEMPLATE, body),
        )
    else:
        # The same round trips, storing and sending nothing (a stored decoy would replace the
        # live code of whoever owns this phone). What remains is one commit, well inside network jitter.
        await asyncio.gather(redis.hget(code_key(phone), "left"), pg.execute("SELECT 1"))


async def confirm_sms(
    pg: asyncpg.Connection | asyncpg.Pool,
    redis: ScriptClient,
    hasher: PasswordHasher,
    phone: str,
    code: str,
    new_password: str,
    *,
    secret: bytes,
) -> int:
    """Check the phone's code and set the new password, ending every session; the candidate's id.

    Raises ``CodeInvalid`` (wrong, expired, used, or after ``code_attempts`` tries), ``PasswordRejected``
    (right code, bad password: the code stays usable) or ``PoolFull`` (the attempt is given back).
    """
    taken = await phone_codes.check(redis, phone, "reset", code, secret=secret)
    await _change_password(pg, redis, hasher, code_key(taken.phone), taken.candidate_id, new_password, CodeInvalid)
    return taken.candidate_id
