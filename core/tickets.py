"""Admission tickets: one per paid registration, numbered by exam, province, site and sequence.

A ticket number is ``EEEE PP SSSSSS QQQQQ`` without spaces (16 digits): the exam id, the
province code, the site id and the seat's sequence at the site, so it is unique by
construction and tells a proctor where the candidate sits. Sequence ``q`` (from 1) is
room ``(q - 1) // seats_per_room + 1``, seat ``(q - 1) % seats_per_room + 1``.

``allocate`` runs inside the caller's transaction (the payment's): it locks the sites'
rows in id order, so two transactions allocating at one site take turns and never hand
out one seat twice (``admission_tickets_seat_key`` would refuse it anyway).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

from core.db import Conn
from core.errors import CoreError


class SiteOverfull(CoreError):
    """A site has more paid registrations than rooms × seats: its inventory was wrong."""


class Paid(NamedTuple):
    """A registration that has just been paid, with the site its seat is at."""

    registration_id: int
    exam_id: int
    site_id: int


class Ticket(NamedTuple):
    """One allocated ticket."""

    ticket_no: str
    registration_id: int
    site_id: int
    room: int
    seat_no: int


def ticket_number(exam_id: int, province: str, site_id: int, sequence: int) -> str:
    """The ticket number of the ``sequence``-th seat at a site."""
    return f"{exam_id:04d}{province}{site_id:06d}{sequence:05d}"


def room_and_seat(sequence: int, seats_per_room: int) -> tuple[int, int]:
    """(room, seat) of the ``sequence``-th seat (both from 1)."""
    return (sequence - 1) // seats_per_room + 1, (sequence - 1) % seats_per_room + 1


# Two statements on purpose: under READ COMMITTED a statement that waited for a row lock
# re-reads the locked row but not its subqueries, so the last sequence is read afterwards,
# by a statement whose snapshot includes the tickets of whoever held the lock before.
_LOCK_SITES = "SELECT id FROM exam_sites WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
_SITES = """
SELECT s.id, s.province, s.rooms, s.seats_per_room,
       COALESCE((SELECT max((t.room - 1) * s.seats_per_room + t.seat_no)
                   FROM admission_tickets t WHERE t.site_id = s.id), 0) AS last_sequence
  FROM exam_sites s
 WHERE s.id = ANY($1::bigint[])
"""

_INSERT = """
INSERT INTO admission_tickets (ticket_no, registration_id, exam_id, site_id, room, seat_no)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::int[])
ON CONFLICT (registration_id) DO NOTHING
RETURNING registration_id
"""


async def allocate(conn: Conn, paid: Sequence[Paid]) -> list[Ticket]:
    """Tickets for ``paid`` (inside the caller's transaction); registrations that already have one are skipped.

    Raises ``SiteOverfull`` when a site has no seat number left (its inventory was wrong).
    """
    if not paid:
        return []
    existing = {row["registration_id"] for row in await conn.fetch(
        "SELECT registration_id FROM admission_tickets WHERE registration_id = ANY($1::bigint[])",
        [p.registration_id for p in paid])}
    wanted = [p for p in dict.fromkeys(paid) if p.registration_id not in existing]
    if not wanted:
        return []
    site_ids = sorted({p.site_id for p in wanted})
    await conn.execute(_LOCK_SITES, site_ids)
    sites = {row["id"]: row for row in await conn.fetch(_SITES, site_ids)}
    per_site: dict[int, list[Paid]] = defaultdict(list)
    for p in sorted(wanted, key=lambda p: p.registration_id):
        per_site[p.site_id].append(p)
    tickets: list[Ticket] = []
    for site_id, members in per_site.items():
        site = sites.get(site_id)
        if site is None:
            raise SiteOverfull(f"site {site_id} does not exist")
        sequence = site["last_sequence"]
        if sequence + len(members) > site["rooms"] * site["seats_per_room"]:
            raise SiteOverfull(f"site {site_id} has no seat number left for {len(members)} more tickets")
        for p in members:
            sequence += 1
            room, seat = room_and_seat(sequence, site["seats_per_room"])
            tickets.append(Ticket(ticket_number(p.exam_id, site["province"], site_id, sequence),
                                  p.registration_id, site_id, room, seat))
    by_registration = {p.registration_id: p for p in wanted}
    await conn.fetch(
        _INSERT, [t.ticket_no for t in tickets], [t.registration_id for t in tickets],
        [by_registration[t.registration_id].exam_id for t in tickets], [t.site_id for t in tickets],
        [t.room for t in tickets], [t.seat_no for t in tickets])
    return tickets
