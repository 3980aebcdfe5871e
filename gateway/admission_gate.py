"""The waiting room's gate on the seat routes: ``X-Admission-Token`` when the queue is on for the exam.

When live config enables the queue of an exam (``queue.exams{id}.enabled``), choosing a seat
needs the signed admission token the status poll handed out once the candidate was admitted,
bound to the signed-in candidate and the exam and not yet expired; anything else is 403
``admission_required``. With the queue off for the exam no token is needed. The check is pure
Python (an HMAC): no Redis round trip on the hot path.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway import keys
from queueing import admission
from queueing.errors import AdmissionInvalid

log = logging.getLogger("examgate.admission")

ADMISSION_HEADER = "X-Admission-Token"


def queue_enabled(request: web.Request, exam_id: int) -> bool:
    """True when live config runs the waiting room of ``exam_id``."""
    config = request.app[keys.LIVE].current.queue_exams.get(exam_id)
    return config is not None and config.enabled


def require_admission(request: web.Request, *, candidate_id: int, exam_id: int) -> None:
    """Pass, or raise ``AdmissionInvalid`` (403 ``admission_required``) when the exam's queue is on."""
    if not queue_enabled(request, exam_id):
        return
    try:
        admission.check(request.app[keys.ADMISSION_KEY], request.headers.get(ADMISSION_HEADER),
                        candidate_id=candidate_id, exam_id=exam_id, now_s=time.time())
    except AdmissionInvalid as exc:
        # The reason stays in logs: the candidate gets one answer for all of them.
        log.info("admission refused for candidate %d, exam %d: %s", candidate_id, exam_id, exc.reason)
        raise
