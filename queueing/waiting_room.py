"""The waiting room of an exam: places, a draw for those who came early, a rate-bound serving counter.

How it works (the scripts are ``room_join.lua``, ``room_status.lua``, ``room_advance.lua``):

- **Joining** is idempotent per candidate: the same ticket and position until the place expires.
  Before the room opens, a new place joins the *draw*: it gets a secret random key, and at the
  opening the draw is frozen, its places taking positions 1..N in the order of their keys, a
  uniformly random permutation that owes nothing to who joined first. Freezing is one HSET done
  by whichever script of the room first runs at or after ``opens_at`` (so exactly once, however
  many processes race) and costs O(1): a drawn place's position is its rank, read when needed,
  rather than N writes that would block Redis for the whole draw. From the opening on, a new place
  takes the next position (N + 1, N + 2, … by ``HINCRBY``: first come, first served).
- **Serving** is the highest position admitted. ``advance`` (the worker calls it for every enabled
  exam, say every 100-1000 ms) moves it on by the admissions owed since its previous call:
  elapsed time × ``admit_per_s`` plus the fraction carried over, so calling it more often or from
  more processes never admits more. Time with nobody waiting is not banked.
- **Expiry.** Every poll (and a repeated join) marks the place seen. A place not seen for longer
  than ``place_ttl_s`` is dead. The exact rule: when the serving counter reaches a place, the
  place is admitted if it was seen within the TTL *at that moment* (and spends one admission),
  otherwise it is marked expired and passed over without spending one. So about ``admit_per_s``
  live candidates are admitted per second and serving moves faster over abandoned stretches. A
  poll of a place that is dead (passed over, or simply not seen within the TTL) marks it expired
  for good and raises ``PlaceExpired``; joining again then gives a new place at the back (a place
  still in the draw before the opening is simply seen again, keeping its draw key).
- **Admission.** The first poll that finds a place admitted records when (``room_admitted``, whole
  seconds); every later poll answers the same ``admitted_at_s``, so the admission token it issues
  expires at the same moment, ``admitted_at_s`` + the admission TTL: polling never renews it. A poll
  after that raises ``AdmissionExpired`` (a ``PlaceExpired``) and gives the place up, so the candidate
  joins again at the back.
- **Forgetting.** A place the counter has passed is kept ``keep_for(place_ttl_s, admission_ttl_s)``
  (two place TTLs plus the admission TTL), then ``advance`` deletes its ticket record, admission,
  position and candidate entry (when that still names it): a room stays as large as its queue
  plus the last few minutes, however many candidates come back after their place lapsed. The
  draw itself is kept (drawn positions are ranks in it): it holds one entry per early candidate.
- **Numbers.** ``ahead`` counts positions between serving and the place (dead ones included, so
  it is an upper bound), and the ETA divides it by the *measured* rate at which serving passes
  positions (an exponential average over ``RATE_WINDOW_S``, dead places included, so the two
  agree); before a first measurement it falls back to ``admit_per_s``. ``poll_after_s`` is a tenth
  of the ETA clamped to 2..60 s and never more than a third of the place TTL, so a candidate who
  follows it never expires and far-back candidates poll rarely.

Clocks: every function takes ``now_s``; ``None`` (the default, and what the gateway should use)
means the Redis server's clock, one clock for every process.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import re
import secrets
from typing import Any, NamedTuple

from core.redis import AutoPipeline
from core.scripts import Script, ScriptClient, load_scripts
from queueing import keys
from queueing.errors import AdmissionExpired, PlaceExpired, PlaceNotFound

__all__ = [
    "Advance", "Place", "RoomStats", "Status",
    "PendingStatus", "advance", "clear", "finish_status", "join", "keep_for", "stats", "status", "submit_status",
    "MAX_SCAN", "POLL_FRACTION", "POLL_MAX_S", "POLL_MIN_S", "RATE_WINDOW_S", "TICKET_BYTES",
]  # fmt: skip

TICKET_BYTES = 16  # 128 random bits, 22 url-safe characters
_TICKET = re.compile(r"[A-Za-z0-9_-]{22}").fullmatch
DRAW_KEY_BITS = 52  # exact in a double, which is what a sorted-set score is

POLL_MIN_S = 2
POLL_MAX_S = 60
POLL_FRACTION = 10  # poll about ten times over the expected wait
POLL_SPREAD_S = 5  # before the opening, polls are spread over this much after it (no herd at the minute)
RATE_WINDOW_S = 30
# Places one advance may pass: bounds the script's run time when many are dead (measured ~3.5 µs
# a place, so ~3.5 ms at most); called every 100 ms that still crosses 10,000 dead places a second.
MAX_SCAN = 1000


class Place(NamedTuple):
    """A candidate's place, as ``join`` answers: position 0 while the draw has not happened."""

    ticket: str
    position: int
    serving: int
    ahead: int
    eta_s: int
    poll_after_s: int
    admitted: bool


