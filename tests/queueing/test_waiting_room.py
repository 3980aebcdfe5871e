"""The waiting room against real Redis: idempotent joins, the draw at the opening, FIFO after it,
a rate-bound serving counter, expired places skipped, status numbers, and each room_*.lua script."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.redis import AutoPipeline
from core.scripts import Script, load_scripts
from queueing import keys, waiting_room
from queueing.errors import AdmissionExpired, PlaceExpired, PlaceNotFound
from queueing.waiting_room import advance, join, stats, status

EXAM = 42
T0 = 1_800_000_000.0  # a fixed "now" (epoch seconds) for tests that drive the clock
TTL_S = 3600
# room_advance.lua's KEYS, in its order: meta, tix, draw, order, cand, adm, trail.
ADVANCE_KEYS = tuple(keys.room_keys(EXAM)[i] for i in (0, 2, 3, 4, 1, 5, 6))


@pytest.fixture
async def pipelines(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[list[AutoPipeline]]:
    """Four AutoPipelines on the flushed test database: four gateway processes."""
    clients = [AutoPipeline(redis_url, connections=2, timeout_ms=5000) for _ in range(4)]
    try:
        yield clients
    finally:
        await asyncio.gather(*(client.close() for client in clients))


@pytest.fixture
def pipeline(pipelines: list[AutoPipeline]) -> AutoPipeline:
    """One of them."""
    return pipelines[0]


@pytest.fixture
def scripts() -> dict[str, Script]:
    """The room scripts, by name."""
    return {name: s for name, s in load_scripts("queueing").items() if name.startswith("room_")}


@pytest.fixture
def advance_lua(scripts: dict[str, Script]) -> Script:
    """room_advance.lua (its KEYS are ADVANCE_KEYS)."""
    return scripts["room_advance"]


def spearman(xs: list[int], ys: list[int]) -> float:
    """Spearman's rank correlation of two lists of distinct values."""
    n = len(xs)
    rank_x = {v: i for i, v in enumerate(sorted(xs))}
    rank_y = {v: i for i, v in enumerate(sorted(ys))}
    d2 = sum((rank_x[x] - rank_y[y]) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


async def join_open(
    client: AutoPipeline, candidate_id: int, now_s: float = T0, ttl_s: int = TTL_S
) -> waiting_room.Place:
    """Join a room that opened a second before T0."""
    return await join(client, EXAM, candidate_id, opens_at_s=T0 - 1, place_ttl_s=ttl_s, now_s=now_s)


# -- scripts, one integration test each ---------------------------------------------------------------


def test_every_room_script_has_its_header(scripts: dict[str, Script]) -> None:
    assert set(scripts) == {"room_join", "room_status", "room_advance"}
    for script in scripts.values():
        header = "\n".join(line for line in script.source.splitlines() if line.startswith("--"))
        assert "KEYS[1]" in header and "ARGV[1]" in header and "Returns" in header, script.name


async def test_room_join_lua_draw_then_fifo(scripts: dict[str, Script], redis: aioredis.Redis) -> None:
    join_lua = scripts["room_join"]
    room = keys.room_keys(EXAM)[:5]
    meta, cand, tix, draw, order = room
    opens_ms = int(T0 * 1000)

    before = await join_lua.run(redis, room, [7, "t" * 22, 12345, opens_ms, opens_ms - 5000, 60_000])
    assert before[:6] == [b"t" * 22, 0, 0, 1, opens_ms, opens_ms - 5000]
    assert await redis.zscore(draw, "t" * 22) == 12345
    assert await redis.hget(tix, "t" * 22) == f"7:0:{opens_ms - 5000}".encode()
    assert await redis.hget(cand, "7") == b"t" * 22
    assert await redis.hget(meta, "opened") is None

    again = await join_lua.run(redis, room, [7, "u" * 22, 999, opens_ms, opens_ms - 4000, 60_000])
    assert again[:2] == [b"t" * 22, 0] and await redis.zcard(draw) == 1

    after = await join_lua.run(redis, room, [8, "v" * 22, 1, opens_ms, opens_ms, 60_000])
    assert after[:4] == [b"v" * 22, 2, 0, 1]  # the draw froze at size 1; FIFO continues at 2
    assert await redis.hmget(meta, "opened", "tail", "serving", "ttl_ms") == [b"1", b"2", b"0", b"60000"]
    assert await redis.hget(order, "2") == b"v" * 22
    assert await redis.zcard(draw) == 1
    # The drawn place learns its position when seen after the opening.
    seen = await join_lua.run(redis, room, [7, "w" * 22, 1, opens_ms, opens_ms + 10, 60_000])
    assert seen[:2] == [b"t" * 22, 1]
    assert await redis.hget(tix, "t" * 22) == f"7:1:{opens_ms + 10}".encode()


async def test_room_status_lua_marks_seen_and_expires(scripts: dict[str, Script], redis: aioredis.Redis) -> None:
    status_lua = scripts["room_status"]
    meta, _, tix, draw, _, adm, _ = keys.room_keys(EXAM)
    lua_keys = (meta, tix, draw, adm)
    await redis.hset(meta, mapping={"opens_at": 1000, "opened": 0, "tail": 3, "serving": 1, "ttl_ms": 30_000,
                                    "admit": "2.5"})  # fmt: skip
    await redis.hset(tix, mapping={"a" * 22: "5:3:100000", "b" * 22: "6:2:0"})

    assert await status_lua.run(redis, lua_keys, ["x" * 22, 110_000, ""]) == [0]
    reply = await status_lua.run(redis, lua_keys, ["a" * 22, 110_000, ""])
    assert reply == [1, b"5", 3, 1, 0, 1000, 110_000, b"", b"2.5", 30_000, 0]
    assert await redis.hget(tix, "a" * 22) == b"5:3:110000"
    assert await status_lua.run(redis, lua_keys, ["b" * 22, 110_000, ""]) == [-1, b"6"]
    # Not seen for more than ttl_ms: expired, and it stays expired.
    assert await status_lua.run(redis, lua_keys, ["a" * 22, 140_001, ""]) == [-1, b"5"]
    assert await redis.hget(tix, "a" * 22) == b"5:3:0"
    assert await status_lua.run(redis, lua_keys, ["a" * 22, 140_002, ""]) == [-1, b"5"]
    assert await redis.hlen(adm) == 0  # neither was ever admitted


async def test_room_status_lua_records_the_admission_once(scripts: dict[str, Script], redis: aioredis.Redis) -> None:
    status_lua = scripts["room_status"]
    meta, _, tix, draw, _, adm, _ = keys.room_keys(EXAM)
    lua_keys = (meta, tix, draw, adm)
    await redis.hset(meta, mapping={"opens_at": 1000, "opened": 0, "tail": 3, "serving": 2, "ttl_ms": 120_000})
    await redis.hset(tix, mapping={"a" * 22: "5:2:100000", "c" * 22: "7:3:100000"})

    assert (await status_lua.run(redis, lua_keys, ["c" * 22, 100_100, "60000"]))[-1] == 0  # not admitted yet
    first = await status_lua.run(redis, lua_keys, ["a" * 22, 100_700, "60000"])
    assert first[0] == 1 and first[-1] == 100_000  # whole seconds
    assert await redis.hget(adm, "a" * 22) == b"100000"
    again = await status_lua.run(redis, lua_keys, ["a" * 22, 150_000, "60000"])
    assert again[0] == 1 and again[-1] == 100_000  # polling again does not renew it
    assert (await status_lua.run(redis, lua_keys, ["a" * 22, 159_999, "60000"]))[:1] == [1]
    # From admitted_at + the admission TTL on: expired, the place given up, and it stays so.
    assert await status_lua.run(redis, lua_keys, ["a" * 22, 160_000, "60000"]) == [-2, b"5", 100_000]
    assert await redis.hget(tix, "a" * 22) == b"5:2:0"
    assert await status_lua.run(redis, lua_keys, ["a" * 22, 160_001, "60000"]) == [-2, b"5", 100_000]
    # Without an admission TTL an admission never lapses (the place still does, unpolled).
    await redis.hset(tix, "a" * 22, "5:2:200000")
    assert (await status_lua.run(redis, lua_keys, ["a" * 22, 200_001, ""]))[-1] == 100_000


async def test_room_advance_lua_spends_elapsed_time_on_live_places(
    advance_lua: Script, redis: aioredis.Redis
) -> None:
    meta, _, tix, draw, order, _, trail = keys.room_keys(EXAM)
    nothing = await advance_lua.run(redis, ADVANCE_KEYS, ["10", 5000, 100, 30_000, ""])
    assert nothing == [0, 0, 0, 0, 0]  # nothing to open

    # Two drawn places (ranks give positions 1, 2) and three FIFO places; position 2 and 4 are dead.
    await redis.zadd(draw, {"p1" * 11: 1, "p2" * 11: 2})
    await redis.hset(order, mapping={3: "p3" * 11, 4: "p4" * 11, 5: "p5" * 11})
    await redis.hset(tix, mapping={"p1" * 11: "1:0:9000", "p2" * 11: "2:0:100", "p3" * 11: "3:3:9000",
                                   "p4" * 11: "4:4:0", "p5" * 11: "5:5:9000"})  # fmt: skip
    await redis.hset(meta, mapping={"opens_at": 8000, "ttl_ms": 5000})

    assert await advance_lua.run(redis, ADVANCE_KEYS, ["1", 8000, 100, 30_000]) == [0, 0, 0, 2, 1]  # opens, no time yet
    await redis.hset(meta, "tail", 5)  # (as three joins after the opening would have)
    # 2.5 s at 1/s: two admissions (positions 1 and 3), position 2 skipped; half an admission carried.
    assert await advance_lua.run(redis, ADVANCE_KEYS, ["1", 10_500, 100, 30_000]) == [3, 2, 1, 5, 1]
    assert await redis.hget(tix, "p2" * 11) == b"2:2:0"  # marked expired
    assert float(await redis.hget(meta, "credit")) == pytest.approx(0.5)
    assert await advance_lua.run(redis, ADVANCE_KEYS, ["1", 10_500, 100, 30_000]) == [3, 0, 0, 5, 1]  # no time, no-op
    # 0.5 s more: the carried half makes one; position 4 (dead) is passed over for free.
    assert await advance_lua.run(redis, ADVANCE_KEYS, ["1", 11_000, 100, 30_000]) == [5, 1, 1, 5, 1]
    # Nobody is waiting: the time is not banked.
    assert await advance_lua.run(redis, ADVANCE_KEYS, ["1", 60_000, 100, 30_000]) == [5, 0, 0, 5, 1]
    assert float(await redis.hget(meta, "credit")) == 0
    assert await redis.exists(trail) == 0  # without keep_ms nothing is remembered for forgetting


async def test_room_advance_lua_forgets_places_passed_keep_ms_ago(
    advance_lua: Script, redis: aioredis.Redis
) -> None:
    meta, cand, tix, draw, order, adm, trail = keys.room_keys(EXAM)
    # One drawn place (position 1) and four FIFO places; candidate 3 came back and holds a new place (5).
    await redis.zadd(draw, {"p1" * 11: 1})
    await redis.hset(order, mapping={2: "p2" * 11, 3: "p3" * 11, 4: "p4" * 11, 5: "p5" * 11})
    await redis.hset(tix, mapping={"p1" * 11: "1:0:9000", "p2" * 11: "2:2:9000", "p3" * 11: "3:3:0",
                                   "p4" * 11: "4:4:9000", "p5" * 11: "3:5:9000"})  # fmt: skip
    await redis.hset(cand, mapping={"1": "p1" * 11, "2": "p2" * 11, "3": "p5" * 11, "4": "p4" * 11})
    await redis.hset(adm, mapping={"p1" * 11: 9000, "p2" * 11: 9000})
    await redis.hset(meta, mapping={"opens_at": 8000, "opened": 1, "tail": 5, "serving": 0, "last_ms": 8000,
                                    "credit": 0, "ttl_ms": 5000})  # fmt: skip
    args = ["1", 0, 100, 30_000, "10000"]

    # Positions 1..2 admitted at 10.0 s, 3 (dead) and 4 passed at 10.5 s: one trail entry a second.
    args[1] = 10_000
    assert (await advance_lua.run(redis, ADVANCE_KEYS, args))[:3] == [2, 2, 0]
    args[0], args[1] = "2", 10_500
    assert (await advance_lua.run(redis, ADVANCE_KEYS, args))[:3] == [4, 1, 1]
    assert await redis.lrange(trail, 0, -1) == [b"4:10000"]
    args[0], args[1] = "1", 19_999  # not yet keep_ms after: nothing forgotten; position 5 (lapsed) passed
    assert (await advance_lua.run(redis, ADVANCE_KEYS, args))[:3] == [5, 0, 1]
    assert await redis.hlen(tix) == 5 and await redis.hget(meta, "pruned") == b"0"

    args[1] = 20_000
    await advance_lua.run(redis, ADVANCE_KEYS, args)
    # Position 5 was passed at 20 s and is kept; 1..4 are forgotten, with their admissions and positions.
    assert await redis.hkeys(tix) == [b"p5" * 11]
    assert await redis.hlen(adm) == 0
    assert await redis.hkeys(order) == [b"5"]
    # A candidate entry goes with its place, unless it names a newer one (candidate 3's does).
    assert await redis.hgetall(cand) == {b"3": b"p5" * 11}
    assert await redis.zcard(draw) == 1  # drawn positions are ranks: the draw is kept
    assert await redis.hget(meta, "pruned") == b"4"
    assert await redis.lrange(trail, 0, -1) == [b"5:19999"]


async def test_room_advance_lua_forgets_at_most_max_scan_places_a_call(
    advance_lua: Script, redis: aioredis.Redis
) -> None:
    meta, _, tix, _, order, _, trail = keys.room_keys(EXAM)
    n = 700
    await redis.hset(order, mapping={q: f"t{q:021d}" for q in range(1, n + 1)})
    await redis.hset(tix, mapping={f"t{q:021d}": f"{q}:{q}:0" for q in range(1, n + 1)})
    await redis.hset(meta, mapping={"opens_at": 0, "opened": 0, "tail": n, "serving": 0, "last_ms": 0,
                                    "credit": 0, "ttl_ms": 5000})  # fmt: skip
    assert (await advance_lua.run(redis, ADVANCE_KEYS, ["1", 1000, 1000, 30_000, "1000"]))[:3] == [n, 0, n]
    await advance_lua.run(redis, ADVANCE_KEYS, ["1", 2000, 300, 30_000, "1000"])
    assert await redis.hlen(tix) == n - 300 and await redis.hlen(order) == n - 300
    await advance_lua.run(redis, ADVANCE_KEYS, ["1", 3000, 300, 30_000, "1000"])
    await advance_lua.run(redis, ADVANCE_KEYS, ["1", 4000, 300, 30_000, "1000"])
    assert await redis.hlen(tix) == 0 and await redis.exists(order, trail) == 0


# -- joining ------------------------------------------------------------------------------------------


async def test_concurrent_joins_of_one_candidate_give_one_place(
    pipelines: list[AutoPipeline], redis: aioredis.Redis
) -> None:
    places = await asyncio.gather(*(join_open(pipelines[i % 4], 1001) for i in range(200)))
    assert {(p.ticket, p.position) for p in places} == {(places[0].ticket, 1)}
    assert await redis.hlen(keys.room_tickets(EXAM)) == 1
    assert await redis.hget(keys.room_meta(EXAM), "tail") == b"1"


async def test_concurrent_early_joins_of_one_candidate_give_one_draw_entry(
    pipelines: list[AutoPipeline], redis: aioredis.Redis
) -> None:
    places = await asyncio.gather(*(
        join(pipelines[i % 4], EXAM, 1001, opens_at_s=T0 + 60, place_ttl_s=TTL_S, now_s=T0) for i in range(200)
    ))  # fmt: skip
    assert {(p.ticket, p.position) for p in places} == {(places[0].ticket, 0)}
    assert await redis.zcard(keys.room_draw(EXAM)) == 1
    later = await join(pipelines[0], EXAM, 1001, opens_at_s=T0 + 60, place_ttl_s=TTL_S, now_s=T0 + 61)
    assert (later.ticket, later.position) == (places[0].ticket, 1)


async def test_tickets_are_random_and_url_safe(pipeline: AutoPipeline) -> None:
    tickets = {(await join_open(pipeline, c)).ticket for c in range(1, 51)}
    assert len(tickets) == 50
    for ticket in tickets:
        assert len(ticket) == 22 and ticket.replace("-", "").replace("_", "").isalnum()


async def test_early_joiners_are_drawn_in_random_order_and_later_joiners_are_fifo(
    pipelines: list[AutoPipeline], redis: aioredis.Redis
) -> None:
    opens_at = T0 + 600
    n = 2000
    tickets: dict[int, str] = {}
    for start in range(0, n, 250):  # in join order, batch by batch
        batch = range(start + 1, start + 251)
        places = await asyncio.gather(*(
            join(pipelines[c % 4], EXAM, c, opens_at_s=opens_at, place_ttl_s=TTL_S, now_s=T0 + c / 10)
            for c in batch
        ))  # fmt: skip
        assert all(p.position == 0 for p in places)
        tickets.update((c, p.ticket) for c, p in zip(batch, places, strict=True))

    late = [await join(pipelines[0], EXAM, n + k, opens_at_s=opens_at, place_ttl_s=TTL_S, now_s=opens_at + k)
            for k in range(1, 101)]  # fmt: skip
    assert [p.position for p in late] == list(range(n + 1, n + 101))

    # 5 s at 100/s after the opening (the first late join opened the room): 500 admitted.
    assert (await advance(pipelines[0], EXAM, admit_per_s=100, now_s=opens_at + 6)).serving == 500
    drawn = await asyncio.gather(*(
        status(pipelines[c % 4], EXAM, tickets[c], now_s=opens_at + 10) for c in range(1, n + 1)
    ))  # fmt: skip
    positions = [s.position for s in drawn]
    assert sorted(positions) == list(range(1, n + 1))
    # Join order and drawn order are independent: |rho| is ~0.022 (one sigma) for n = 2000.
    assert abs(spearman(list(range(1, n + 1)), positions)) < 0.1
    # Admitted are exactly the first 500 drawn, and they are not the first 500 to join (~125 expected).
    admitted = [c for c, s in zip(range(1, n + 1), drawn, strict=True) if s.admitted]
    assert admitted == [c for c, pos in zip(range(1, n + 1), positions, strict=True) if pos <= 500]
    assert sum(c <= 500 for c in admitted) < 200

    # The late joiners come after every drawn place, in their join order.
    assert (await advance(pipelines[0], EXAM, admit_per_s=100, now_s=opens_at + 21, max_scan=2000)).serving == n
    for k, place in enumerate(late, start=1):
        result = await advance(pipelines[0], EXAM, admit_per_s=100, now_s=opens_at + 21 + k / 100)
        assert result.serving == n + k
        assert (await status(pipelines[0], EXAM, place.ticket, now_s=opens_at + 22)).admitted
        if k < len(late):
            assert not (await status(pipelines[0], EXAM, late[k].ticket, now_s=opens_at + 22)).admitted


async def test_admission_follows_positions(pipeline: AutoPipeline) -> None:
    places = [await join_open(pipeline, c) for c in range(1, 31)]
    result = await advance(pipeline, EXAM, admit_per_s=12, now_s=T0 + 1)
    assert result == waiting_room.Advance(serving=12, admitted=12, skipped=0, waiting=18, opened=True)
    statuses = [await status(pipeline, EXAM, p.ticket, now_s=T0 + 1) for p in places]
    assert [s.admitted for s in statuses] == [True] * 12 + [False] * 18


async def test_opening_happens_once_under_a_race(pipelines: list[AutoPipeline], redis: aioredis.Redis) -> None:
    opens_at = T0 + 10
    early = await asyncio.gather(*(
        join(pipelines[c % 4], EXAM, c, opens_at_s=opens_at, place_ttl_s=TTL_S, now_s=T0) for c in range(1, 301)
    ))  # fmt: skip
    at_opening = opens_at + 0.001
    joins = [join(pipelines[c % 4], EXAM, c, opens_at_s=opens_at, place_ttl_s=TTL_S, now_s=at_opening)
             for c in range(301, 351)]  # fmt: skip
    advances = [advance(pipelines[i % 4], EXAM, admit_per_s=5, now_s=at_opening) for i in range(50)]
    polls = [status(pipelines[i % 4], EXAM, early[i].ticket, now_s=at_opening) for i in range(50)]
    results = await asyncio.gather(*joins, *advances, *polls)

    assert sorted(p.position for p in results[:50]) == list(range(301, 351))
    assert await redis.hget(keys.room_meta(EXAM), "opened") == b"300"
    assert {s.position for s in results[100:]} <= set(range(1, 301))
    assert len({s.position for s in results[100:]}) == 50


# -- serving --------------------------------------------------------------------------------------------


async def test_advance_is_rate_bound_however_often_and_by_how_many(pipelines: list[AutoPipeline]) -> None:
    for start in range(1, 1001, 200):
        await asyncio.gather(*(join_open(pipelines[c % 4], c) for c in range(start, start + 200)))

    async def worker(client: AutoPipeline, seed: int) -> None:
        rng = random.Random(seed)
        times = [*sorted(T0 + rng.uniform(0, 10) for _ in range(300)), T0 + 10]
        for now_s in times:
            await advance(client, EXAM, admit_per_s=37.5, now_s=now_s)

    await asyncio.gather(*(worker(pipelines[i % 4], i) for i in range(12)))
    assert 374 <= (await stats(pipelines[0], EXAM)).serving <= 375  # 10 s × 37.5/s, not a place more


async def test_advance_on_the_redis_clock_is_rate_bound(pipelines: list[AutoPipeline], redis: aioredis.Redis) -> None:
    await asyncio.gather(*(join(pipelines[c % 4], EXAM, c, opens_at_s=0, place_ttl_s=TTL_S) for c in range(1, 1001)))
    opened_ms = int(await redis.hget(keys.room_meta(EXAM), "last_ms"))

    async def hammer(client: AutoPipeline) -> None:
        for _ in range(100):
            await advance(client, EXAM, admit_per_s=200)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(hammer(pipelines[i % 4]) for i in range(8)))
    seconds, micros = await redis.time()
    elapsed_s = (seconds * 1000 + micros // 1000 - opened_ms) / 1000
    serving = (await stats(pipelines[0], EXAM)).serving
    assert 0 < serving <= 200 * elapsed_s + 1


async def test_admit_rate_can_change_live(pipeline: AutoPipeline) -> None:
    for c in range(1, 301):
        await join_open(pipeline, c)
    for second in range(1, 6):
        await advance(pipeline, EXAM, admit_per_s=10, now_s=T0 + second)
    assert (await stats(pipeline, EXAM)).serving == 50
    await advance(pipeline, EXAM, admit_per_s=100, now_s=T0 + 6)
    assert (await stats(pipeline, EXAM)).serving == 150


async def test_idle_time_is_not_banked(pipeline: AutoPipeline) -> None:
    await join_open(pipeline, 1)
    await advance(pipeline, EXAM, admit_per_s=10, now_s=T0 + 100)  # one admitted, 99 s of nobody waiting
    for c in range(2, 502):
        await join_open(pipeline, c, now_s=T0 + 100)
    result = await advance(pipeline, EXAM, admit_per_s=10, now_s=T0 + 101)
    assert (result.serving, result.admitted) == (11, 10)


async def test_advance_before_the_opening_does_nothing(pipeline: AutoPipeline) -> None:
    await join(pipeline, EXAM, 1, opens_at_s=T0 + 60, place_ttl_s=TTL_S, now_s=T0)
    assert await advance(pipeline, EXAM, admit_per_s=10, now_s=T0 + 30) == waiting_room.Advance(0, 0, 0, 0, False)
    assert not (await stats(pipeline, EXAM)).opened
    with pytest.raises(ValueError):
        await advance(pipeline, EXAM, admit_per_s=0, now_s=T0)


async def test_a_long_dead_stretch_is_crossed_over_several_calls(pipeline: AutoPipeline) -> None:
    for c in range(1, 101):
        await join_open(pipeline, c, ttl_s=30)
    live = await join_open(pipeline, 101, now_s=T0 + 50, ttl_s=30)
    first = await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 60, max_scan=40)
    assert (first.serving, first.admitted, first.skipped) == (40, 0, 40)
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 60.1, max_scan=40)
    third = await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 60.2, max_scan=40)
    assert (third.serving, third.admitted) == (101, 1)  # the owed admission was carried to the live place
    assert (await status(pipeline, EXAM, live.ticket, now_s=T0 + 61)).admitted


