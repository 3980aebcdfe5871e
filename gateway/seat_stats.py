"""Operators' live figures of the waiting rooms, seats and hold streams (sections of ``GET /admin/api/v1/stats``).

All from Redis, one pipeline per section: queue length and serving counter per enabled
room; seats available and held per site of the exams open for registration (``held`` =
capacity − available, paid seats included); per hold stream its length, the write-behind
group's lag (entries not yet read) and pending entries (read, not yet acknowledged).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import ResponseError

from gateway import keys
from queueing import keys as qkeys
from queueing import waiting_room
from queueing.holds import active_exam_ids
from queueing.writebehind import GROUP


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def queue_figures(app: web.Application) -> dict[str, Any]:
    """Per enabled room: places given, serving counter, still waiting, measured admit rate."""
    figures: dict[str, Any] = {}
    for exam_id, config in app[keys.LIVE].current.queue_exams.items():
        if config.enabled:
            room = await waiting_room.stats(app[keys.REDIS_PY], exam_id)
            figures[str(exam_id)] = {**room._asdict(), "admit_per_s": config.admit_per_s}
    return figures


async def seat_figures(app: web.Application) -> dict[str, Any]:
    """Per exam open for registration: holds in Redis, and per site capacity, available and held."""
    catalogue = app[keys.CATALOGUE].catalogue
    exams = [catalogue.exams[exam_id] for exam_id in active_exam_ids(catalogue)]
    if not exams:
        return {}
    async with app[keys.REDIS_PY].pipeline(transaction=False) as pipe:  # one round trip for every exam
        for exam in exams:
            pipe.hlen(qkeys.holds(exam.id))
            pipe.zcard(qkeys.hold_expiry(exam.id))
            pipe.mget([qkeys.site_left(exam.id, site_id) for site_id in exam.sites] or ["eg:none"])
        replies = await pipe.execute()
    figures: dict[str, Any] = {}
    for index, exam in enumerate(exams):
        holds, expiring, left = replies[3 * index: 3 * index + 3]
        figures[str(exam.id)] = {
            "holds": holds, "expiring_holds": expiring,
            "sites": {str(site.id): {"capacity": site.capacity,
                                     "available": None if value is None else int(value),
                                     "held": None if value is None else site.capacity - int(value)}
                      # strict=False: an exam without sites reads one placeholder key (MGET needs a
                      # key), whose reply has no site to go with.
                      for site, value in zip(exam.sites.values(), left, strict=False)},
        }
    return figures


async def stream_figures(app: web.Application) -> dict[str, Any]:
    """Per hold stream of the exams open for registration: length, write-behind lag and pending entries."""
    exam_ids = active_exam_ids(app[keys.CATALOGUE].catalogue)
    if not exam_ids:
        return {}
    streams = [qkeys.holds_stream(exam_id) for exam_id in exam_ids]
    async with app[keys.REDIS_PY].pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
    figures: dict[str, Any] = {}
    for index, stream in enumerate(streams):
        length, groups = replies[2 * index], replies[2 * index + 1]
        if isinstance(groups, ResponseError):  # no such stream yet: nothing held so far
            continue
        group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
        figures[stream] = {
            "length": length,
            "lag": None if group is None else group.get("lag"),
            "pending": None if group is None else group.get("pending"),
        }
    return figures


def register_seat_stats(app: web.Application) -> None:
    """Add the ``queues``, ``seats`` and ``hold_streams`` sections to the live stats."""
    stats = app[keys.STATS]
    stats.register_provider("queues", lambda: queue_figures(app))
    stats.register_provider("seats", lambda: seat_figures(app))
    stats.register_provider("hold_streams", lambda: stream_figures(app))
