"""A circuit breaker in front of Redis: stop calling it for a while after repeated failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class Breaker:
    """Opens after ``failures`` consecutive failures, stays open ``cooldown_s``, then lets one probe through.

    A successful probe (or any success) closes it; a failed probe opens it for another
    cooldown. A probe that never reports back (its caller was cancelled) is replaced by
    a new one after a cooldown, so the breaker cannot stay half-open forever.
    """

    __slots__ = ("failures", "cooldown_s", "opened", "_clock", "_consecutive", "_opened_at", "_probe_at")

    def __init__(
        self, failures: int = 5, cooldown_s: float = 2.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be at least 1 and cooldown_s positive")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.opened = 0
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """``closed`` (calls go through), ``open`` (none do) or ``half_open`` (a probe may)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """True when the caller may call Redis now; in half-open state only the probe may."""
        opened_at = self._opened_at
        if opened_at is None:
            return True
        now = self._clock()
        if now - opened_at < self.cooldown_s:
            return False
        if self._probe_at is not None and now - self._probe_at < self.cooldown_s:
            return False
        self._probe_at = now
        return True

    def record_success(self) -> None:
        """Redis answered: close."""
        self._consecutive = 0
        self._opened_at = None
        self._probe_at = None

    def record_failure(self) -> None:
        """Redis failed or timed out: count it, open at the threshold, reopen after a failed probe."""
        if self._opened_at is not None:
            self._opened_at = self._clock()
            self._probe_at = None
            return
        self._consecutive += 1
        if self._consecutive >= self.failures:
            self._opened_at = self._clock()
            self._probe_at = None
            self.opened += 1

    def abandon(self) -> None:
        """The call allowed through was cancelled before Redis answered: let another probe go."""
        self._probe_at = None