# -- expiry ---------------------------------------------------------------------------------------------


async def test_expired_places_are_skipped_and_their_polls_refused(pipeline: AutoPipeline) -> None:
    places = [await join_open(pipeline, c, ttl_s=30) for c in range(1, 101)]  # positions 1..100
    for place in places[1::2]:  # even positions keep polling
        await status(pipeline, EXAM, place.ticket, now_s=T0 + 25)
    await advance(pipeline, EXAM, admit_per_s=0.001, now_s=T0 + 30.5)  # nothing owed yet
    result = await advance(pipeline, EXAM, admit_per_s=25, now_s=T0 + 31.5)

    # 25 live places admitted (positions 2, 4, …, 50), the 25 dead ones among them passed over.
    assert (result.serving, result.admitted, result.skipped) == (50, 25, 25)
    with pytest.raises(PlaceExpired) as caught:
        await status(pipeline, EXAM, places[0].ticket, now_s=T0 + 32)
    assert caught.value.candidate_id == 1 and caught.value.exam_id == EXAM
    assert (await status(pipeline, EXAM, places[1].ticket, now_s=T0 + 32)).admitted
    ahead = await status(pipeline, EXAM, places[51].ticket, now_s=T0 + 32)
    assert (ahead.position, ahead.admitted, ahead.ahead) == (52, False, 1)
    # Beyond serving, a place not seen within the TTL is expired at its own poll, for good.
    with pytest.raises(PlaceExpired):
        await status(pipeline, EXAM, places[50].ticket, now_s=T0 + 32)
    with pytest.raises(PlaceExpired):
        await status(pipeline, EXAM, places[50].ticket, now_s=T0 + 32.5)

    # Joining again gives a new place at the back; the old ticket stays expired.
    again = await join_open(pipeline, 1, now_s=T0 + 33, ttl_s=30)
    assert again.ticket != places[0].ticket and again.position == 101
    with pytest.raises(PlaceExpired):
        await status(pipeline, EXAM, places[0].ticket, now_s=T0 + 33)


