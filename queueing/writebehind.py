"""Write-behind of seat holds: the worker copies the hold streams into PostgreSQL in batches.

Consumers of one group (``GROUP``) read the per-exam streams with XREADGROUP, apply a
batch in one transaction, then XACK. An entry a crashed consumer never acknowledged is
taken over with XAUTOCLAIM once idle for ``min_idle_ms``; an entry delivered more than
``max_deliveries`` times goes to the dead-letter stream (``keys.HOLDS_DEAD_LETTERS``),
whence ``replay_dead_letters`` puts it back.

Idempotency rule — **only a registration's latest event is applied**: every event states
the registration's whole hold after it (site, expiry; none after release/expire) and
carries a number increasing per exam; the scripts record each registration's latest
number in ``hold_last_event``. Inside the batch transaction the registrations' rows are
locked (``FOR UPDATE``, in id order) *before* those numbers are read, then an event is
applied only when its number is the latest; older ones are superseded and acknowledged
unapplied. So replays, duplicates (XAUTOCLAIM after a slow consumer, dead-letter replay)
and out-of-order application across consumers are harmless: whichever consumer commits
last read the latest number after the other's commit, and wrote that event's state. A
registration with no recorded number (Redis rebuilt by ``reconcile``) takes no events.
Applying never clears the seat of a paid registration (its seat is PostgreSQL's word).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from core.db import Conn
from core.loops import pause, should_stop
from core.redis_cluster import is_cluster, slot_of
from queueing import keys
from queueing.holds import clock_ms, ms_to_datetime

log = logging.getLogger("examgate.writebehind")

GROUP = "holds-writebehind"
EVENT_TYPES = frozenset({"hold", "move", "release", "expire"})
ERROR_CHARS = 500

PgTarget = asyncpg.Pool | asyncpg.Connection
StreamSource = Sequence[str] | Callable[[], Awaitable[Sequence[str]]]


class HoldEvent(NamedTuple):
    """One parsed stream entry: the registration's hold after the event (site None = no seat)."""

    stream: str
    entry_id: str
    exam_id: int
    type: str
    registration_id: int
    site_id: int | None
    old_site_id: int | None
    expires_at_ms: int | None
    event: int


# A stream's entries as XRANGE returns them to this client, which does not decode replies
# (redis-py types them for either decoding mode, with parts that XRANGE never leaves out).
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def _xrange(redis: aioredis.Redis, stream: str, *, min: str, max: str, count: int) -> _Entries:
    return cast(_Entries, await redis.xrange(stream, min=min, max=max, count=count))


class DeadLetter(NamedTuple):
    """An entry that kept failing, as kept in the dead-letter stream."""

    id: str
    stream: str
    entry_id: str
    deliveries: int
    error: str
    fields: dict[str, str]


