"""The lookup record of one registration, as PostgreSQL has it and as Redis keeps it.

One record per registration holding an admission ticket: the candidate's name, the ticket
(site, room, seat, subjects) and the scores once there are any. Redis keeps it under two
fields — by id number and by ticket number — spread over ``BUCKETS`` small hashes per exam
(``eg:lk:<exam>:<bucket>``), so a million records cost ~120 fields per hash, which Redis
stores compactly (listpack), and one lookup is one ``HGET``. The keys carry no hash tag:
on a cluster an exam's records spread over every shard.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

BUCKETS = 16384
MODES = ("id_number", "ticket_no")


def bucket_key(exam_id: int, field: str) -> str:
    """The hash holding ``field`` of an exam's records."""
    return f"eg:lk:{exam_id}:{zlib.crc32(field.encode()) % BUCKETS}"


def field_name(mode: str, value: str) -> str:
    """The hash field of a record found by id number (``i:``) or ticket number (``t:``)."""
    return ("i:" if mode == "id_number" else "t:") + value


def placements(exam_id: int, record: "Record") -> list[tuple[str, str]]:
    """(hash key, field) of both places Redis keeps ``record``: by id number and by ticket number."""
    names = (field_name("id_number", record.id_number), field_name("ticket_no", record.ticket_no))
    return [(bucket_key(exam_id, name), name) for name in names]


def meta_key(exam_id: int) -> str:
    """Hash of what the last prewarm of the exam loaded (counts, when)."""
    return f"eg:lk:{exam_id}:meta"


class Record(NamedTuple):
    """What a ticket or score lookup answers from, besides the exam catalogue."""

    name: str
    id_number: str
    ticket_no: str
    site_id: int
    room: int
    seat_no: int
    subjects: tuple[str, ...]
    scores: Mapping[str, str]  # subject code → score as text ("78.5"); empty before scores exist


def encode(record: Record) -> bytes:
    """The compact JSON Redis keeps."""
    return orjson.dumps([record.name, record.id_number, record.ticket_no, record.site_id, record.room,
                         record.seat_no, list(record.subjects), dict(record.scores)])


def decode(raw: bytes) -> Record:
    """The record of ``encode``'s bytes."""
    name, id_number, ticket_no, site_id, room, seat_no, subjects, scores = orjson.loads(raw)
    return Record(name, id_number, ticket_no, site_id, room, seat_no, tuple(subjects), scores)


def _score_text(value: Decimal | float | str) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def from_row(row: Mapping[str, Any]) -> Record:
    """A record from a row of ``RECORDS_SQL`` / ``ONE_SQL``."""
    codes = row["score_codes"] or []
    values = row["score_values"] or []
    return Record(row["name"], row["id_number"], row["ticket_no"], row["site_id"], row["room"], row["seat_no"],
                  tuple(row["subjects"]), {code: _score_text(v) for code, v in zip(codes, values)})


_SELECT = """
SELECT c.name, c.id_number, t.ticket_no, t.site_id, t.room, t.seat_no, r.subjects,
       s.codes AS score_codes, s.values AS score_values
  FROM admission_tickets t
  JOIN registrations r ON r.id = t.registration_id
  JOIN candidates c ON c.id = r.candidate_id
  LEFT JOIN LATERAL (SELECT array_agg(sc.subject_code ORDER BY sc.subject_code) AS codes,
                            array_agg(sc.score ORDER BY sc.subject_code) AS values
                       FROM scores sc WHERE sc.registration_id = r.id) s ON true
"""
RECORDS_SQL = _SELECT + " WHERE t.exam_id = $1"
ONE_BY_ID_SQL = _SELECT + " WHERE t.exam_id = $1 AND c.id_number = $2"
ONE_BY_TICKET_SQL = _SELECT + " WHERE t.exam_id = $1 AND t.ticket_no = $2"