async def test_an_admission_runs_from_the_first_admitted_poll_and_is_never_renewed(
    pipelines: list[AutoPipeline],
) -> None:
    pipeline = pipelines[0]
    place = await join_open(pipeline, 1, ttl_s=60)
    await join_open(pipeline, 2, ttl_s=60)
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 1)  # serving 1: candidate 1 is admitted
    # Polls racing from several connections, at moments seconds apart: one admission time, the first poll's.
    polls = await asyncio.gather(*(status(pipelines[k % 4], EXAM, place.ticket, now_s=T0 + 1.2 + k / 10,
                                          admission_ttl_s=300) for k in range(40)))  # fmt: skip
    recorded = {poll.admitted_at_s for poll in polls}
    assert len(recorded) == 1
    (at,) = recorded
    assert at is not None and T0 + 1 <= at <= T0 + 5
    # Polling (and joining) again, within the place TTL, keeps the admission time: what is left shrinks.
    for k in range(0, 6):
        again = await join_open(pipeline, 1, now_s=T0 + 50 * k + 5.2, ttl_s=60)
        assert again.ticket == place.ticket and again.admitted
        later = await status(pipeline, EXAM, place.ticket, now_s=T0 + 50 * k + 5.5, admission_ttl_s=300)
        assert later.admitted and later.admitted_at_s == at
        assert later.admission_left_s == math.ceil(at + 300 - (T0 + 50 * k + 5.5))
    # From admitted_at + 300 s on the admission is over and the place given up, for good.
    with pytest.raises(AdmissionExpired) as caught:
        await status(pipeline, EXAM, place.ticket, now_s=at + 300, admission_ttl_s=300)
    assert isinstance(caught.value, PlaceExpired)
    assert (caught.value.candidate_id, caught.value.admitted_at_s) == (1, at)
    with pytest.raises(AdmissionExpired):
        await status(pipeline, EXAM, place.ticket, now_s=at + 301, admission_ttl_s=300)
    # Joining again gives a new place at the back, admitted only when served again.
    rejoined = await join_open(pipeline, 1, now_s=at + 302, ttl_s=60)
    assert rejoined.ticket != place.ticket and rejoined.position == 3 and not rejoined.admitted
    fresh = await status(pipeline, EXAM, rejoined.ticket, now_s=at + 303, admission_ttl_s=300)
    assert not fresh.admitted and fresh.admitted_at_s is None and fresh.admission_left_s is None