@dataclass
class DrainResult:
    """What one ``drain_once`` did; ``applied`` + ``superseded`` entries were acknowledged."""

    read: int = 0
    claimed: int = 0
    applied: int = 0
    superseded: int = 0
    failed: int = 0
    dead: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def parse_event(stream: str, entry_id: str, fields: Mapping[Any, Any]) -> HoldEvent:
    """A stream entry as a ``HoldEvent``; ``ValueError`` when it is malformed."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        kind = data["type"]
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r}")
        event = HoldEvent(
            stream, entry_id, keys.exam_of_holds_stream(stream), kind, int(data["registration"]),
            _optional_int(data["site"]), _optional_int(data["old_site"]), _optional_int(data["expires_at_ms"]),
            int(data["event"]),
        )
    except KeyError as exc:
        raise ValueError(f"missing field {exc.args[0]!r}") from exc
    if (event.site_id is None) != (kind in ("release", "expire")):
        raise ValueError(f"{kind} event with site {event.site_id!r}")
    return event


@contextlib.asynccontextmanager
async def _connection(pg: PgTarget) -> AsyncIterator[Conn]:
    if isinstance(pg, asyncpg.Pool):
        async with pg.acquire() as conn:
            yield conn
    else:
        yield pg


async def _latest_numbers(redis: aioredis.Redis, events: Sequence[HoldEvent]) -> dict[tuple[int, int], int | None]:
    by_exam: dict[int, list[int]] = defaultdict(list)
    for event in events:
        by_exam[event.exam_id].append(event.registration_id)
    exams = [(exam_id, sorted(set(regs))) for exam_id, regs in by_exam.items()]
    async with redis.pipeline(transaction=False) as pipe:
        for exam_id, regs in exams:
            pipe.hmget(keys.hold_last_event(exam_id), [str(reg) for reg in regs])
        replies = await pipe.execute()
    latest: dict[tuple[int, int], int | None] = {}
    for (exam_id, regs), values in zip(exams, replies, strict=True):
        for reg, value in zip(regs, values, strict=True):
            latest[(exam_id, reg)] = None if value is None else int(value)
    return latest


async def apply_events(conn: Conn, redis: aioredis.Redis, events: Sequence[HoldEvent]) -> int:
    """Apply the latest event of each registration in one transaction; the number of events applied.

    ``conn`` must not be inside a transaction. See the module docstring for the rule.
    """
    if not events:
        return 0
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM registrations WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            sorted({event.registration_id for event in events}),
        )
        latest = await _latest_numbers(redis, events)
        chosen: dict[tuple[int, int], HoldEvent] = {}
        for event in events:
            key = (event.exam_id, event.registration_id)
            if latest.get(key) == event.event:
                chosen[key] = event  # duplicates of one event are one
        if chosen:
            rows = list(chosen.values())
            await conn.execute(
                """UPDATE registrations AS r
                      SET site_id = v.site_id, hold_expires_at = v.expires_at, updated_at = now()
                     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
                          AS v(id, exam_id, site_id, expires_at)
                    WHERE r.id = v.id AND r.exam_id = v.exam_id
                      AND (v.site_id IS NOT NULL OR r.status <> 'paid')
                      AND (r.site_id IS DISTINCT FROM v.site_id OR r.hold_expires_at IS DISTINCT FROM v.expires_at)""",
                [e.registration_id for e in rows], [e.exam_id for e in rows], [e.site_id for e in rows],
                [None if e.expires_at_ms is None else ms_to_datetime(e.expires_at_ms) for e in rows],
            )
        return len(chosen)


async def unapplied_events(redis: aioredis.Redis, stream: str, group: str = GROUP,
                           page_size: int = 1000) -> dict[int, set[int]]:
    """Registration → numbers of its events in ``stream`` that ``group`` has not acknowledged yet.

    Those are the events PostgreSQL may not reflect: entries not yet delivered to the group and
    entries delivered but pending (a consumer acknowledges only after its transaction commits).
    Without the group every entry counts; without the stream there are none.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return {}
    info = next((g for g in groups if _text(g["name"]) == group), None)
    pending: set[str] = set()
    if info is None:
        start, last_delivered = "-", (0, 0)
    else:
        last_delivered = _parse_id(info["last-delivered-id"])
        after = "-"
        while int(info["pending"]):
            page = await redis.xpending_range(stream, group, after, "+", page_size)
            pending.update(_text(p["message_id"]) for p in page)
            if len(page) < page_size:
                break
            after = "(" + _text(page[-1]["message_id"])
        start = min(pending, key=_parse_id) if pending else "(" + _text(info["last-delivered-id"])
    found: dict[int, set[int]] = defaultdict(set)
    while True:
        entries = await _xrange(redis, stream, min=start, max="+", count=page_size)
        for entry_id, fields in entries:
            entry = _text(entry_id)
            if entry in pending or _parse_id(entry) > last_delivered:
                data = {_text(k): _text(v) for k, v in fields.items()}
                with contextlib.suppress(KeyError, ValueError):  # a malformed entry changes no hold
                    found[int(data["registration"])].add(int(data["event"]))
        if len(entries) < page_size:
            return dict(found)
        start = "(" + _text(entries[-1][0])


async def ensure_groups(redis: aioredis.Redis, streams: Iterable[str], group: str = GROUP) -> None:
    """Create the consumer group on every stream (and the stream itself) unless it exists."""
    streams = list(streams)
    if not streams:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xgroup_create(stream, group, id="0", mkstream=True)
        replies = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
            raise reply


