"""Demo data as pure functions of a candidate's index: who they are and where they sit exam A.

Every value is derived arithmetically from the index, so any candidate can be regenerated
without the database and uniqueness (id numbers, phones, seats, tickets) holds by construction.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import NamedTuple

from core import idcards
from seed.names import (
    GIVEN_FEMALE,
    GIVEN_MALE,
    GIVEN_SHARED,
    MAJORS,
    PROVINCES,
    RARE_GIVEN,
    SECURITY_QUESTIONS,
    SURNAMES,
)

MAX_CANDIDATES = 10_000_000
SEATS_PER_ROOM = 30
EXAM_A_CODE = "DEMO-2026-A"
EXAM_B_CODE = "DEMO-2026-B"
EXAM_FAMILY = "DEMO-ECON"  # exams.family of both: one exam over the years, as the integrity archive counts it
TICKET_PREFIX_A = "202601"  # year 2026, exam 01
CREATED_EPOCH = datetime(2025, 3, 1, tzinfo=UTC)

_FIRST_BIRTH = date(1965, 1, 1)
BIRTH_DAYS = (date(2003, 12, 31) - _FIRST_BIRTH).days + 1
# Birth day = (q · BIRTH_MULT + BIRTH_ADD + province · BIRTH_STEP) mod BIRTH_DAYS: a permutation of q.
BIRTH_MULT, BIRTH_ADD, BIRTH_STEP = 7919, 4099, 977
SEQ_MULT = 389  # coprime with 1000, so sequence numbers differ while q // BIRTH_DAYS does
# Phones: 1[3-9] and nine digits is 7·10⁹ numbers, 700 per possible candidate.
PHONE_STRIDE = 700
# _mix: a cheap 32-bit hash of the index; each use takes its own salt.
MIX_MULT, MIX_SHIFT, MIX_XOR = 2_654_435_761, 7, 40_503
NAME_SALT, PHONE_SALT = 17, 91
assert math.gcd(BIRTH_MULT, BIRTH_DAYS) == 1 and math.gcd(SEQ_MULT, 1000) == 1


def _weighted_cycle() -> tuple[tuple[int, ...], tuple[int, ...]]:
    # Smooth weighted round robin: provinces interleave, so even a small seed touches all of them.
    weights = [p.weight for p in PROVINCES]
    current = [0] * len(weights)
    order: list[int] = []
    for _ in range(sum(weights)):
        for j, w in enumerate(weights):
            current[j] += w
        best = max(range(len(weights)), key=lambda j: current[j])
        current[best] -= sum(weights)
        order.append(best)
    seen = [0] * len(weights)
    ranks = []
    for p in order:
        ranks.append(seen[p])
        seen[p] += 1
    return tuple(order), tuple(ranks)


CYCLE, CYCLE_RANK = _weighted_cycle()
CYCLE_LEN = len(CYCLE)

BIRTH_DATE_DIGITS = tuple((_FIRST_BIRTH + timedelta(days=d)).strftime("%Y%m%d") for d in range(BIRTH_DAYS))


def _weighted(digits: str, offset: int) -> int:
    # strict=False: ``digits`` is one part of an id, so the weights may run on past its end.
    return sum(int(ch) * w for ch, w in zip(digits, idcards.WEIGHTS[offset:], strict=False))


BIRTH_DATE_WEIGHTED = tuple(_weighted(s, 6) for s in BIRTH_DATE_DIGITS)  # the date's share of the check sum
_SEQ_SUM = tuple(_weighted(f"{s:03d}", 14) for s in range(1000))
_REGION_SUM = {r: _weighted(r, 0) for p in PROVINCES for r in p.regions}
_CHECK = "10X98765432"


def province_rank(index: int) -> tuple[int, int]:
    """(province position in PROVINCES, rank of this candidate among that province's candidates)."""
    turn, pos = divmod(index, CYCLE_LEN)
    p = CYCLE[pos]
    return p, turn * PROVINCES[p].weight + CYCLE_RANK[pos]


def province_count(p: int, candidates: int) -> int:
    """How many of the first ``candidates`` indexes fall in province ``p``."""
    turns, rest = divmod(candidates, CYCLE_LEN)
    return turns * PROVINCES[p].weight + CYCLE[:rest].count(p)


def resident_id(index: int) -> str:
    """The candidate's resident id: region of their province, birth 1965–2003, valid check digit."""
    p, k = province_rank(index)
    regions = PROVINCES[p].regions
    q, r = divmod(k, len(regions))
    # (q mod BIRTH_DAYS) → day is a permutation, q // BIRTH_DAYS picks the sequence: injective per region.
    day = (q * BIRTH_MULT + BIRTH_ADD + p * BIRTH_STEP) % BIRTH_DAYS
    seq = (q // BIRTH_DAYS * SEQ_MULT + r * 7 + day * 13) % 1000
    region = regions[r]
    total = _REGION_SUM[region] + BIRTH_DATE_WEIGHTED[day] + _SEQ_SUM[seq]
    return f"{region}{BIRTH_DATE_DIGITS[day]}{seq:03d}{_CHECK[total % 11]}"


def _mix(index: int, salt: int) -> int:
    return ((index + salt) * MIX_MULT ^ (index >> MIX_SHIFT) * MIX_XOR) & 0xFFFFFFFF


def person_name(index: int) -> str:
    """A Chinese name: common surname, one or two given characters (by the id's sex), rarely one in brackets."""
    male = int(resident_id(index)[16]) % 2 == 1
    h = _mix(index, NAME_SALT)
    given_pool = GIVEN_MALE if male else GIVEN_FEMALE
    first = (given_pool + GIVEN_SHARED)[(h >> 8) % (len(given_pool) + len(GIVEN_SHARED))]
    last = given_pool[(h >> 16) % len(given_pool)]
    given = first + last if h % 10 < 7 else last
    if (h >> 24) % 200 == 0:
        given = given[:-1] + f"[{RARE_GIVEN[(h >> 4) % len(RARE_GIVEN)]}]"
    return SURNAMES[(h >> 2) % len(SURNAMES)] + given


def phone(index: int) -> str:
    """A mobile number ``1[3-9]xxxxxxxxx``, increasing with the index (one per stride of 700 numbers)."""
    # Increasing in the index makes the unique index build on presorted input; the jitter hides the stride.
    n = index * PHONE_STRIDE + _mix(index, PHONE_SALT) % PHONE_STRIDE
    head, tail = divmod(n, 1_000_000_000)
    return f"1{head + 3}{tail:09d}"


SEEDED_USERNAME_PATTERN = "^c[0-9]{7,}$"  # every seeded username (``username``)


def username(index: int) -> str:
    """The seeded account name: ``c0000001`` for index 0."""
    return f"c{index + 1:07d}"


# --- exam A seating: each province fills its own sites room by room, in rank order ---


def site_rooms(p: int, j: int) -> int:
    """Rooms of the ``j``-th site of province ``p`` (12–40, so 360–1,200 seats)."""
    return 12 + (p * 7 + j * 11) % 29


@cache
def _room_starts(p: int, upto_room: int) -> tuple[int, ...]:
    starts = [0]
    while starts[-1] <= upto_room:
        starts.append(starts[-1] + site_rooms(p, len(starts) - 1))
    return tuple(starts)


def sites_needed(p: int, candidates: int) -> int:
    """Sites province ``p`` needs to seat its share of ``candidates`` (at least one)."""
    rooms = -(-province_count(p, candidates) // SEATS_PER_ROOM)
    if rooms == 0:
        return 1
    return bisect_right(_room_starts(p, rooms - 1), rooms - 1)


class Seat(NamedTuple):
    """Where a candidate sits exam A: province position, site number within the province, room, seat."""

    province: int
    site_no: int
    room: int
    seat_no: int


def seat(index: int) -> Seat:
    """The candidate's exam-A seat (site numbers start at 1 within each province)."""
    p, k = province_rank(index)
    room_global, seat_in_room = divmod(k, SEATS_PER_ROOM)
    starts = _room_starts(p, 1024 * (room_global // 1024 + 1))
    j = bisect_right(starts, room_global) - 1
    return Seat(p, j + 1, room_global - starts[j] + 1, seat_in_room + 1)


def ticket_no(index: int) -> str:
    """Exam-A admission ticket number: exam, province, site, room, seat (17 digits)."""
    s = seat(index)
    return f"{TICKET_PREFIX_A}{PROVINCES[s.province].code}{s.site_no:04d}{s.room:03d}{s.seat_no:02d}"


# --- the rest of a candidate row ---

CREATED_SPAN_S = 365 * 86_400
CREATED_STEP_S = 7_919


def email(index: int) -> str:
    """The seeded account's e-mail address (reserved example domain: nothing is ever delivered)."""
    return f"{username(index)}@example.com"


def security_question(index: int) -> str:
    """The seeded account's security question."""
    return SECURITY_QUESTIONS[index % len(SECURITY_QUESTIONS)]


def created_at(index: int) -> datetime:
    """When the seeded account was created: a deterministic moment in the year after CREATED_EPOCH."""
    return CREATED_EPOCH + timedelta(seconds=index * CREATED_STEP_S % CREATED_SPAN_S)



# --- each candidate's one education record (seed.queries.EDUCATIONS computes the same) ---

# Highest first, and each level's share of the candidates in percent.
EDUCATION_LEVELS = ("doctorate", "master", "bachelor", "college", "secondary")
EDUCATION_SHARES = (1, 12, 55, 29, 3)
# The row hash the queries draw a candidate's level, specialty and education from (not ``_mix``),
# and the divisors that pick the education's level (a percentile) and major out of it.
ROW_HASH_MULT, ROW_HASH_ADD = 2_654_435_761, 12_345
LEVEL_DRAW_DIV, MAJOR_DRAW_DIV = 331, 97
_EDUCATION_BOUNDS = tuple(sum(EDUCATION_SHARES[: n + 1]) for n in range(len(EDUCATION_SHARES)))
assert _EDUCATION_BOUNDS[-1] == 100


class Education(NamedTuple):
    """A seeded candidate's education as the automatic review reads it: level and major."""

    level: str
    major: str


def row_hash(index: int) -> int:
    """The 32-bit hash of ``index`` that ``seed.queries`` draws the candidate's rows from."""
    return (index * ROW_HASH_MULT + ROW_HASH_ADD) % 4_294_967_296


def education(index: int) -> Education:
    """The level and major of seeded candidate ``index``'s education record, without the database."""
    h = row_hash(index)
    level = EDUCATION_LEVELS[bisect_right(_EDUCATION_BOUNDS, h // LEVEL_DRAW_DIV % 100)]
    return Education(level, MAJORS[h // MAJOR_DRAW_DIV % len(MAJORS)])