async def test_a_room_forgets_passed_places_and_stays_the_size_of_its_queue(
    pipeline: AutoPipeline, redis: aioredis.Redis
) -> None:
    place_ttl_s, admission_ttl_s = 30, 60
    keep_s = waiting_room.keep_for(place_ttl_s, admission_ttl_s)
    assert keep_s == 120
    sizes = []
    for minute in range(10):
        # Each minute 50 candidates come back (their old places lapsed) and are served; none polls again.
        now = T0 + 60 * minute
        for c in range(1, 51):
            await join_open(pipeline, c, now_s=now, ttl_s=place_ttl_s)
        for k in range(1, 7):
            await advance(pipeline, EXAM, admit_per_s=50, now_s=now + 5 * k, keep_s=keep_s)
        sizes.append(await redis.hlen(keys.room_tickets(EXAM)))
    # The places passed in the last keep_s (two minutes), no more however long it runs.
    assert sizes == [50] + [100] * 9
    assert await redis.hlen(keys.room_order(EXAM)) == 100
    assert await redis.hlen(keys.room_candidates(EXAM)) == 50


async def test_a_forgotten_place_is_unknown_and_its_candidate_joins_again(pipeline: AutoPipeline) -> None:
    keep_s = waiting_room.keep_for(30, 60)
    place = await join_open(pipeline, 1, ttl_s=30)
    await join_open(pipeline, 2, ttl_s=30)
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 1, keep_s=keep_s)  # position 1 passed at T0 + 1
    polled = await status(pipeline, EXAM, place.ticket, now_s=T0 + 29, admission_ttl_s=60)
    assert polled.admitted and polled.admitted_at_s == T0 + 29
    # Kept as long as a poll could still find it admitted, then expired, then forgotten.
    assert (await status(pipeline, EXAM, place.ticket, now_s=T0 + 58, admission_ttl_s=60)).admitted
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 120, keep_s=keep_s)
    with pytest.raises(AdmissionExpired):
        await status(pipeline, EXAM, place.ticket, now_s=T0 + 120.5, admission_ttl_s=60)
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 121, keep_s=keep_s)
    with pytest.raises(PlaceNotFound):
        await status(pipeline, EXAM, place.ticket, now_s=T0 + 121.5, admission_ttl_s=60)
    again = await join_open(pipeline, 1, now_s=T0 + 122, ttl_s=30)
    assert again.ticket != place.ticket and again.position == 3


