"""Times: stored in UTC, shown to candidates in Asia/Shanghai."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso_local(moment: datetime) -> str:
    """ISO 8601 with the +08:00 offset candidates see."""
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")