class Status(NamedTuple):
    """One status poll: ``admitted`` once serving has reached the position (then issue an admission token).

    ``admitted_at_s`` (Redis clock, whole seconds) is when the place was first polled admitted, the
    same on every later poll: the admission token expires at ``admitted_at_s`` + the admission TTL.
    ``admission_left_s`` is what is left of it when the poll gave the TTL (else None).
    """

    position: int
    serving: int
    ahead: int
    eta_s: int
    poll_after_s: int
    admitted: bool
    candidate_id: int
    admitted_at_s: int | None = None
    admission_left_s: int | None = None


class Advance(NamedTuple):
    """What one ``advance`` did: the new serving counter, places admitted and skipped, places still waiting."""

    serving: int
    admitted: int
    skipped: int
    waiting: int
    opened: bool


class RoomStats(NamedTuple):
    """The room's counters for operators: places given, serving, the measured rate (positions/s)."""

    opened: bool
    drawn: int
    tail: int
    serving: int
    waiting: int
    rate_per_s: float | None


@functools.cache
def _scripts() -> dict[str, Script]:
    return load_scripts("queueing")


@functools.cache
def _status_script() -> Script:
    return _scripts()["room_status"]


@functools.lru_cache(maxsize=256)
def _room_keys(exam_id: int) -> tuple[str, str, str, str, str, str, str]:
    return keys.room_keys(exam_id)  # polled at peak: the names built once per exam


