"""The seed's rows as SQL: PostgreSQL computes every seeded row from the candidate index itself.

Each query mirrors the arithmetic of ``seed.data`` (province by weighted cycle, rank within
the province, identity, seat by room), so the rows equal what the pure functions say: tests
hold the two in agreement. Every query takes ``$1``/``$2``, the first and past-the-last index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import asyncpg

from core.idcards import WEIGHTS
from seed import data as sd
from seed.exams import (
    LEVELS,
    SPECIALTIES,
    SPECIALTY_WEIGHTS,
    SiteRow,
    basic_subject_code,
    practice_subject_code,
)
from seed.names import (
    GIVEN_FEMALE,
    GIVEN_MALE,
    GIVEN_SHARED,
    MAJORS,
    PROVINCES,
    RARE_GIVEN,
    SECURITY_QUESTIONS,
    SURNAMES,
    UNIVERSITIES,
)


def _ints(values: Iterable[int]) -> str:
    return "('{" + ",".join(str(int(v)) for v in values) + "}'::int[])"


def _texts(values: Iterable[str]) -> str:
    return "(ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[])"


def _shares(shares: Iterable[int]) -> str:
    """An array mapping a percentile 0..99 to the position whose share covers it."""
    return _ints(pos for pos, share in enumerate(shares) for _ in range(share))


class DerivedTable(NamedTuple):
    """A table whose seeded rows PostgreSQL computes from the candidate index: target columns and query."""

    table: str
    columns: tuple[str, ...]
    query: str

    @property
    def insert(self) -> str:
        """The query as ``INSERT INTO table (columns) SELECT …``."""
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) {self.query}"


_L = sd.CYCLE_LEN
_CYCLE, _CYCLE_RANK = _ints(sd.CYCLE), _ints(sd.CYCLE_RANK)
_WEIGHTS = _ints(p.weight for p in PROVINCES)
_NREGIONS = _ints(len(p.regions) for p in PROVINCES)
_BASIC = _texts(basic_subject_code(code) for code, _ in LEVELS)
_PRACTICE = _texts(practice_subject_code(code, pos) for code, _ in LEVELS for pos in range(len(SPECIALTIES)))
_SUBJECT = (
    f"CASE WHEN x.ord = 0 THEN {_BASIC}[x.lvl + 1] ELSE {_PRACTICE}[x.lvl * {len(SPECIALTIES)} + x.spec + 1] END"
)


def _indexed(rows_per_index: int = 1) -> str:
    """FROM item ``x`` over indexes $1..$2-1: i, ord (0..rows_per_index-1), p (province position),
    k (rank in the province), h (32-bit hash of i), lvl (0 初级, 1 中级), spec, birth_year.

    The OFFSET 0 fences keep PostgreSQL from inlining (and so recomputing) each column at every use.
    """
    pos = f"(g.j / {rows_per_index} % {_L})::int + 1"
    birth_day = f"((k / {_NREGIONS}[p + 1]) * {sd.BIRTH_MULT} + {sd.BIRTH_ADD} + p * {sd.BIRTH_STEP}) % {sd.BIRTH_DAYS}"
    spec = _shares(SPECIALTY_WEIGHTS)
    return f"""(
    SELECT i, ord, p, k, h, CASE WHEN h / 1048576 % 10 < 4 THEN 0 ELSE 1 END AS lvl,
           {spec}[(h / 16 % {sum(SPECIALTY_WEIGHTS)})::int + 1] AS spec,
           (1965 + 4 * (bd / 1461) + least(bd % 1461 / 365, 3))::int AS birth_year
    FROM (SELECT i, ord, p, k, h, {birth_day} AS bd
          FROM (SELECT g.j / {rows_per_index} AS i, (g.j % {rows_per_index})::int AS ord, {_CYCLE}[{pos}] AS p,
                       g.j / {rows_per_index} / {_L} * {_WEIGHTS}[{_CYCLE}[{pos}] + 1] + {_CYCLE_RANK}[{pos}] AS k,
                       (g.j / {rows_per_index} * {sd.ROW_HASH_MULT} + {sd.ROW_HASH_ADD}) % 4294967296 AS h
                FROM generate_series($1::bigint * {rows_per_index}, $2::bigint * {rows_per_index} - 1) AS g(j)
                OFFSET 0) a
          OFFSET 0) b
    OFFSET 0) x"""


_ROOM_JOIN = f"JOIN seed_rooms r ON r.room_key = x.p * 100000 + x.k / {sd.SEATS_PER_ROOM}"

# $3 candidate id base, $4 registration id base, $5 exam id, $6 registration window start,
# $7 exam year. 中级 candidates have three more years of work.
REGISTRATIONS = DerivedTable(
    "registrations",
    ("id", "candidate_id", "exam_id", "province", "city", "level_code", "specialty_code", "subjects",
     "work_years", "status", "site_id", "created_at", "updated_at"),  # fmt: skip
    f"""