async def test_a_polled_place_stays_alive(pipeline: AutoPipeline) -> None:
    place = await join_open(pipeline, 1, ttl_s=30)
    for k in range(1, 10):
        await status(pipeline, EXAM, place.ticket, now_s=T0 + 20 * k)
    assert (await status(pipeline, EXAM, place.ticket, now_s=T0 + 200)).position == 1


async def test_an_early_place_that_lapsed_before_the_opening_is_seen_again(pipeline: AutoPipeline) -> None:
    first = await join(pipeline, EXAM, 1, opens_at_s=T0 + 600, place_ttl_s=30, now_s=T0)
    with pytest.raises(PlaceExpired):
        await status(pipeline, EXAM, first.ticket, now_s=T0 + 100)
    again = await join(pipeline, EXAM, 1, opens_at_s=T0 + 600, place_ttl_s=30, now_s=T0 + 101)
    assert (again.ticket, again.position) == (first.ticket, 0)
    assert (await status(pipeline, EXAM, first.ticket, now_s=T0 + 110)).position == 0


async def test_unknown_and_malformed_tickets(pipeline: AutoPipeline) -> None:
    await join_open(pipeline, 1)
    for ticket in ("A" * 22, "short", "!" * 22, "", None):
        with pytest.raises(PlaceNotFound):
            await status(pipeline, EXAM, ticket, now_s=T0)  # type: ignore[arg-type]
    with pytest.raises(PlaceNotFound):  # a ticket of another exam's room
        await status(pipeline, EXAM + 1, (await join_open(pipeline, 2)).ticket, now_s=T0)