def _now_arg(now_s: float | None) -> str:
    return "" if now_s is None else str(round(now_s * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rate(measured: Any, configured: float | None, stored: Any) -> float:
    for value in (_text(measured), configured, _text(stored)):
        if value not in (None, ""):
            rate = float(value)
            if rate > 0:
                return rate
    return 1.0


def _numbers(
    position: int, serving: int, drawn: int, opens_at_ms: int, now_ms: int, rate: float, ttl_ms: int
) -> tuple[int, int, int, bool]:
    """(ahead, eta_s, poll_after_s, admitted) of a place."""
    cap = max(1, min(POLL_MAX_S, ttl_ms // 3000))
    if position == 0:
        # In the draw, before the opening: everyone else drawn may end up ahead.
        until_open_s = max(0, math.ceil((opens_at_ms - now_ms) / 1000))
        poll = until_open_s + random.randint(0, POLL_SPREAD_S)
        return max(0, drawn - 1), until_open_s, min(cap, max(POLL_MIN_S, poll)), False
    if position <= serving:
        return 0, 0, 0, True
    ahead = position - serving - 1
    eta_s = math.ceil((ahead + 1) / rate)
    poll = math.ceil(ahead / rate / POLL_FRACTION)
    return ahead, eta_s, min(cap, max(POLL_MIN_S, poll)), False


async def join(
    client: ScriptClient,
    exam_id: int,
    candidate_id: int,
    *,
    opens_at_s: float,
    place_ttl_s: int,
    now_s: float | None = None,
    admit_per_s: float | None = None,
) -> Place:
    """Take the candidate's place in the exam's waiting room, or find it again (same ticket, same position).

    ``opens_at_s`` is when the room opens (epoch seconds); ``admit_per_s`` is only the ETA's
    fallback before the rate has been measured.
    """
    meta, candidates, tickets, draw, order, _, _ = keys.room_keys(exam_id)
    reply = await _scripts()["room_join"].run(
        client,
        (meta, candidates, tickets, draw, order),
        [candidate_id, secrets.token_urlsafe(TICKET_BYTES), secrets.randbits(DRAW_KEY_BITS),
         int(opens_at_s * 1000), _now_arg(now_s), int(place_ttl_s * 1000)],
    )  # fmt: skip
    ticket, position, serving, drawn, opens_at_ms, now_ms, measured, stored = reply
    rate = _rate(measured, admit_per_s, stored)
    ahead, eta_s, poll_after_s, admitted = _numbers(
        position, serving, drawn, opens_at_ms, now_ms, rate, int(place_ttl_s * 1000)
    )
    return Place(_text(ticket), position, serving, ahead, eta_s, poll_after_s, admitted)


async def status(
    client: ScriptClient,
    exam_id: int,
    ticket: str,
    *,
    now_s: float | None = None,
    admit_per_s: float | None = None,
    admission_ttl_s: int | None = None,
) -> Status:
    """Poll a place (marking it seen): its numbers, or ``PlaceExpired`` / ``PlaceNotFound``. One script call.

    The first poll that finds the place admitted records when; with ``admission_ttl_s`` a poll
    that long after that raises ``AdmissionExpired`` (a ``PlaceExpired``: the place is given up,
    so joining again gives a new one). Polling never renews an admission.
    """
    pending = submit_status(client, exam_id, ticket, now_s=now_s, admit_per_s=admit_per_s,
                            admission_ttl_s=admission_ttl_s)
    return await finish_status(client, pending)


class PendingStatus(NamedTuple):
    """A status poll issued by ``submit_status``: what ``finish_status`` needs, and the future of the reply."""

    exam_id: int
    keys: tuple[str, str, str, str]
    args: tuple[str, str, str]
    admit_per_s: float | None
    admission_ttl_s: int | None
    reply: asyncio.Future[Any]


def submit_status(
    client: ScriptClient,
    exam_id: int,
    ticket: str,
    *,
    now_s: float | None = None,
    admit_per_s: float | None = None,
    admission_ttl_s: int | None = None,
) -> PendingStatus:
    """Issue ``status``'s script call now, in this tick's batch, without awaiting it; ``finish_status`` answers.

    Raises ``PlaceNotFound`` at once for a malformed ticket (nothing is sent).
    """
    if not isinstance(ticket, str) or _TICKET(ticket) is None:
        raise PlaceNotFound(exam_id)
    meta, _, tickets, draw, _, admitted_key, _ = _room_keys(exam_id)
    script_keys = (meta, tickets, draw, admitted_key)
    ttl_arg = "" if admission_ttl_s is None else str(int(admission_ttl_s) * 1000)
    args = (ticket, _now_arg(now_s), ttl_arg)
    return PendingStatus(exam_id, script_keys, args, admit_per_s, admission_ttl_s,
                         _status_script().submit(client, script_keys, args))


async def finish_status(client: ScriptClient, pending: PendingStatus) -> Status:
    """The answer of a ``submit_status``: the place's numbers, or ``PlaceExpired`` / ``PlaceNotFound``."""
    reply = await _status_script().result(client, pending.reply, pending.keys, pending.args)
    exam_id, admission_ttl_s = pending.exam_id, pending.admission_ttl_s
    if reply[0] == 0:
        raise PlaceNotFound(exam_id)
    if reply[0] == -1:
        raise PlaceExpired(exam_id, int(reply[1]))
    if reply[0] == -2:
        raise AdmissionExpired(exam_id, int(reply[1]), int(reply[2]) // 1000)
    _, candidate_id, position, serving, drawn, opens_at_ms, now_ms, measured, stored, ttl_ms, admitted_at_ms = reply
    rate = _rate(measured, pending.admit_per_s, stored)
    ahead, eta_s, poll_after_s, admitted = _numbers(position, serving, drawn, opens_at_ms, now_ms, rate, ttl_ms)
    admitted_at_s = admitted_at_ms // 1000 if admitted_at_ms else None
    left_s = None
    if admitted_at_s is not None and admission_ttl_s is not None:
        left_s = math.ceil((admitted_at_ms + int(admission_ttl_s) * 1000 - now_ms) / 1000)
    return Status(position, serving, ahead, eta_s, poll_after_s, admitted, int(candidate_id), admitted_at_s, left_s)


async def advance(
    client: ScriptClient,
    exam_id: int,
    *,
    admit_per_s: float,
    now_s: float | None = None,
    max_scan: int = MAX_SCAN,
    keep_s: float | None = None,
) -> Advance:
    """Admit the candidates owed since the last call at ``admit_per_s`` (live), skipping dead places.

    Safe to call from any number of processes at any frequency; it also opens the room when due.
    With ``keep_s``, places passed more than ``keep_s`` ago are forgotten (see ``keep_for``).
    """
    if not admit_per_s > 0:
        raise ValueError("admit_per_s must be positive")
    meta, candidates, tickets, draw, order, admitted_key, trail = keys.room_keys(exam_id)
    serving, admitted, skipped, tail, opened = await _scripts()["room_advance"].run(
        client, (meta, tickets, draw, order, candidates, admitted_key, trail),
        [repr(float(admit_per_s)), _now_arg(now_s), max_scan, RATE_WINDOW_S * 1000,
         "" if keep_s is None else str(round(keep_s * 1000))],
    )
    return Advance(serving, admitted, skipped, max(0, tail - serving), bool(opened))


def keep_for(place_ttl_s: float, admission_ttl_s: float) -> float:
    """How long a passed place is kept before ``advance`` forgets it: the place TTL, the admission TTL, and one
    more place TTL.

    A candidate still waiting polls within the place TTL, so a place the counter passed alive is first
    polled admitted within ``place_ttl_s`` and its admission ends ``admission_ttl_s`` later: until then
    nothing is forgotten that a poll or a join could still need. For one more place TTL a late poll
    still hears 410 ``queue_place_expired``; after that 404 ``queue_ticket_not_found``, and the page
    joins again on either.
    """
    return 2 * place_ttl_s + admission_ttl_s


async def _command(client: ScriptClient, *args: Any) -> Any:
    """A command without a method of its own, on either kind of client."""
    if isinstance(client, AutoPipeline):
        return await client.execute(*args)
    return await client.execute_command(*args)


async def stats(client: ScriptClient, exam_id: int) -> RoomStats:
    """The room's counters (one HMGET), for the operators' live figures."""
    opened, tail, serving, rate = await _command(
        client, "HMGET", keys.room_meta(exam_id), "opened", "tail", "serving", "rate"
    )
    drawn = int(opened) if opened is not None else 0
    tail_n = int(tail) if tail is not None else 0
    serving_n = int(serving) if serving is not None else 0
    return RoomStats(
        opened is not None, drawn, tail_n, serving_n, max(0, tail_n - serving_n),
        float(rate) if rate is not None else None,
    )  # fmt: skip


async def clear(client: ScriptClient, exam_id: int) -> int:
    """Delete the exam's whole waiting room (every place and counter); the number of keys removed."""
    return int(await client.delete(*keys.room_keys(exam_id)))