SELECT $4::bigint + x.i, $3::bigint + x.i, $5::bigint, r.province, r.city,
       {_texts(code for code, _ in LEVELS)}[x.lvl + 1], {_texts(code for code, _ in SPECIALTIES)}[x.spec + 1],
       ARRAY[{_BASIC}[x.lvl + 1], {_PRACTICE}[x.lvl * {len(SPECIALTIES)} + x.spec + 1]],
       greatest(0, least($7::int - x.birth_year - 20, (x.h / 320 % 15)::int + 1 + 3 * x.lvl)),
       'paid', r.site_id, $6::timestamptz + make_interval(secs => x.h / 7 % 2592000),
       $6::timestamptz + make_interval(secs => x.h / 7 % 2592000 + 600)
FROM {_indexed()}
{_ROOM_JOIN}
""",
)

# $3 registration id base, $4 exam id, $5 issue time. A ticket number is the room's
# number plus the seat; inserting in that order builds the primary key and seat key from sorted input.
TICKETS = DerivedTable(
    "admission_tickets",
    ("ticket_no", "registration_id", "exam_id", "site_id", "room", "seat_no", "issued_at"),
    f"""
SELECT (r.ticket_base + x.k % {sd.SEATS_PER_ROOM} + 1)::text, $3::bigint + x.i, $4::bigint, r.site_id, r.room,
       (x.k % {sd.SEATS_PER_ROOM} + 1)::int, $5::timestamptz
FROM {_indexed()}
{_ROOM_JOIN}
ORDER BY r.ticket_base + x.k % {sd.SEATS_PER_ROOM}
""",
)

# $3 registration id base, $4 exam id. Two rows per registration, in key order. A
# score is the sum of three uniform half-point draws: a rough bell around 78 of 140.
SCORES = DerivedTable(
    "scores",
    ("registration_id", "exam_id", "subject_code", "score"),
    f"""
SELECT $3::bigint + x.i, $4::bigint, {_SUBJECT},
       (least(v % 105 + v / 105 % 105 + v / 11025 % 105, 280) / 2.0)::numeric(5,1)
FROM (SELECT x.*, ((x.i * 2 + x.ord + 1) * 2246822519 + 3266489917) % 4294967296 AS v
      FROM {_indexed(2)} OFFSET 0) x
""",
)

_EDU_LEVELS, _EDU_SHARES = sd.EDUCATION_LEVELS, sd.EDUCATION_SHARES
_EDU_CODES = (1, 2, 5, 6, 9)  # the two "level" digits of a graduation certificate number
_GRADUATION_AGE = (29, 25, 22, 21, 18)
_MODES = ("full_time", "part_time", "self_study", "online")
_MODE_SHARES = (75, 10, 8, 7)

# $3 candidate id base, $4 education id base, $5 latest graduation year.
# Certificate numbers: school code, 1 (full-time) or 6, year, level, serial — 18 digits.
EDUCATIONS = DerivedTable(
    "educations",
    ("id", "candidate_id", "cert_no", "school", "graduated_on", "major", "level", "mode"),
    f"""
