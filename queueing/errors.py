"""Errors of the waiting room and admission; the gateway maps them to HTTP in one table."""

from __future__ import annotations


class QueueingError(Exception):
    """Base class of every error raised by ``queueing``."""


class PlaceNotFound(QueueingError):
    """No place in this exam's waiting room has the ticket (HTTP 404)."""

    def __init__(self, exam_id: int) -> None:
        super().__init__(f"no such place in the waiting room of exam {exam_id}")
        self.exam_id = exam_id


class PlaceExpired(QueueingError):
    """The place was not polled within the place TTL and has been given up (HTTP 410 ``queue_place_expired``)."""

    def __init__(self, exam_id: int, candidate_id: int) -> None:
        super().__init__(f"place of candidate {candidate_id} in the waiting room of exam {exam_id} has expired")
        self.exam_id = exam_id
        self.candidate_id = candidate_id


class AdmissionExpired(PlaceExpired):
    """The place was admitted more than the admission TTL ago: its admission is over and the place given up.

    A ``PlaceExpired`` (HTTP 410 ``queue_place_expired``): the candidate joins again, at the back.
    """

    def __init__(self, exam_id: int, candidate_id: int, admitted_at_s: int) -> None:
        super().__init__(exam_id, candidate_id)
        message = (f"admission of candidate {candidate_id} to exam {exam_id} (admitted at {admitted_at_s}) "
                   f"has expired")
        self.args = (message,)
        self.admitted_at_s = admitted_at_s


class AdmissionInvalid(QueueingError):
    """An admission token is missing, malformed, forged, expired or not this candidate's for this exam (HTTP 403).

    ``reason`` is one of ``malformed``, ``signature``, ``other_candidate``, ``other_exam``, ``expired``
    (for logs and metrics; the candidate gets one answer for all).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"admission token refused: {reason}")
        self.reason = reason