# -- numbers --------------------------------------------------------------------------------------------


async def test_status_numbers_before_a_measurement(pipeline: AutoPipeline) -> None:
    places = [await join_open(pipeline, c, ttl_s=120) for c in range(1, 1001)]
    near = await status(pipeline, EXAM, places[4].ticket, now_s=T0 + 1, admit_per_s=10)
    assert near == waiting_room.Status(5, 0, 4, 1, 2, False, 5)
    mid = await status(pipeline, EXAM, places[499].ticket, now_s=T0 + 1, admit_per_s=10)
    assert (mid.ahead, mid.eta_s, mid.poll_after_s) == (499, 50, 5)
    far = await status(pipeline, EXAM, places[999].ticket, now_s=T0 + 1, admit_per_s=2)
    assert (far.ahead, far.eta_s, far.poll_after_s) == (999, 500, 40)  # 50 s capped at a third of the TTL
    default = await status(pipeline, EXAM, places[999].ticket, now_s=T0 + 1)  # no rate at all: 1/s
    assert default.eta_s == 1000


async def test_status_uses_the_measured_rate(pipeline: AutoPipeline) -> None:
    places = [await join_open(pipeline, c) for c in range(1, 2001)]
    for step in range(1, 241):  # two minutes at 8/s, a call every half second
        await advance(pipeline, EXAM, admit_per_s=8, now_s=T0 + step / 2)
    room = await stats(pipeline, EXAM)
    assert room.serving == 960 and room.rate_per_s == pytest.approx(8, rel=0.02)
    later = await status(pipeline, EXAM, places[1959].ticket, now_s=T0 + 121, admit_per_s=1000)
    assert later.ahead == 999 and later.eta_s == pytest.approx(125, abs=3)
    assert (await status(pipeline, EXAM, places[0].ticket, now_s=T0 + 121)).poll_after_s == 0