SELECT $4::bigint + e.i, $3::bigint + e.i,
       (((({_ints(int(code) for code, _ in UNIVERSITIES)}[e.u] * 10 + CASE WHEN e.m = 0 THEN 1 ELSE 6 END)::bigint
           * 10000 + e.year) * 100 + {_ints(_EDU_CODES)}[e.l + 1]) * 1000000 + e.i % 999983)::text,
       {_texts(name for _, name in UNIVERSITIES)}[e.u],
       make_date(e.year, CASE WHEN e.m = 0 THEN 6 ELSE 1 END, CASE WHEN e.m = 0 THEN 30 ELSE 10 END),
       {_texts(MAJORS)}[(e.h / {sd.MAJOR_DRAW_DIV} % {len(MAJORS)})::int + 1], {_texts(_EDU_LEVELS)}[e.l + 1],
       {_texts(_MODES)}[e.m + 1]
FROM (SELECT i, h, l, m, (h / 13 % {len(UNIVERSITIES)})::int + 1 AS u,
             least($5::int, birth_year + {_ints(_GRADUATION_AGE)}[l + 1] + CASE WHEN m = 0 THEN 0 ELSE 3 END) AS year
      FROM (SELECT x.i, x.h, x.birth_year, {_shares(_EDU_SHARES)}[(x.h / {sd.LEVEL_DRAW_DIV} % 100)::int + 1] AS l,
                   CASE WHEN x.h / {sd.LEVEL_DRAW_DIV} % 100 < {sum(_EDU_SHARES[:2])} THEN 0
                        ELSE {_shares(_MODE_SHARES)}[(x.h / 33331 % 100)::int + 1] END AS m
            FROM {_indexed()} OFFSET 0) y
      OFFSET 0) e
""",
)


def _weighted(digits: str) -> int:
    # strict=False: ``digits`` is an id's leading part (its region), so the weights run on past its end.
    return sum(int(ch) * w for ch, w in zip(digits, WEIGHTS, strict=False))


def _mix(salt: int) -> str:
    return f"((((i + {salt}) * {sd.MIX_MULT}) # ((i >> {sd.MIX_SHIFT}) * {sd.MIX_XOR})) & 4294967295)"


def _char(chars: str, position: str) -> str:
    """SQL for ``chars[position % len(chars)]`` (an array subscript: substr walks multibyte text)."""
    return f"{_texts(chars)}[(({position}) % {len(chars)})::int + 1]"


_REGIONS = [region for p in PROVINCES for region in p.regions]
_FIRST_REGION = _ints(sum(len(p.regions) for p in PROVINCES[:n]) for n in range(len(PROVINCES)))
_MALE_BOTH, _FEMALE_BOTH = GIVEN_MALE + GIVEN_SHARED, GIVEN_FEMALE + GIVEN_SHARED

# $3 candidate id base, $4 password hash, $5 security answer hash, $6 creation epoch,
# $7 birth dates as YYYYMMDD integers, $8 their weighted digit sums (seed.data.BIRTH_DATE_*).
CANDIDATES = DerivedTable(
    "candidates",
    ("id", "username", "password_hash", "name", "id_type", "id_number", "phone", "email",
     "security_question", "security_answer_hash", "created_at", "agreement_version", "agreement_accepted_at"),
    # fmt: skip
    f"""
