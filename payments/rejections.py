"""Notifications that fail verification: a bounded summary recorded now and then, the rest counted.

Anyone can post to the notify routes, as large as the body limit and as often as they like;
storing each rejected body whole grew the ledger by tens of MB/s (measured: 60 KB unsigned
forms, 26 MB/s). What is stored instead is ``summary``: the sender, the body's size and
SHA-256, its first ``PREFIX_BYTES`` and, for WeChat Pay, the signature headers (each capped).
And only the first rejection of each (provider, reason, sender) per interval in a process
gets a row, at most ``max_rows`` rows per interval: the next row of a (provider, reason,
sender) carries how many of them were left out in the interval before (``unrecorded_before``).
Every rejection is counted in the gateway's metrics either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from payments.storable import storable_text

__all__ = ["PREFIX_BYTES", "HEADER_CHARS", "RejectionSampler", "summary"]

PREFIX_BYTES = 512
HEADER_CHARS = 512  # a WeChat Pay RSA-2048 signature is 344 characters

Key = tuple[str, str, str]  # (provider, reason, sender)


def summary(body: bytes, sender: str, *, unrecorded_before: int = 0,
            headers: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """What the ledger keeps of a rejected notification: never more than about 2 KB, whatever was sent."""
    kept: dict[str, Any] = {
        "sender": storable_text(sender),
        "size_bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        # A multi-byte character cut at the end becomes U+FFFD; NUL is escaped like any stored text.
        "prefix": storable_text(body[:PREFIX_BYTES].decode("utf-8", errors="replace")),
        "unrecorded_before": unrecorded_before,
    }
    if headers is not None:
        kept["headers"] = {name: None if value is None else storable_text(value[:HEADER_CHARS])
                           for name, value in headers.items()}
    return kept


class RejectionSampler:
    """Decides which rejections get a ledger row: the first per (provider, reason, sender) per interval."""

    __slots__ = ("interval_s", "max_rows", "_clock", "_window", "_seen", "_before", "unrecorded")

    def __init__(self, interval_s: float, max_rows: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.max_rows = max_rows
        self._clock = clock
        self._window = -1
        self._seen: dict[Key, int] = {}  # this interval: rejections left out after the recorded one
        self._before: dict[Key, int] = {}  # the interval before, for the next row of each key
        self.unrecorded = 0  # rejections left out since start, all keys

    def admit(self, provider: str, reason: str, sender: str) -> int | None:
        """None when this rejection is only counted; else record it, with this many left out before it."""
        window = int(self._clock() // self.interval_s)
        if window != self._window:
            # Only the interval just ended is carried over: memory stays bounded by max_rows keys.
            self._before = self._seen if window == self._window + 1 else {}
            self._seen = {}
            self._window = window
        key = (provider, reason, sender)
        seen = self._seen
        left_out = seen.get(key)
        if left_out is not None or len(seen) >= self.max_rows:
            if left_out is not None:
                seen[key] = left_out + 1
            self.unrecorded += 1
            return None
        seen[key] = 0
        return self._before.pop(key, 0)
