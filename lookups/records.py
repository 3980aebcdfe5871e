"""The lookup record of one registration, as PostgreSQL has it and as Redis keeps it.

One record per registration holding an admission ticket: the candidate's name, the ticket
(site, room, seat, subjects) and the scores once there are any. Redis keeps it under two
fields — by id number and by ticket number — spread over ``BUCKETS`` small hashes per exam
(``eg:lk:<exam>:<bucket>``), so a million records cost ~120 fields per hash, which Redis
stores compactly (listpack), and one lookup is one ``HGET``. The keys carry no hash tag:
on a cluster an exam's records spread over every shard.

A record also names the candidate's current photo (not a rejected one) by the first 16 hex
digits of its SHA-256: the ticket PDF is cached under a hash of everything it prints, photo
included, so a hit needs only the record, and a miss reads the photo's bytes by it
(``PHOTO_SQL``, one indexed query). 64 bits tell a candidate's few photos apart, at 19 bytes a
value instead of 67 for the whole digest (a million registrations keep two values each). The
name is the photo as of the record's writing (prewarm, or a PostgreSQL fallback's write-back),
like the rest of the record: a photo replaced afterwards (a change granted in the print window)
reaches the ticket when the exam is prewarmed again.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import NamedTuple

import orjson

BUCKETS = 16384
MODES = ("id_number", "ticket_no")


def bucket(field: str) -> int:
    """The number of the hash holding ``field`` (0 … BUCKETS - 1)."""
    return zlib.crc32(field.encode()) % BUCKETS


def bucket_key(exam_id: int, field: str) -> str:
    """The hash holding ``field`` of an exam's records."""
    return f"eg:lk:{exam_id}:{bucket(field)}"


def bucket_prefix(exam_id: int) -> str:
    """Every bucket key of the exam is this prefix and the bucket's number."""
    return f"eg:lk:{exam_id}:"


def field_name(mode: str, value: str) -> str:
    """The hash field of a record found by id number (``i:``) or ticket number (``t:``)."""
    return ("i:" if mode == "id_number" else "t:") + value


def placements(exam_id: int, id_number: str, ticket_no: str) -> list[tuple[str, str]]:
    """(hash key, field) of both places Redis keeps a record: by id number and by ticket number."""
    names = ("i:" + id_number, "t:" + ticket_no)
    return [(bucket_key(exam_id, name), name) for name in names]


def meta_key(exam_id: int) -> str:
    """Hash of what the last prewarm of the exam loaded (counts, when)."""
    return f"eg:lk:{exam_id}:meta"


def generation_key(exam_id: int) -> str:
    """The exam's record generation: a token replaced by every correction (``lookups.corrections``), so an
    answer a gateway process keeps in memory is trusted only under the generation it was read in."""
    return f"eg:lk:{exam_id}:gen"


# An advisory lock per exam's records (the two-int4 form, apart from the one-bigint locks taken elsewhere),
# held until the transaction ends: shared by a correction from its Redis writes to its COMMIT, exclusive
# by a prewarm from before its snapshot to its last write (``lookups.corrections``), in exam order.
RECORDS_LOCK_CLASS = 0x4C4B  # "LK"
_LOCK_EXAMS = (f"({RECORDS_LOCK_CLASS}, (e % 2147483647)::int)"
               " FROM (SELECT DISTINCT e FROM unnest($1::bigint[]) e ORDER BY e) x")
EXAM_LOCK_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared" + _LOCK_EXAMS
EXAM_LOCK_SQL = "SELECT pg_advisory_xact_lock" + _LOCK_EXAMS


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
    photo: str | None = None  # the current photo's SHA-256, first 16 hex digits; None: no photo


def decode(raw: bytes | str) -> Record:
    """The record of a stored value: ``[name, id_number, ticket_no, site_id, room, seat_no, [subjects], {scores},
    photo]`` (a value written before records named the photo has no ``photo``)."""
    name, id_number, ticket_no, site_id, room, seat_no, subjects, scores, *photo = orjson.loads(raw)
    return Record(name, id_number, ticket_no, site_id, room, seat_no, tuple(subjects), scores,
                  photo[0] if photo else None)


# PostgreSQL writes the stored value itself (JSON text; scores without trailing zeros, "78.5",
# "80"), so a prewarm moves text from the database to Redis without building a record in
# Python: the value is the one format, whether it reaches Redis by prewarm or by write-back.
_VALUE = """json_build_array(c.name, c.id_number, t.ticket_no, t.site_id, t.room, t.seat_no, r.subjects,
                        COALESCE(s.scores, '{}'::json), left(p.sha256, 16))::text AS value"""
_SCORES = "json_object_agg(sc.subject_code, trim_scale(sc.score)::text ORDER BY sc.subject_code)"
_FROM = """
  FROM admission_tickets t
  JOIN registrations r ON r.id = t.registration_id
  JOIN candidates c ON c.id = r.candidate_id
  LEFT JOIN photos p ON p.candidate_id = c.id AND p.current AND p.status <> 'rejected'
"""
# Every record of an exam: the scores aggregated once for the exam, joined by hash.
RECORDS_SQL = f"""
SELECT c.id_number, t.ticket_no, (s.scores IS NOT NULL) AS has_scores, {_VALUE}
{_FROM}
  LEFT JOIN (SELECT sc.registration_id, {_SCORES} AS scores
               FROM scores sc WHERE sc.exam_id = $1 GROUP BY sc.registration_id) s ON s.registration_id = r.id
 WHERE t.exam_id = $1
"""
# One record: its scores read through the registration's index.
_ONE = f"""
SELECT {_VALUE}
{_FROM}
  LEFT JOIN LATERAL (SELECT {_SCORES} AS scores FROM scores sc WHERE sc.registration_id = r.id) s ON true
"""
ONE_BY_ID_SQL = _ONE + " WHERE t.exam_id = $1 AND c.id_number = $2"
ONE_BY_TICKET_SQL = _ONE + " WHERE t.exam_id = $1 AND t.ticket_no = $2"
# The records of some registrations (a correction's: a few, or a whole exam's first scores), with the exam and
# the two fields each is kept under; the scores aggregated once (measured: 20% faster than a lateral join per
# registration for 100,000 registrations, the same for a few).
BY_REGISTRATIONS_SQL = f"""
SELECT t.exam_id, c.id_number, t.ticket_no, {_VALUE}
{_FROM}
  LEFT JOIN (SELECT sc.registration_id, {_SCORES} AS scores
               FROM scores sc WHERE sc.registration_id = ANY($1::bigint[]) GROUP BY sc.registration_id) s
         ON s.registration_id = r.id
 WHERE t.registration_id = ANY($1::bigint[])
"""
# The JPEG a record names (``Record.photo``), through the ticket: its primary key, the registration's,
# the candidate's photos (photos_candidate) for the whole digest, then the bytes by it (photo_blobs);
# the current photo first should two of the candidate's share the prefix.
PHOTO_SQL = """
SELECT b.jpeg
  FROM admission_tickets t
  JOIN registrations r ON r.id = t.registration_id
  JOIN photos p ON p.candidate_id = r.candidate_id
  JOIN photo_blobs b ON b.sha256 = p.sha256
 WHERE t.exam_id = $1 AND t.ticket_no = $2 AND left(p.sha256, 16) = $3
 ORDER BY p.current DESC, p.id DESC
 LIMIT 1
"""
