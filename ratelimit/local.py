"""In-process GCRA, the fallback for rules with ``on_redis_error: local``.

Same arithmetic as ``gcra.lua`` (integer microseconds, all-or-nothing across the rules
of one request) on a process-local clock. Each gateway process holds its own share of
the rule: rate and burst divided by the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

from ratelimit.rules import Rule


class LocalResult(NamedTuple):
    """One rule's answer: its own verdict, quota left after the request, seconds to retry or to full."""

    allowed: bool
    remaining: int
    reset_s: float


class LocalDecision(NamedTuple):
    """The answer for all the rules of one request."""

    allowed: bool
    retry_after_s: float
    results: tuple[LocalResult, ...]


def emission_us(emission_s: float) -> int:
    """The emission interval in whole microseconds, rounded up (never faster than the rule)."""
    # round() first so float noise (0.1 s -> 100000.00000000001 µs) does not add a microsecond.
    return max(1, math.ceil(round(emission_s * 1_000_000, 6)))


class LocalGCRA:
    """GCRA state of one rule for many subjects, bounded to ``max_entries`` subjects."""

    __slots__ = ("emission_us", "tolerance_us", "max_entries", "_tats")

    def __init__(self, emission_s: float, burst: int, *, max_entries: int = 10_000) -> None:
        if emission_s <= 0 or burst < 1 or max_entries < 1:
            raise ValueError("emission_s must be positive, burst and max_entries at least 1")
        self.emission_us = emission_us(emission_s)
        self.tolerance_us = burst * self.emission_us
        self.max_entries = max_entries
        self._tats: dict[str, int] = {}

    @classmethod
    def for_rule(cls, rule: Rule, processes: int, *, max_entries: int = 10_000) -> LocalGCRA:
        """This process's share of ``rule`` when ``processes`` gateway processes split it."""
        processes = max(1, processes)
        # Burst is shared too, but never below the cost, or every request would be refused.
        burst = max(math.ceil(rule.burst / processes), min(rule.cost, rule.burst))
        return cls(rule.emission_interval_s * processes, burst, max_entries=max_entries)

    def __len__(self) -> int:
        return len(self._tats)

    def check(self, subject: str, now_s: float, cost: int = 1) -> LocalResult:
        """Decide (and, if allowed, consume) one request of ``cost`` for ``subject`` at ``now_s``."""
        return decide(((self, subject, cost, True),), now_s).results[0]

    def _store(self, subject: str, tat: int, now_us: int) -> None:
        tats = self._tats
        if subject not in tats and len(tats) >= self.max_entries:
            self._evict(now_us)
        tats[subject] = tat

    def _evict(self, now_us: int) -> None:
        tats = self._tats
        for subject in [s for s, tat in tats.items() if tat <= now_us]:
            del tats[subject]
        if len(tats) >= self.max_entries:
            # Still full of live subjects: forget the oldest quarter (they get a fresh burst).
            for subject in list(islice(tats, max(1, self.max_entries // 4))):
                del tats[subject]


Entry = tuple[LocalGCRA, str, int, bool] | tuple[LocalGCRA, str, int, bool, bool]


def decide(entries: Sequence[Entry], now_s: float) -> LocalDecision:
    """Decide ``(bucket, subject, cost, enforce[, check_only])`` entries together, like ``gcra.lua``."""
    now = int(now_s * 1_000_000)
    staged: list[tuple[int, int, bool]] = []
    denied = False
    retry_us = 0
    for bucket, subject, cost, enforce, *_ in entries:
        tat = bucket._tats.get(subject, now)
        if tat < now:
            tat = now
        new = tat + cost * bucket.emission_us
        allow_at = new - bucket.tolerance_us
        ok = now >= allow_at
        if not ok and enforce:
            denied = True
            retry_us = max(retry_us, allow_at - now)
        staged.append((tat, new, ok))
    results = []
    for (bucket, subject, _, _, *check_only), (tat, new, ok) in zip(entries, staged, strict=True):
        final = tat
        if ok and not denied and not (check_only and check_only[0]):
            final = new
            bucket._store(subject, new, now)
        remaining = max(0, (now - (final - bucket.tolerance_us)) // bucket.emission_us)
        wait_us = final - now if ok else new - bucket.tolerance_us - now
        results.append(LocalResult(ok, remaining, wait_us / 1_000_000))
    return LocalDecision(not denied, retry_us / 1_000_000, tuple(results))
