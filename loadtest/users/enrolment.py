"""The steps from a signed-in candidate to an order in the open exam.

Enrol (a draft, with the review point of the candidate's city), sign the commitment when the exam
has published one and the province offers it, confirm (报名信息确认: the automatic review answers),
then — approved only — the waiting room, a seat and the order. A registration the review sends to
a person (``under_review``, ``onsite_review``) or rejects is an expected outcome, not a failure: it
is recorded as ``… (refused: under_review)`` and the iteration ends there, as the candidate's would.
"""

from __future__ import annotations

import random
import time
from typing import Any, NamedTuple

import gevent

from loadtest.candidates import enrolment, enrolment_province
from loadtest.users.base import Answer, ExamgateUser
from seed import EXAM_B_CODE, review_rule
from seed.photos import has_photo

ADMISSION_WAIT_S = 120.0  # the longest a user waits in the room before it counts as a failure
SITE_TRIES = 3
PROVIDERS = ("alipay", "wechat")
REVIEW_STATUSES = ("approved", "under_review", "onsite_review", "rejected")
# The refusals a signature may meet: a candidate in the integrity archive, a province not offering it.
SIGNATURE_REFUSALS = ("commitment_not_allowed",)


class Order(NamedTuple):
    """An order the gateway opened: what paying it needs."""

    registration_id: int
    order_no: str
    provider: str
    amount_fen: int
    pay_url: str


def _status_is(wanted: str) -> Any:
    def check(_: Any, body: Any) -> str | None:
        return None if body.get("status") == wanted else f"status {body.get('status')!r} where {wanted!r} was due"

    return check


def _reviewed(_: Any, body: Any) -> str | None:
    status = body.get("status")
    return None if status in REVIEW_STATUSES else f"status {status!r} is no outcome of the review"


def not_approved(body: Any) -> str | None:
    """The confirmation's outcome when it is not an approval (the flow to a seat ends there)."""
    status = body.get("status")
    return None if status == "approved" else str(status)


