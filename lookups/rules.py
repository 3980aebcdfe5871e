"""The rules of the ticket and score lookups, apart from HTTP: who may see which record, and when.

1. A query names the record by id number or by ticket number (not both), in the forms
   registration stores (``core.identity``): a lower-case ``x``, full-width digits, surrounding
   spaces and the middle-dot variants find the same record as the stored spelling.
2. Tickets are shown inside the exam's print window, scores from ``score_release_at`` on:
   ``TooEarly`` otherwise, decided from the catalogue before any store is asked.
3. The name is compared in constant time, and a wrong id, ticket number or name, or a record
   without scores, all answer ``NoRecord``: the lookup tells nothing about whose record exists.
4. A subject passes when its score reaches the subject's pass mark; ``passed_all`` when all do.
"""

from __future__ import annotations

import hmac
import unicodedata
from datetime import datetime
from typing import Any, NamedTuple

from core.catalogue import Exam
from core.identity import normalise_id_number, normalise_name
from core.timeutil import iso_local
from lookups.records import Record

__all__ = ["LookupRefused", "NoRecord", "Query", "TooEarly", "check_print_window", "check_released", "query",
           "same_name", "scores_of", "ticket_of"]


class LookupRefused(Exception):
    """Base class of the lookups' refusals."""


class NoRecord(LookupRefused):
    """No record for this id or ticket number and name (the one answer for every miss)."""


class TooEarly(LookupRefused):
    """Outside the window: ``kind`` is ``scores`` (before the release) or ``ticket`` (outside the print window)."""

    def __init__(self, kind: str, at: datetime, until: datetime | None = None) -> None:
        super().__init__(f"{kind} not available before {at.isoformat()}")
        self.kind, self.at, self.until = kind, at, until


class Query(NamedTuple):
    """A lookup's key: the exam, the name given, and the record's key (``mode`` id_number or ticket_no)."""

    exam_id: int
    name: str
    mode: str
    value: str


def query(exam_id: int, name: str, *, id_number: str | None, ticket_no: str | None) -> Query:
    """The normalised query of exactly one of ``id_number`` and ``ticket_no`` (the caller checked that)."""
    if id_number is not None:
        return Query(exam_id, normalise_name(name), "id_number", normalise_id_number(id_number))
    ticket_no = ticket_no or ""
    if not ticket_no.isascii():
        ticket_no = unicodedata.normalize("NFKC", ticket_no)  # full-width digits
    return Query(exam_id, normalise_name(name), "ticket_no", ticket_no.strip())


def check_released(exam: Exam, now: datetime) -> None:
    """Pass once the exam's scores are released; ``TooEarly`` before."""
    if now < exam.score_release_at:
        raise TooEarly("scores", exam.score_release_at)


def check_print_window(exam: Exam, now: datetime) -> None:
    """Pass inside the exam's ticket print window; ``TooEarly`` outside it."""
    if not exam.ticket_print_opens_at <= now < exam.ticket_print_closes_at:
        raise TooEarly("ticket", exam.ticket_print_opens_at, exam.ticket_print_closes_at)


def same_name(stored: str, given: str) -> bool:
    """Constant-time comparison of a stored name (normalised by registration) with a given one normalised alike."""
    return hmac.compare_digest(stored.encode(), given.encode())


def scores_of(exam: Exam, record: Record | None, name: str) -> dict[str, Any]:
    """The candidate's scores with each subject's pass mark; ``NoRecord`` for no record, another name or no scores."""
    if record is None or not same_name(record.name, name) or not record.scores:
        raise NoRecord()
    subjects = []
    for code, score in sorted(record.scores.items()):
        subject = exam.subjects.get(code)
        pass_mark = subject.pass_mark if subject else None
        subjects.append({"code": code, "name": subject.name if subject else code, "score": float(score),
                         "pass_mark": pass_mark, "passed": pass_mark is not None and float(score) >= pass_mark})
    return {"exam_id": exam.id, "name": record.name, "ticket_no": record.ticket_no, "subjects": subjects,
            "passed_all": all(subject["passed"] for subject in subjects)}


def ticket_of(exam: Exam, record: Record | None, name: str | None) -> dict[str, Any]:
    """The admission ticket as the lookup shows it; ``NoRecord`` for no record or another name (None: not compared)."""
    if record is None or (name is not None and not same_name(record.name, name)):
        raise NoRecord()
    site = exam.sites.get(record.site_id)
    subjects = []
    for code in record.subjects:
        subject = exam.subjects.get(code)
        subjects.append({"code": code, "name": subject.name if subject else code,
                         "starts_at": iso_local(subject.starts_at) if subject else None,
                         "ends_at": iso_local(subject.ends_at) if subject else None})
    return {"ticket_no": record.ticket_no, "name": record.name, "exam": {"id": exam.id, "name": exam.name},
            "site": {"name": site.name if site else None, "address": site.address if site else None},
            "room": record.room, "seat_no": record.seat_no, "subjects": subjects}
