"""The seat operations payments needs, as a protocol that queueing's holds satisfy (``queueing.seats``).

Settling a payment makes the candidate's seat permanent, and the order reconciler frees the
hold of an order closed unpaid. Seat holds are queueing's; payments names only this protocol
and never imports queueing, and whoever builds the payments objects (the gateway, above both)
hands in ``queueing.seats.HoldSeats``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Seats"]


class Seats(Protocol):
    """Seat holds as payments uses them."""

    async def keep(self, exam_id: int, registration_id: int, site_id: int | None) -> int | None:
        """Make the registration's seat permanent (its held site, else ``site_id``): that site; None if it is full."""

    async def release_lapsed(self, exam_id: int, registration_id: int) -> bool:
        """Release the registration's hold if it has expired; whether a seat was freed."""