async def _claim(redis: aioredis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int,
                 count: int) -> list[tuple[str, dict[Any, Any], int]]:
    """Entries idle for ``min_idle_ms`` taken over by ``consumer``, with their delivery counts."""
    reply = await redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
    entries = [(_text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id, _ in entries:
            pipe.xpending_range(stream, group, entry_id, entry_id, 1)
        replies = await pipe.execute()
    deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for reply in replies for p in reply}
    return [(entry_id, fields, deliveries.get(entry_id, 1)) for entry_id, fields in entries]


async def _to_dead_letters(redis: aioredis.Redis, stream: str, group: str,
                           entries: Sequence[tuple[str, dict[Any, Any], int]]) -> None:
    failures = [f"{stream} {entry_id}" for entry_id, _, _ in entries]
    errors = await redis.hmget(keys.HOLDS_FAILURES, failures)
    async with redis.pipeline(transaction=False) as pipe:
        for (entry_id, fields, deliveries), error in zip(entries, errors, strict=True):
            record: dict[FieldT, EncodableT] = {_text(k): _text(v) for k, v in fields.items()}
            # Written before the XACK: a crash between them duplicates a dead letter, never loses one.
            pipe.xadd(keys.HOLDS_DEAD_LETTERS, {
                **record, "dl_stream": stream, "dl_entry_id": entry_id, "dl_deliveries": deliveries,
                "dl_error": _text(error) if error is not None else "", "dl_at_ms": clock_ms(),
            })
        await pipe.execute()
    await redis.xack(stream, group, *(entry_id for entry_id, _, _ in entries))
    await redis.hdel(keys.HOLDS_FAILURES, *failures)
    for entry_id, _, deliveries in entries:
        log.error("hold event %s %s failed %d deliveries; moved to %s", stream, entry_id, deliveries,
                  keys.HOLDS_DEAD_LETTERS)


async def drain_once(
    redis: aioredis.Redis,
    pg: PgTarget,
    streams: Sequence[str],
    *,
    consumer_name: str,
    group: str = GROUP,
    batch_size: int = 500,
    block_ms: int | None = None,
    min_idle_ms: int = 60_000,
    max_deliveries: int = 5,
) -> DrainResult:
    """One round: take over idle entries, read new ones, apply them, acknowledge what was applied.

    Entries that fail stay pending (to be claimed again after ``min_idle_ms``); once
    delivered more than ``max_deliveries`` times they move to the dead-letter stream.
    ``block_ms`` None reads without blocking.
    """
    result = DrainResult()
    if not streams:
        return result
    await ensure_groups(redis, streams, group)
    batch: list[tuple[str, str, dict[Any, Any], int]] = []
    for stream in streams:
        if len(batch) >= batch_size:
            break
        claimed = await _claim(redis, stream, group, consumer_name, min_idle_ms, batch_size - len(batch))
        dead = [entry for entry in claimed if entry[2] > max_deliveries]
        if dead:
            await _to_dead_letters(redis, stream, group, dead)
            result.dead += len(dead)
        batch.extend((stream, entry_id, fields, count) for entry_id, fields, count in claimed
                     if count <= max_deliveries)
    result.claimed = len(batch)
    if len(batch) < batch_size:
        for read_stream, entries in await _read_new(redis, group, consumer_name, streams, batch_size - len(batch),
                                                    None if batch else block_ms):
            for read_id, read_fields in entries:
                batch.append((_text(read_stream), _text(read_id), read_fields, 1))
                result.read += 1
    if not batch:
        return result

    events: list[HoldEvent] = []
    failed: dict[tuple[str, str], str] = {}
    for stream, entry_id, fields, _ in batch:
        try:
            events.append(parse_event(stream, entry_id, fields))
        except ValueError as exc:
            failed[(stream, entry_id)] = f"malformed entry: {exc}"
    applied = await _apply_all(redis, pg, events, failed)
    result.applied = applied
    result.failed = len(failed)

    done: dict[str, list[str]] = defaultdict(list)
    retried: list[str] = []
    for stream, entry_id, _, count in batch:
        if (stream, entry_id) not in failed:
            done[stream].append(entry_id)
            if count > 1:
                retried.append(f"{stream} {entry_id}")
    async with redis.pipeline(transaction=False) as pipe:
        for stream, ids in done.items():
            pipe.xack(stream, group, *ids)
        if retried:
            pipe.hdel(keys.HOLDS_FAILURES, *retried)
        if failed:
            errors: dict[FieldT, EncodableT] = {f"{s} {i}": error[:ERROR_CHARS] for (s, i), error in failed.items()}
            pipe.hset(keys.HOLDS_FAILURES, mapping=errors)
        await pipe.execute()
    result.superseded = sum(len(ids) for ids in done.values()) - applied
    for (stream, entry_id), error in failed.items():
        log.warning("hold event %s %s not applied: %s", stream, entry_id, error)
    return result


async def _read_new(redis: aioredis.Redis, group: str, consumer: str, streams: Sequence[str], count: int,
                    block_ms: int | None) -> list[tuple[bytes, _Entries]]:
    """New entries of the streams (XREADGROUP ``>``), blocking up to ``block_ms`` when there are none.

    On a Redis Cluster one XREADGROUP reads streams of one slot only: each slot's streams are read
    in turn without blocking, and the consumer sleeps (as long as it would have blocked) when none
    had anything.
    """
    if not is_cluster(redis):
        reply = await redis.xreadgroup(group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms)
        return cast("list[tuple[bytes, _Entries]]", reply or [])
    by_slot: dict[int, list[str]] = defaultdict(list)
    for stream in streams:
        by_slot[slot_of(stream)].append(stream)
    read: list[tuple[bytes, _Entries]] = []
    for group_streams in by_slot.values():
        if count <= 0:
            break
        found = cast("list[tuple[bytes, _Entries]] | None", await redis.xreadgroup(
            group, consumer, dict.fromkeys(group_streams, ">"), count=count))
        for read_stream, entries in found or []:
            read.append((read_stream, entries))
            count -= len(entries)
    if not read and block_ms:
        await asyncio.sleep(min(block_ms, 100) / 1000)
    return read


async def _apply_all(redis: aioredis.Redis, pg: PgTarget, events: list[HoldEvent],
                     failed: dict[tuple[str, str], str]) -> int:
    """One transaction for the batch; when it fails, one per event so only the bad ones stay pending."""
    if not events:
        return 0
    async with _connection(pg) as conn:
        try:
            return await apply_events(conn, redis, events)
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            if len(events) == 1:
                failed[(events[0].stream, events[0].entry_id)] = repr(exc)
                return 0
        applied = 0
        for event in events:
            try:
                applied += await apply_events(conn, redis, [event])
            except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                failed[(event.stream, event.entry_id)] = repr(exc)
        return applied


async def drain(redis: aioredis.Redis, pg: PgTarget, streams: Sequence[str], *, consumer_name: str,
                group: str = GROUP, batch_size: int = 500, min_idle_ms: int = 60_000,
                max_deliveries: int = 5) -> DrainResult:
    """``drain_once`` until a round reads and claims nothing; the totals."""
    total = DrainResult()
    while True:
        step = await drain_once(redis, pg, streams, consumer_name=consumer_name, group=group,
                                batch_size=batch_size, min_idle_ms=min_idle_ms, max_deliveries=max_deliveries)
        for name in ("read", "claimed", "applied", "superseded", "failed", "dead"):
            setattr(total, name, getattr(total, name) + getattr(step, name))
        if step.read + step.claimed + step.dead == 0 or step.failed == step.read + step.claimed:
            return total


async def trim_acknowledged(redis: aioredis.Redis, stream: str) -> None:
    """Drop entries every group of the stream has read and acknowledged (XTRIM MINID ~)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return
    if not groups:
        return
    floor: tuple[int, int] | None = None
    for info in groups:
        pending = await redis.xpending(stream, info["name"])
        if pending["pending"]:
            bound = _parse_id(pending["min"])
        else:
            ms, seq = _parse_id(info["last-delivered-id"])
            bound = (ms, seq + 1)
        floor = bound if floor is None else min(floor, bound)
    assert floor is not None
    await redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True)


def _parse_id(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


async def run_consumer(
    redis: aioredis.Redis,
    pg_pool: asyncpg.Pool,
    *,
    consumer_name: str,
    streams: StreamSource,
    stop_event: asyncio.Event | None = None,
    group: str = GROUP,
    batch_size: int = 500,
    block_ms: int = 1000,
    min_idle_ms: int = 60_000,
    max_deliveries: int = 5,
    streams_refresh_s: float = 10.0,
    trim_interval_s: float = 30.0,
) -> None:
    """Consume the hold streams into PostgreSQL until cancelled, or until ``stop_event`` (if given) is set.

    ``streams`` is a list of stream keys or an async function returning the current list
    (e.g. ``hold_streams(active_exam_ids(catalogue))``), refreshed every ``streams_refresh_s``.
    ``redis`` must have no socket timeout shorter than ``block_ms``. Under a supervisor (a
    worker task) pass no ``stop_event``: cancelling the task is the one way to stop it, and a
    cancellation swallowed by a Redis call below is raised again (``core.loops``).
    """
    loop = asyncio.get_running_loop()
    current: Sequence[str] = []
    refreshed_at = trimmed_at = float("-inf")
    while not should_stop(stop_event):
        if callable(streams) and loop.time() - refreshed_at >= streams_refresh_s:
            current = list(await streams())
            refreshed_at = loop.time()
        elif not callable(streams):
            current = streams
        if not current:
            await pause(block_ms / 1000, stop_event)
            continue
        result = await drain_once(redis, pg_pool, current, consumer_name=consumer_name, group=group,
                                  batch_size=batch_size, block_ms=block_ms, min_idle_ms=min_idle_ms,
                                  max_deliveries=max_deliveries)
        if result.read or result.claimed:
            log.debug("write-behind %s: %s", consumer_name, result)
        if loop.time() - trimmed_at >= trim_interval_s:
            for stream in current:
                await trim_acknowledged(redis, stream)
            trimmed_at = loop.time()


def _dead_letter(entry_id: Any, raw: Mapping[Any, Any]) -> DeadLetter:
    data = {_text(k): _text(v) for k, v in raw.items()}
    meta = {k: data.pop(k, "") for k in ("dl_stream", "dl_entry_id", "dl_deliveries", "dl_error", "dl_at_ms")}
    return DeadLetter(_text(entry_id), meta["dl_stream"], meta["dl_entry_id"], int(meta["dl_deliveries"] or 0),
                      meta["dl_error"], data)


async def list_dead_letters(redis: aioredis.Redis, *, count: int = 100, after: str = "-") -> list[DeadLetter]:
    """Dead letters, oldest first (``after`` an id, exclusive, to page on)."""
    start = after if after == "-" else f"({after}"
    entries = await _xrange(redis, keys.HOLDS_DEAD_LETTERS, min=start, max="+", count=count)
    return [_dead_letter(entry_id, raw) for entry_id, raw in entries]


async def replay_dead_letters(redis: aioredis.Redis, ids: Iterable[str] | None = None) -> int:
    """Put dead letters back on their streams (all when ``ids`` is None); the number replayed.

    A replayed event is applied only if it is still its registration's latest (the rule
    above), so replaying an old one cannot undo newer changes.
    """
    letters: list[DeadLetter] = []
    if ids is None:
        after = "-"
        while page := await list_dead_letters(redis, count=500, after=after):
            letters.extend(page)
            after = page[-1].id
    else:
        for entry_id in ids:
            found = await _xrange(redis, keys.HOLDS_DEAD_LETTERS, min=entry_id, max=entry_id, count=1)
            letters.extend(_dead_letter(found_id, raw) for found_id, raw in found)
    for letter in letters:
        # Added before it is deleted: a crash between the two replays it twice, which is harmless.
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xadd(letter.stream, cast("dict[FieldT, EncodableT]", letter.fields))
            pipe.xdel(keys.HOLDS_DEAD_LETTERS, letter.id)
            await pipe.execute()
    return len(letters)
