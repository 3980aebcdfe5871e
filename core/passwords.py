"""Password and security-answer hashing (argon2id) in a bounded thread pool, and the password policy.

argon2 releases the GIL while it hashes, so a thread pool gives real parallelism without
blocking the event loop. The pool is bounded: when ``threads`` jobs run and ``max_queue``
more wait, the next caller gets ``PoolFull`` at once (login answers 503 with Retry-After)
instead of joining a queue that only grows during a login storm.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import CoreError

__all__ = [
    "HasherStats", "PasswordHasher", "PasswordSettings", "PoolFull", "check_policy", "normalise_answer",
    "PASSWORD_MIN_CHARS", "PASSWORD_MAX_CHARS",
]  # fmt: skip

T = TypeVar("T")

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 32
# Visible ASCII (0x21–0x7E). Spaces are refused: clients disagree on trimming them, which locks people out.
_ALLOWED = frozenset(chr(c) for c in range(0x21, 0x7F))
# Weight of the newest sample in the moving mean of verify time.
_EWMA_ALPHA = 0.1


@dataclass(frozen=True)
class PasswordSettings:
    """argon2id parameters (OWASP's 19 MiB, t=2, p=1 by default) and the size of the hashing pool."""

    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16
    threads: int = 2  # hashing threads per process
    max_queue: int = 64  # jobs allowed to wait behind the running ones; beyond it, PoolFull
    # A job that would finish later than this (queue ahead × measured verify time) is refused too:
    # a count alone admits logins that wait seconds when verifies slow down. 0 = no time bound.
    max_wait_ms: int = 600
    # Hashing threads run at this nice value so the event loop sharing their core preempts them:
    # measured, a refused login's 503 p99 went from 12-20 ms to under 10 ms at 3× overload.
    thread_nice: int = 10

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.max_queue < 0 or self.max_wait_ms < 0:
            raise ValueError("max_queue and max_wait_ms must not be negative")

    @property
    def capacity(self) -> int:
        """Jobs the pool accepts at once: running plus waiting."""
        return self.threads + self.max_queue


class PoolFull(CoreError):
    """The hashing pool is saturated; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password hashing pool is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class HasherStats(NamedTuple):
    """Figures for metrics: jobs in the pool, how many it takes, refusals so far, mean verify time."""

    in_flight: int
    capacity: int
    threads: int
    rejected: int
    verified: int
    mean_verify_ms: float


def normalise_answer(answer: str) -> str:
    """A security answer as it is hashed: NFKC (full-width letters), whitespace collapsed, casefolded."""
    return " ".join(unicodedata.normalize("NFKC", answer).split()).casefold()


def _lower_priority(nice: int) -> None:
    """Pool thread initializer: lower this thread's scheduling priority (Linux: nice is per thread)."""
    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass  # not permitted here: run at normal priority


class PasswordHasher:
    """argon2id hashing and verification on a bounded pool of threads; refuses at once when full."""

    def __init__(self, settings: PasswordSettings | None = None) -> None:
        self.settings = s = settings or PasswordSettings()
        self._argon = argon2.PasswordHasher(
            time_cost=s.time_cost,
            memory_cost=s.memory_kib,
            parallelism=s.parallelism,
            hash_len=s.hash_len,
            salt_len=s.salt_len,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=s.threads, thread_name_prefix="argon2",
                                            initializer=_lower_priority, initargs=(s.thread_nice,))
        self._lock = threading.Lock()  # guards the counters: jobs finish on the pool's threads
        self._in_flight = 0
        self._rejected = 0
        self._verified = 0
        # Unknown users and unreadable hashes are verified against this, so they cost what a wrong
        # password costs. Making it (once, at start-up) also gives the first estimate of verify time.
        started = time.perf_counter()
        self._dummy_hash = self._argon.hash(secrets.token_urlsafe(16))
        self._mean_verify_s = time.perf_counter() - started

    # -- public API ---------------------------------------------------------------------------------

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored_hash``; None or an unreadable hash costs the same and is False."""
        return await self._submit(self._verify_sync, stored_hash, password)

    async def hash(self, password: str) -> str:
        """A new argon2id hash of ``password`` with the current parameters."""
        return await self._submit(self._argon.hash, password)

    async def hash_answer(self, answer: str) -> str:
        """A hash of the normalised security answer."""
        return await self.hash(normalise_answer(answer))

    async def verify_answer(self, stored_hash: str | None, answer: str) -> bool:
        """True when the normalised ``answer`` matches the stored answer hash."""
        return await self.verify(stored_hash, normalise_answer(answer))

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters (or cannot be read) and should be replaced."""
        try:
            return self._argon.check_needs_rehash(stored_hash)
        except (InvalidHashError, VerificationError, ValueError):
            return True

    def stats(self) -> HasherStats:
        """Current figures for metrics."""
        with self._lock:
            return HasherStats(
                self._in_flight,
                self.settings.capacity,
                self.settings.threads,
                self._rejected,
                self._verified,
                self._mean_verify_s * 1000,
            )

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting in the pool."""
        return self._in_flight

    @property
    def rejected(self) -> int:
        """Jobs refused with PoolFull since start."""
        return self._rejected

    @property
    def mean_verify_ms(self) -> float:
        """Moving mean of the time one verify takes on a pool thread."""
        return self._mean_verify_s * 1000

    def check_capacity(self) -> None:
        """Raise PoolFull now if a job submitted now would be refused: callers refuse before any I/O."""
        with self._lock:
            if self._full_locked():
                self._rejected += 1
                raise PoolFull(self._retry_after_locked())

    def retry_after_s(self) -> int:
        """Whole seconds until the jobs now in the pool are done, at least 1."""
        with self._lock:
            return self._retry_after_locked()

    def close(self) -> None:
        """Drop waiting jobs and wait for the running ones (at most one verify per thread)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- internals ----------------------------------------------------------------------------------

    def _full_locked(self) -> bool:
        s = self.settings
        if self._in_flight >= s.capacity:
            return True
        # When this job would finish, were it accepted now; a free thread always takes it.
        return (s.max_wait_ms > 0 and self._in_flight >= s.threads
                and (self._in_flight + 1) * self._mean_verify_s / s.threads * 1000 > s.max_wait_ms)

    def _retry_after_locked(self) -> int:
        s = self.settings
        return max(1, math.ceil(self._in_flight * self._mean_verify_s / s.threads))

    async def _submit(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._full_locked():
                self._rejected += 1
                raise PoolFull(self._retry_after_locked())
            self._in_flight += 1
        try:
            job = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        # Counted down when the job ends on its thread (or is cancelled before it starts), not when
        # the caller stops waiting: a cancelled login still occupies a thread until argon2 returns.
        job.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(job)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _verify_sync(self, stored_hash: str | None, password: str) -> bool:
        started = time.perf_counter()
        try:
            if stored_hash is None:
                self._dummy(password)
                return False
            try:
                return self._argon.verify(stored_hash, password)
            except VerifyMismatchError:
                return False
            except (InvalidHashError, VerificationError, ValueError):
                # Unreadable record: fail, but only after the time a real verify takes.
                self._dummy(password)
                return False
        finally:
            elapsed_s = time.perf_counter() - started
            with self._lock:
                self._verified += 1
                self._mean_verify_s += _EWMA_ALPHA * (elapsed_s - self._mean_verify_s)

    def _dummy(self, password: str) -> None:
        try:
            self._argon.verify(self._dummy_hash, password)
        except VerificationError:
            pass


def check_policy(password: str, *, username: str | None = None, id_number: str | None = None) -> str | None:
    """Why ``password`` is refused (a snake_case code), or None when it is acceptable.

    8–32 visible ASCII characters, at least three of upper case, lower case, digits and symbols,
    and containing neither the username nor the id number (case-insensitively).
    """
    if len(password) < PASSWORD_MIN_CHARS:
        return "too_short"
    if len(password) > PASSWORD_MAX_CHARS:
        return "too_long"
    if not _ALLOWED.issuperset(password):
        return "invalid_characters"
    classes = (
        any("A" <= c <= "Z" for c in password)
        + any("a" <= c <= "z" for c in password)
        + any("0" <= c <= "9" for c in password)
        + any(not c.isalnum() for c in password)
    )
    if classes < 3:
        return "too_few_character_classes"
    lowered = password.lower()
    if username and username.lower() in lowered:
        return "contains_username"
    if id_number and id_number.lower() in lowered:
        return "contains_id_number"
    return None