SELECT $3::bigint + i, username, $4::text, surname || CASE WHEN (h >> 24) % 200 = 0
           THEN left(given, -1) || '[' || {_char(RARE_GIVEN, "h >> 4")} || ']' ELSE given END,
       'resident_id', id_number,
       ({13 * 10**9} + i * {sd.PHONE_STRIDE} + {_mix(sd.PHONE_SALT)} % {sd.PHONE_STRIDE})::text,
       username || '@example.com', {_texts(SECURITY_QUESTIONS)}[(i % {len(SECURITY_QUESTIONS)})::int + 1], $5::text,
       $6::timestamptz + make_interval(secs => (i * {sd.CREATED_STEP_S} % {sd.CREATED_SPAN_S})::float8), 1,
       $6::timestamptz + make_interval(secs => (i * {sd.CREATED_STEP_S} % {sd.CREATED_SPAN_S})::float8)
FROM (SELECT i, h, id_number, {_char(SURNAMES, "h >> 2")} AS surname,
             'c' || CASE WHEN i < 9999999 THEN lpad((i + 1)::text, 7, '0') ELSE (i + 1)::text END AS username,
             CASE WHEN h % 10 < 7 THEN CASE WHEN male THEN {_char(_MALE_BOTH, "h >> 8")}
                                            ELSE {_char(_FEMALE_BOTH, "h >> 8")} END ELSE '' END
             || CASE WHEN male THEN {_char(GIVEN_MALE, "h >> 16")} ELSE {_char(GIVEN_FEMALE, "h >> 16")} END AS given
      FROM (SELECT i, seq % 2 = 1 AS male, {_mix(sd.NAME_SALT)} AS h,
                   -- region, birth date and sequence, then the GB 11643 check character
                   ({_ints(int(r) for r in _REGIONS)}[ri]::bigint * 100000000000 + ($7::int[])[day + 1]::bigint * 1000
                    + seq)::text || {_char("10X98765432", f"{_ints(_weighted(r) for r in _REGIONS)}[ri]"
                    " + ($8::int[])[day + 1] + seq / 100 * 8 + seq / 10 % 10 * 4 + seq % 10 * 2")}
                   AS id_number
            FROM (SELECT i, day, {_FIRST_REGION}[p + 1] + r + 1 AS ri,
                         ((q / {sd.BIRTH_DAYS}) * {sd.SEQ_MULT} + r * 7 + day * 13) % 1000 AS seq
                  FROM (SELECT i, p, q, r,
                               (q * {sd.BIRTH_MULT} + {sd.BIRTH_ADD} + p * {sd.BIRTH_STEP}) % {sd.BIRTH_DAYS} AS day
                        FROM (SELECT x.i, x.p, x.k / {_NREGIONS}[x.p + 1] AS q, (x.k % {_NREGIONS}[x.p + 1])::int AS r
                              FROM {_indexed()} OFFSET 0) a
                        OFFSET 0) b
                  OFFSET 0) c
            OFFSET 0) d
      OFFSET 0) e
""",
)


async def create_room_map(conn: asyncpg.Connection, sites: list[SiteRow], first_site_id: int) -> None:
    """Create ``seed_rooms`` for this transaction: one row per exam-A room, keyed as the queries compute it."""
    await conn.execute("SET LOCAL work_mem = '256MB'")  # the ticket query sorts a row per candidate
    await conn.execute("SET LOCAL jit = off")  # compiling these expressions costs more than it saves
    await conn.execute(
        "CREATE TEMP TABLE seed_rooms (room_key bigint, site_id bigint, room int, ticket_base bigint,"
        " province text, city text) ON COMMIT DROP"
    )
    rows, rank, last_p = [], 0, -1
    for n, s in enumerate(sites):
        if s.province_pos != last_p:
            rank, last_p = 0, s.province_pos
        for room in range(1, s.rooms + 1):
            ticket_base = int(f"{sd.TICKET_PREFIX_A}{s.province}{s.site_no:04d}{room:03d}00")
            rows.append((s.province_pos * 100_000 + rank, first_site_id + n, room, ticket_base, s.province, s.city))
            rank += 1
    await conn.copy_records_to_table("seed_rooms", records=rows)
    await conn.execute("ANALYZE seed_rooms")