async def test_measured_rate_counts_dead_places_passed(pipeline: AutoPipeline) -> None:
    for c in range(1, 3001):
        await join_open(pipeline, c, ttl_s=10)  # all dead by T0 + 11
    await advance(pipeline, EXAM, admit_per_s=5, now_s=T0 + 11)
    for step in range(12, 60):
        await advance(pipeline, EXAM, admit_per_s=5, now_s=T0 + step, max_scan=50)
    assert (await stats(pipeline, EXAM)).rate_per_s > 20  # passing 50 dead places a second, not 5


async def test_status_before_the_opening(pipeline: AutoPipeline) -> None:
    opens_at = T0 + 100
    for c in range(1, 11):
        await join(pipeline, EXAM, c, opens_at_s=opens_at, place_ttl_s=120, now_s=T0)
    place = await join(pipeline, EXAM, 11, opens_at_s=opens_at, place_ttl_s=120, now_s=T0 + 90)
    assert (place.position, place.ahead, place.eta_s, place.admitted) == (0, 10, 10, False)
    assert 10 <= place.poll_after_s <= 15
    far = await status(pipeline, EXAM, place.ticket, now_s=T0)
    assert far.position == 0 and far.eta_s == 100 and far.poll_after_s == 40  # a third of the TTL


async def test_stats_and_clear(pipeline: AutoPipeline, redis: aioredis.Redis) -> None:
    assert await stats(pipeline, EXAM) == waiting_room.RoomStats(False, 0, 0, 0, 0, None)
    for c in range(1, 4):
        await join(pipeline, EXAM, c, opens_at_s=T0 + 1, place_ttl_s=TTL_S, now_s=T0)
    await join(pipeline, EXAM, 4, opens_at_s=T0 + 1, place_ttl_s=TTL_S, now_s=T0 + 1)
    await advance(pipeline, EXAM, admit_per_s=1, now_s=T0 + 2)
    room = await stats(redis, EXAM)  # works on redis-py too
    assert (room.opened, room.drawn, room.tail, room.serving, room.waiting) == (True, 3, 4, 1, 3)
    assert await waiting_room.clear(pipeline, EXAM) == 5
    assert await redis.dbsize() == 0
