"""Seat holds in Redis: take, move, release and make permanent, each one atomic script call.

Per exam (all keys share the tag ``{exam:N}``, so one script touches one slot):

- ``holds``       hash registration → site: every held seat, expiring or permanent (paid);
- ``hold_expiry`` zset registration scored by its hold's expiry in ms (permanent holds absent);
- ``site_left``   seats still free per site, never below zero;
- ``holds_stream`` one event per change, for the write-behind to PostgreSQL
  (``type`` hold | move | release | expire, ``registration``, ``site``, ``old_site``,
  ``expires_at_ms`` ('' = none or permanent), ``event``: a number increasing per exam);
- ``hold_last_event`` hash registration → its latest event number (see ``writebehind``);
- ``seat_rights`` hash registration → the registration's version when it was approved (positive)
  or when it stopped being approved (negative). An expiring hold taken for a candidate needs a
  positive one (``approved_only``), so the rule "only an approved registration holds a seat" is
  checked inside the hold script, where no race with a withdrawal can get past it. Grants and
  revocations carry the registration's version, so whichever reaches Redis last, the later
  transition in PostgreSQL wins.

The admission check is the caller's: the gateway verifies the signed admission token
before it holds a seat; the scripts check the current hold and the remaining seats.
A script cannot build the old site's key, so the caller names the site it believes is
held (``current_site``); the script checks that belief and, when it is wrong, answers
with the real one and the call is repeated (two round trips for a move without a hint).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from core.catalogue import Catalogue
from core.redis import REDIS_DOWN, AutoPipeline
from core.scripts import Script, ScriptClient, load_scripts
from queueing import keys
from queueing.errors import QueueingError

DEFAULT_HOLD_TTL_S = 1800
# A belief about the held site can be wrong at most once per concurrent change; past
# this many retries something is moving the hold in a loop.
MAX_ATTEMPTS = 8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HoldError(QueueingError):
    """Base class of every seat-hold error."""


class SiteFull(HoldError):
    """No seat is left at the site (HTTP 409 ``site_full``)."""

    def __init__(self, site_id: int) -> None:
        super().__init__(f"site {site_id} has no seat left")
        self.site_id = site_id


class HoldUnconfirmed(HoldError):
    """The hold is written on the Redis master but no replica confirmed it in time (HTTP 503, ask again).

    Asking again finds the hold already there and waits for the replicas once more; a hold never
    confirmed may be lost if the master fails before replicating it, so it is never promised.
    """

    def __init__(self, registration_id: int, replicas: int) -> None:
        super().__init__(f"the seat hold of registration {registration_id} reached {replicas} replica(s) too few")
        self.registration_id = registration_id


class Replication(NamedTuple):
    """How a hold is made to survive a Redis failover: ``WAIT`` for ``replicas`` within ``timeout_ms``."""

    replicas: int
    timeout_ms: int


class InventoryMissing(HoldError):
    """The site's seat count is not in Redis (not loaded yet, or unknown site): retry later (503)."""

    def __init__(self, site_id: int) -> None:
        super().__init__(f"no seat inventory for site {site_id}")
        self.site_id = site_id


class SeatLocked(HoldError):
    """The registration's seat is permanent (paid): it neither moves nor is released (409)."""

    def __init__(self, registration_id: int, site_id: int) -> None:
        super().__init__(f"registration {registration_id} holds site {site_id} permanently")
        self.registration_id = registration_id
        self.site_id = site_id


class NoSeatRight(HoldError):
    """No seat right in Redis: not approved, or its grant is missing (HTTP 409 ``not_approved``)."""

    def __init__(self, registration_id: int) -> None:
        super().__init__(f"registration {registration_id} has no seat right")
        self.registration_id = registration_id


class HoldContention(HoldError):
    """The hold kept changing under the call (``MAX_ATTEMPTS`` exceeded)."""

    def __init__(self, registration_id: int) -> None:
        super().__init__(f"hold of registration {registration_id} kept changing")
        self.registration_id = registration_id


class Hold(NamedTuple):
    """A held seat: ``expires_at_ms`` None when permanent, ``previous_site_id`` the site held before.

    ``event`` is the number of the stream event written, 0 when nothing changed (the paid seat asked for again).
    """

    registration_id: int
    site_id: int
    expires_at_ms: int | None
    previous_site_id: int | None
    event: int

    @property
    def expires_at(self) -> datetime | None:
        """The expiry as an aware UTC datetime (None when permanent)."""
        return None if self.expires_at_ms is None else ms_to_datetime(self.expires_at_ms)


class Release(NamedTuple):
    """A released seat; ``site_id`` None (and ``event`` 0) when there was no hold."""

    registration_id: int
    site_id: int | None
    event: int


