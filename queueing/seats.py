"""Seat holds as other packages use them: keep a paid registration's seat, free a lapsed one.

``HoldSeats`` satisfies ``payments.seats.Seats`` structurally, so neither package imports the
other; the gateway (or the worker) builds it over the Redis client and hands it to payments.
"""

from __future__ import annotations

from core.scripts import ScriptClient
from queueing import holds

__all__ = ["HoldSeats"]


class HoldSeats:
    """The registrations' seat holds in Redis (``queueing.holds``), for settling and reconciling payments."""

    __slots__ = ("redis", "replication")

    def __init__(self, redis: ScriptClient, replication: holds.Replication | None = None) -> None:
        self.redis = redis
        self.replication = replication  # a paid seat is kept once this many replicas have it

    async def keep(self, exam_id: int, registration_id: int, site_id: int | None) -> int | None:
        """Make the registration's seat permanent (its held site, else ``site_id``): that site; None if it is full.

        A hold that lapsed is taken again when its site still has a seat.
        """
        held, _ = await holds.current_hold(self.redis, exam_id, registration_id)
        wanted = held if held is not None else site_id
        if wanted is None:
            return None
        try:
            await holds.make_permanent(self.redis, exam_id, registration_id, wanted, current_site=held,
                                       replication=self.replication)
        except (holds.SiteFull, holds.SeatLocked):
            return None
        return wanted

    async def release_lapsed(self, exam_id: int, registration_id: int, *, now_ms: int | None = None) -> bool:
        """Release the registration's hold if it has expired by ``now_ms`` (default now); whether a seat was freed."""
        site, expires_at_ms = await holds.current_hold(self.redis, exam_id, registration_id)
        now_ms = holds.clock_ms() if now_ms is None else now_ms
        if site is None or expires_at_ms is None or expires_at_ms > now_ms:
            return False  # no hold, a permanent one, or one refreshed beyond the order
        released = await holds.release_seat(self.redis, exam_id, registration_id, current_site=site)
        return released.site_id is not None