class EnrollingUser(ExamgateUser):
    """A candidate of the open exam (DEMO-2026-B) going from sign-in to an order."""

    abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commitments: dict[int, dict[str, Any] | None] = {}
        self._review_points: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def wants(self, index: int) -> bool:
        """A candidate who has uploaded the photo confirming needs (three in four seeded ones)."""
        return has_photo(index)

    def open_exam(self) -> dict[str, Any]:
        """The exam open for registration."""
        return self.exam(EXAM_B_CODE)

    def admission(self, exam: dict[str, Any]) -> str | None:
        """Join the waiting room and poll it as told until admitted; the admission token (None when the room is off)."""
        if not self.knobs.waiting_room:
            return None
        exam_id = exam["id"]
        started = time.perf_counter()
        joined = self.call("POST", f"/api/v1/exams/{exam_id}/queue", name="/api/v1/exams/{exam_id}/queue",
                           due=(202,), fields=("ticket", "position", "poll_after_s", "admitted"),
                           headers=self.headers())
        if not joined.due:
            self.abort()
        ticket = joined.body["ticket"]
        wait_s = 0.0 if joined.body["admitted"] else float(joined.body["poll_after_s"])
        while True:
            gevent.sleep(wait_s)
            polled = self.call("GET", f"/api/v1/exams/{exam_id}/queue/{ticket}",
                               name="/api/v1/exams/{exam_id}/queue/{ticket}", fields=("admitted",),
                               headers=self.headers())
            if not polled.due:
                self.abort()
            if polled.body["admitted"]:
                token = polled.body.get("admission_token")
                if not token:
                    self.flow_failed("waiting room admission", "admitted without an admission_token", started)
                    self.abort()
                return str(token)
            if time.perf_counter() - started > ADMISSION_WAIT_S:
                self.flow_failed("waiting room admission", f"not admitted within {ADMISSION_WAIT_S:g} s", started)
                self.abort()
            wait_s = float(polled.body.get("poll_after_s") or 2)

    def review_points(self, exam: dict[str, Any], province: str) -> list[dict[str, Any]]:
        """The province's review points (read once per user, as the form loads them)."""
        key = (int(exam["id"]), province)
        if key not in self._review_points:
            answer = self.call("GET", f"/api/v1/exams/{exam['id']}/review-points?province={province}",
                               name="/api/v1/exams/{exam_id}/review-points", headers=self.headers(),
                               check=lambda _, body: None if isinstance(body, list) else "not a list")
            if not answer.due:
                self.abort()
            self._review_points[key] = list(answer.body)
        return self._review_points[key]

    def enrol(self, exam: dict[str, Any], province: str | None = None) -> int | None:
        """Create the draft registration; None when the candidate is enrolled already (by an earlier run)."""
        assert self.index is not None
        points = self.review_points(exam, enrolment_province(self.index, exam, province))
        answer = self.call("POST", "/api/v1/registrations", name="/api/v1/registrations", due=(201,),
                           fields=("registration_id", "status"), check=_status_is("draft"),
                           json_body=enrolment(self.index, exam, province=province, review_points=points),
                           headers=self.headers(), tolerated=("already_registered",))
        if answer.refused is not None:
            return None
        if not answer.due:
            self.abort()
        return int(answer.body["registration_id"])

    def commitment_text(self, exam: dict[str, Any], *, again: bool = False) -> dict[str, Any] | None:
        """The exam's commitment text in force (read once per user unless ``again``); None when it has none."""
        exam_id = int(exam["id"])
        if again or exam_id not in self._commitments:
            answer = self.call("GET", f"/api/v1/exams/{exam_id}/documents/commitment",
                               name="/api/v1/exams/{exam_id}/documents/commitment", headers=self.headers(),
                               fields=("version", "title", "text", "sha256"), tolerated=("document_not_found",))
            if not answer.due and answer.refused is None:
                self.abort()
            self._commitments[exam_id] = answer.body if answer.due else None
        return self._commitments[exam_id]

    def sign_commitment(self, exam: dict[str, Any], registration_id: int) -> bool:
        """我已阅知并同意: sign the version read; False when the candidate may not (the archive, the province)."""
        for again in (False, True):
            text = self.commitment_text(exam, again=again)
            if text is None:
                return False
            answer = self.call("POST", f"/api/v1/registrations/{registration_id}/commitment",
                               name="/api/v1/registrations/{id}/commitment", json_body={"version": text["version"]},
                               fields=("registration_id", "version", "signed_at"), headers=self.headers(),
                               tolerated=(*SIGNATURE_REFUSALS, "document_version_changed"))
            if answer.due:
                return True
            if answer.refused is None:
                self.abort()
            if answer.refused.reason != "document_version_changed":  # an operator published a new text: read it
                return False
        return False

    def confirm(self, exam: dict[str, Any], registration_id: int, *, expected_outcomes: bool = True) -> Answer:
        """报名信息确认: the automatic review's answer, with its status (approved, under review, or rejected).

        A major outside the level's lists is acknowledged, as the page asks; a commitment the
        province turns out to require is signed and the confirmation sent again. With
        ``expected_outcomes`` anything but approved is recorded as the flow's expected end.
        """
        body: dict[str, Any] = {}
        for _ in range(3):
            answer = self.call("POST", f"/api/v1/registrations/{registration_id}/confirm",
                               name="/api/v1/registrations/{id}/confirm", json_body=body,
                               fields=("registration_id", "status", "reasons"), check=_reviewed,
                               headers=self.headers(), outcome=not_approved if expected_outcomes else None,
                               tolerated=("major_mismatch_unacknowledged", "commitment_required"))
            if answer.due:
                return answer
            if answer.refused is None:
                self.abort()
            elif answer.refused.reason == "major_mismatch_unacknowledged":
                body = {"acknowledge_major_mismatch": True}
            elif not self.sign_commitment(exam, registration_id):
                self.flow_failed("registration confirmed", "commitment_required, and the commitment could not be "
                                                           "signed", time.perf_counter())
                break
        self.abort()
        raise AssertionError("unreachable")

    def submit(self, exam: dict[str, Any], registration_id: int, province: str, *,
               expected_outcomes: bool = True) -> str:
        """Sign the commitment where it applies, then confirm; the review's status."""
        if review_rule(province).commitment and self.commitment_text(exam) is not None:
            self.sign_commitment(exam, registration_id)
            self.think()
        return str(self.confirm(exam, registration_id, expected_outcomes=expected_outcomes).body["status"])

    def hold_seat(self, exam: dict[str, Any], registration_id: int, admission: str | None) -> int:
        """Hold a seat at a site of the candidate's province with seats left; the site."""
        assert self.index is not None
        province = enrolment_province(self.index, exam)  # where the candidate enrolled
        listed = self.call("GET", f"/api/v1/exams/{exam['id']}/sites?province={province}",
                           name="/api/v1/exams/{exam_id}/sites", headers=self.headers(),
                           check=lambda _, body: None if isinstance(body, list) and body else "no sites listed")
        if not listed.due:
            self.abort()
        open_sites = [site for site in listed.body if site.get("available", 0) > 0] or list(listed.body)
        random.shuffle(open_sites)
        extra = {"X-Admission-Token": admission} if admission else None
        for site in open_sites[:SITE_TRIES]:
            self.think()
            held = self.call("PUT", f"/api/v1/registrations/{registration_id}/seat",
                             name="/api/v1/registrations/{id}/seat", fields=("site_id", "hold_expires_at"),
                             json_body={"site_id": site["site_id"]}, headers=self.headers(extra=extra))
            if held.due:
                return int(held.body["site_id"])
            if held.refused is None or held.refused.reason != "site_full":
                break
        self.abort()
        raise AssertionError("unreachable")

    def open_order(self, registration_id: int) -> Order:
        """Open the registration's order with a provider (every other candidate pays by WeChat Pay)."""
        assert self.index is not None
        provider = PROVIDERS[self.index % len(PROVIDERS)]
        answer = self.call("POST", f"/api/v1/registrations/{registration_id}/orders",
                           name="/api/v1/registrations/{id}/orders", due=(201, 200),
                           fields=("order_no", "provider", "amount_fen", "pay_url", "expires_at"),
                           json_body={"provider": provider}, headers=self.headers())
        if not answer.due:
            self.abort()
        body = answer.body
        return Order(registration_id, str(body["order_no"]), str(body["provider"]), int(body["amount_fen"]),
                     str(body["pay_url"]))

    def enrol_to_order(self) -> Order | None:
        """From the signed-in candidate to an open order; None when enrolled already or not approved."""
        assert self.index is not None
        exam = self.open_exam()
        self.think()
        registration_id = self.enrol(exam)
        if registration_id is None:
            return None
        self.think()
        if self.submit(exam, registration_id, enrolment_province(self.index, exam)) != "approved":
            return None
        admission = self.admission(exam)
        self.think()
        self.hold_seat(exam, registration_id, admission)
        self.think()
        return self.open_order(registration_id)