def clock_ms() -> int:
    """Wall-clock time in ms, the clock holds expire by."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(moment: datetime) -> int:
    """An aware datetime as milliseconds since the epoch (sub-ms truncated), exactly."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def hold_scripts() -> dict[str, Script]:
    """The hold scripts (``hold_take``, ``hold_release``, ``hold_expire``, ``hold_grant``), for preloading."""
    return {name: script for name, script in load_scripts("queueing").items() if name.startswith("hold_")}


_SCRIPTS = hold_scripts()
TAKE = _SCRIPTS["hold_take"]
RELEASE = _SCRIPTS["hold_release"]
EXPIRE = _SCRIPTS["hold_expire"]
GRANT = _SCRIPTS["hold_grant"]


def event_keys(exam_id: int) -> list[str]:
    """KEYS[1..5] shared by the hold scripts: holds, expiry, last event, counter, stream."""
    return [keys.holds(exam_id), keys.hold_expiry(exam_id), keys.hold_last_event(exam_id),
            keys.hold_event_counter(exam_id), keys.holds_stream(exam_id)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _site(value: Any) -> int | None:
    text = _text(value)
    return int(text) if text else None


async def hold_seat(
    client: ScriptClient,
    exam_id: int,
    registration_id: int,
    site_id: int,
    *,
    ttl_s: int,
    current_site: int | None = None,
    now_ms: int | None = None,
    approved_only: bool = False,
    replication: Replication | None = None,
) -> Hold:
    """Hold a seat at ``site_id`` for ``ttl_s``: take it, move the hold there, or refresh it.

    The caller has checked the admission. ``current_site`` is a hint saving a round trip
    on moves; a wrong hint only costs one. ``approved_only`` (every candidate's request)
    needs the registration's seat right (``NoSeatRight`` otherwise). Raises ``SiteFull``,
    ``InventoryMissing``, ``SeatLocked`` (paid holds do not move). With ``replication`` the hold is
    answered only once that many replicas have it (``HoldUnconfirmed`` otherwise).
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive (make_permanent holds without expiry)")
    return await _take(client, exam_id, registration_id, site_id, ttl_ms=ttl_s * 1000,
                       current_site=current_site, now_ms=now_ms, approved_only=approved_only,
                       replication=replication)


async def make_permanent(
    client: ScriptClient,
    exam_id: int,
    registration_id: int,
    site_id: int,
    *,
    current_site: int | None = None,
    now_ms: int | None = None,
    replication: Replication | None = None,
) -> Hold:
    """Keep the registration's seat at ``site_id`` for good (paid): the sweeper never releases it.

    The hold is normally already at ``site_id``; if it expired or moved meanwhile, the seat
    is taken again when one is left (``SiteFull`` otherwise). Repeating it changes nothing.
    """
    return await _take(client, exam_id, registration_id, site_id, ttl_ms=0, current_site=current_site, now_ms=now_ms,
                       replication=replication)


async def _take(client: ScriptClient, exam_id: int, registration_id: int, site_id: int, *, ttl_ms: int,
                current_site: int | None, now_ms: int | None, approved_only: bool = False,
                replication: Replication | None = None) -> Hold:
    at = clock_ms() if now_ms is None else now_ms
    base = [*event_keys(exam_id), keys.seat_rights(exam_id)]
    want_key = keys.site_left(exam_id, site_id)
    believed = current_site
    for _ in range(MAX_ATTEMPTS):
        script_keys = [*base, want_key]
        if believed is not None:
            script_keys.append(keys.site_left(exam_id, believed))
        args = [registration_id, site_id, "" if believed is None else believed, at, ttl_ms,
                "1" if approved_only else "0"]
        if replication is not None and replication.replicas > 0 and isinstance(client, AutoPipeline):
            reply = await _take_replicated(client, script_keys, args, registration_id, replication)
        else:
            reply = await TAKE.run(client, script_keys, args)
        code = int(reply[0])
        if code == 1:
            expires = _text(reply[2])
            return Hold(registration_id, site_id, int(expires) if expires else None, _site(reply[1]),
                        int(reply[3]))
        if code == 0:
            raise SiteFull(site_id)
        if code == -1:
            raise InventoryMissing(site_id)
        if code == -4:
            raise NoSeatRight(registration_id)
        held = _site(reply[1])
        if code == -3:
            assert held is not None
            if held == site_id:  # asking again for the paid seat: it is already held for good
                return Hold(registration_id, site_id, None, site_id, 0)
            raise SeatLocked(registration_id, held)
        believed = held  # -2: the hold is elsewhere than believed; ask again with the truth
    raise HoldContention(registration_id)


async def _take_replicated(client: AutoPipeline, script_keys: list[str], args: list[Any], registration_id: int,
                           replication: Replication) -> Any:
    """The take script, then ``WAIT`` in the same write on the same connection (``WAIT`` counts the replicas
    that have every write its own connection made); a successful take not confirmed in time raises."""
    for _ in range(2):  # a NOSCRIPT reply loads the script and runs both again
        pending = TAKE.submit(client, script_keys, args)
        waited = client.wait_replicas(script_keys[0], replication.replicas, replication.timeout_ms)
        try:
            reply = await pending
        except NoScriptError:
            waited.add_done_callback(_seen)  # shared by the tick's holds: never cancelled here
            await TAKE.load(client)
            continue
        except BaseException:
            waited.add_done_callback(_seen)  # shared by the tick's holds: never cancelled here
            raise
        if int(reply[0]) != 1:
            waited.add_done_callback(_seen)  # shared by the tick's holds: never cancelled here
            return reply
        try:
            confirmed = int(await waited)
        except REDIS_DOWN as exc:
            raise HoldUnconfirmed(registration_id, replication.replicas) from exc
        if confirmed < replication.replicas:
            raise HoldUnconfirmed(registration_id, replication.replicas)
        return reply
    raise NoScriptError(f"script {TAKE.name} could not be loaded")


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def release_seat(
    client: ScriptClient,
    exam_id: int,
    registration_id: int,
    *,
    current_site: int | None = None,
    force: bool = False,
    now_ms: int | None = None,
    revoke_version: int | None = None,
) -> Release:
    """Give the registration's seat back (DELETE seat); no hold is not an error.

    A permanent (paid) hold raises ``SeatLocked`` unless ``force`` (refunds, cancellations).
    ``revoke_version``: the registration stopped being approved at this version; its seat right
    is revoked in the same script, so no hold can be taken between the revocation and the release.
    """
    at = clock_ms() if now_ms is None else now_ms
    base = [*event_keys(exam_id), keys.seat_rights(exam_id)]
    believed = current_site
    revoke = "" if revoke_version is None else str(revoke_version)
    for _ in range(MAX_ATTEMPTS):
        script_keys = list(base)
        if believed is not None:
            script_keys.append(keys.site_left(exam_id, believed))
        reply = await RELEASE.run(client, script_keys,
                                  [registration_id, "" if believed is None else believed, at, int(force), revoke])
        code = int(reply[0])
        if code == 1:
            return Release(registration_id, _site(reply[1]), int(reply[2]))
        if code == 0:
            return Release(registration_id, None, 0)
        held = _site(reply[1])
        if code == -3:
            assert held is not None
            raise SeatLocked(registration_id, held)
        believed = held
    raise HoldContention(registration_id)


async def grant_seat_right(client: ScriptClient, exam_id: int, registration_id: int, version: int) -> bool:
    """Let the registration, approved at ``version``, hold seats; False when a later revocation is already there."""
    return bool(await GRANT.run(client, [keys.seat_rights(exam_id)], [registration_id, version]))


async def current_hold(client: ScriptClient, exam_id: int, registration_id: int) -> tuple[int | None, int | None]:
    """(site, expires_at_ms) of a registration's hold: (None, None) without one, expiry None when permanent."""
    member = str(registration_id)
    if isinstance(client, AutoPipeline):  # both commands go out in one batch
        site, score = await asyncio.gather(client.hget(keys.holds(exam_id), member),
                                           client.execute(b"ZSCORE", keys.hold_expiry(exam_id), member))
    else:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hget(keys.holds(exam_id), member)
            pipe.zscore(keys.hold_expiry(exam_id), member)
            site, score = await pipe.execute()
    if site is None:
        return None, None
    return int(site), None if score is None else int(float(score))


async def has_live_hold(client: ScriptClient, exam_id: int, registration_id: int, *,
                        now_ms: int | None = None) -> bool:
    """True if the registration holds a seat that is permanent or not yet expired (``confirm`` needs one)."""
    site, expires_at_ms = await current_hold(client, exam_id, registration_id)
    at = clock_ms() if now_ms is None else now_ms
    return site is not None and (expires_at_ms is None or expires_at_ms > at)


def active_exam_ids(catalogue: Catalogue, *, now: datetime | None = None,
                    grace: timedelta = timedelta(days=1)) -> list[int]:
    """Exams whose holds can still change: registration open now, or closed less than ``grace`` ago.

    ``grace`` covers holds expiring after the close and late payments; the worker's
    consumers and sweepers watch these exams' streams and expiry sets.
    """
    moment = now or datetime.now(UTC)
    return [exam.id for exam in catalogue.exams.values()
            if exam.registration_opens_at - grace <= moment <= exam.registration_closes_at + grace]


def hold_streams(exam_ids: Iterable[int]) -> list[str]:
    """The hold event streams of these exams (one per exam; the write-behind reads them all)."""
    return [keys.holds_stream(exam_id) for exam_id in exam_ids]
