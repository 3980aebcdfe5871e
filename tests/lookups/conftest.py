"""The ticket font every PDF test renders with."""

from __future__ import annotations

import os

import pytest

from gateway.config import Settings

FONT = os.environ.get("EXAMGATE_TICKET_FONT", Settings().ticket_font)


@pytest.fixture(scope="module")
def font_path() -> str:
    """The configured CJK font; the test fails when it is missing."""
    if not os.path.isfile(FONT):
        pytest.fail(f"ticket font {FONT} is missing: run scripts/system-deps.sh (or make test)")
    return FONT
