"""The stored-token cache on its own (the lookup stubbed with a coroutine, no store): one lookup shared by
concurrent callers, answers kept for the cache time, expiry checked on every use, forget() beating a lookup
already under way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import operators
from core.operators import Operator, Resolved
from gateway.adminauth import OperatorTokens

pytestmark = pytest.mark.unit

OPS = Operator("ops", "operator", None, 7)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolved(expires_in_s: float = 3600) -> Resolved:
    now = datetime.now(UTC)
    return Resolved(OPS, now + timedelta(seconds=expires_in_s), last_used_at=now)  # used just now: no write


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"calls": 0, "answer": resolved(), "gate": None}

    async def look_up(pool: Any, digest: bytes) -> Resolved | None:
        state["calls"] += 1
        if state["gate"] is not None:
            await state["gate"].wait()
        answer: Resolved | None = state["answer"]
        return answer

    monkeypatch.setattr(operators, "resolve", look_up)
    return state


async def test_answers_are_kept_for_the_cache_time(lookups: dict[str, Any]) -> None:
    clock = Clock()
    tokens = OperatorTokens(5.0, clock=clock)
    assert await tokens.resolve(None, b"d") == OPS  # type: ignore[arg-type]
    clock.now += 4.9
    assert await tokens.resolve(None, b"d") == OPS  # type: ignore[arg-type]
    assert lookups["calls"] == 1
    lookups["answer"] = None  # revoked meanwhile
    clock.now += 0.2
    assert await tokens.resolve(None, b"d") is None  # type: ignore[arg-type]
    assert lookups["calls"] == 2


async def test_concurrent_callers_share_one_lookup(lookups: dict[str, Any]) -> None:
    lookups["gate"] = asyncio.Event()
    tokens = OperatorTokens(5.0)
    waiting = [asyncio.ensure_future(tokens.resolve(None, b"d")) for _ in range(50)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    lookups["gate"].set()
    assert await asyncio.gather(*waiting) == [OPS] * 50
    assert lookups["calls"] == 1


async def test_expiry_is_checked_on_every_use(lookups: dict[str, Any]) -> None:
    lookups["answer"] = resolved(expires_in_s=0.05)
    tokens = OperatorTokens(60.0)
    assert await tokens.resolve(None, b"d") == OPS  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert await tokens.resolve(None, b"d") is None  # type: ignore[arg-type]
    assert lookups["calls"] == 1  # still cached, yet no longer trusted


async def test_no_cache_time_looks_up_every_use(lookups: dict[str, Any]) -> None:
    tokens = OperatorTokens(0)
    for _ in range(3):
        assert await tokens.resolve(None, b"d") == OPS  # type: ignore[arg-type]
    assert lookups["calls"] == 3


async def test_a_lookup_begun_before_forget_is_not_kept(lookups: dict[str, Any]) -> None:
    lookups["gate"] = asyncio.Event()
    tokens = OperatorTokens(60.0)
    early = asyncio.ensure_future(tokens.resolve(None, b"d"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    tokens.forget()  # e.g. this process revoked the token while the lookup was on its way
    lookups["gate"].set()
    assert await early == OPS
    lookups["answer"] = None
    assert await tokens.resolve(None, b"d") is None  # type: ignore[arg-type]
    assert lookups["calls"] == 2
