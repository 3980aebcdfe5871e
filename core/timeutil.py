"""Times: stored in UTC, shown to candidates in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso_local(moment: datetime) -> str:
    """ISO 8601 with the +08:00 offset candidates see."""
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


# Asia/Shanghai has kept +08:00 all year since 1991 (no DST); before that ``iso_local`` asks the zone.
_CST = timezone(timedelta(hours=8))
_FIXED_OFFSET_FROM_MS = 694_195_200_000  # 1992-01-01T00:00:00+08:00


def iso_local_ms(epoch_ms: int) -> str:
    """``iso_local`` of milliseconds since the epoch (sub-second truncated), without building a UTC datetime first."""
    if epoch_ms < _FIXED_OFFSET_FROM_MS:
        return iso_local(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms))
    global _last_formatted
    second = epoch_ms // 1000
    last = _last_formatted
    if last[0] != second:  # hold expiries come in bursts of the same second: format each second once
        last = _last_formatted = (second, datetime.fromtimestamp(second, _CST).isoformat())
    return last[1]


_last_formatted: tuple[int, str] = (-1, "")
