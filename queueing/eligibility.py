"""May this registration take a seat at this site now? The rule in one place, one domain call.

1. The site is one of the exam's (``SiteNotFound``) and in the province the registration is
   for (``OtherProvince``).
2. The registration is approved (one whose hold lapsed before payment must be able to take a
   seat again), or paid (the hold script then answers: the same seat again, or ``SeatLocked``);
   cancelled and expired ones are ``RegistrationInactive``, the others (not yet confirmed, under
   review, rejected) ``NotApproved``. The status read here may be a few seconds old: the hold
   script checks the registration's seat right again, atomically (``queueing.holds``).
3. Registration is open for the exam (``core.registrations.RegistrationClosed``).
4. While the exam's waiting room runs, an admission token for this candidate and exam, not yet
   expired (``AdmissionInvalid``; the reason is logged, the candidate gets one answer for all).

Pure: no store is asked (the exam and its sites come from the in-memory catalogue, the token is
an HMAC), so the seat hold pays nothing for it but a few comparisons.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NamedTuple, Protocol

from core.catalogue import Exam, Site
from core.registrations import check_window
from queueing import admission
from queueing.errors import AdmissionInvalid, QueueingError

__all__ = ["SEAT_STATUSES", "Admission", "NotApproved", "OtherProvince", "RegistrationInactive", "SeatClaim",
           "SiteNotFound", "check_seat"]

log = logging.getLogger("examgate.admission")

SEAT_STATUSES = frozenset({"approved", "paid"})
INACTIVE_STATUSES = frozenset({"cancelled", "expired"})


class SiteNotFound(QueueingError):
    """The exam has no such site (HTTP 404 ``site_not_found``)."""

    def __init__(self, site_id: int) -> None:
        super().__init__(f"no site {site_id} in this exam")
        self.site_id = site_id


class OtherProvince(QueueingError):
    """The site is in another province than the registration's (HTTP 422, field ``site_id``)."""

    def __init__(self, site_id: int, province: str) -> None:
        super().__init__(f"site {site_id} is not in province {province}")
        self.site_id, self.province = site_id, province


class RegistrationInactive(QueueingError):
    """The registration is cancelled or expired: no seat (HTTP 409 ``registration_inactive``)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"registration is {status}")
        self.status = status


class NotApproved(QueueingError):
    """The registration is not approved (yet): no seat, no order (HTTP 409 ``not_approved``)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"registration is {status}, not approved")
        self.status = status


class SeatClaim(Protocol):
    """What the rule needs of a registration."""

    @property
    def candidate_id(self) -> int: ...
    @property
    def province(self) -> str: ...
    @property
    def status(self) -> str: ...


class Admission(NamedTuple):
    """The waiting room's say: whether it runs for the exam, its signing key, and the token the candidate sent."""

    required: bool
    key: bytes
    token: str | None


def check_seat(exam: Exam, registration: SeatClaim, site_id: int, admission_: Admission, *, now: datetime,
               now_s: float) -> Site:
    """The site, when ``registration`` may hold a seat there now; else the refusal (see the module's rules)."""
    site = exam.sites.get(site_id)
    if site is None:
        raise SiteNotFound(site_id)
    if site.province != registration.province:
        raise OtherProvince(site_id, registration.province)
    if registration.status in INACTIVE_STATUSES:
        raise RegistrationInactive(registration.status)
    if registration.status not in SEAT_STATUSES:
        raise NotApproved(registration.status)
    check_window(exam, now=now)
    if admission_.required:
        try:
            admission.check(admission_.key, admission_.token, candidate_id=registration.candidate_id,
                            exam_id=exam.id, now_s=now_s)
        except AdmissionInvalid as exc:
            log.info("admission refused for candidate %d, exam %d: %s", registration.candidate_id, exam.id,
                     exc.reason)
            raise
    return site
