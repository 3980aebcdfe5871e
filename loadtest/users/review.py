"""Online qualification review: candidates submit registrations in a province reviewed online; operators approve them.

Candidates enrol in the open exam in ``REVIEW_PROVINCE`` (its exam authority reviews every
registration online, without the commitment route), confirm, and wait on their registration's
page until it is approved. Operators (a fixed few, with the operator token the run hands the
workers) page the province's review queue, oldest first, and approve each page in bulk; two of
them racing for one page is expected (the later one is told ``already_decided``). The scenario's
verdict (``loadtest.verdicts.every_submission_approved``) is that every registration submitted
ended approved within the run, so candidates stop submitting ``drain_s`` before the run's end.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust import task
from locust.exception import RescheduleTask

from loadtest.locust_hooks import seconds_left
from loadtest.users.base import ExamgateUser
from loadtest.users.enrolment import EnrollingUser
from loadtest.verdicts import APPROVED_AFTER_REVIEW
from seed import EXAM_B_CODE, REVIEW_PROVINCE

REVIEW_WAIT_S = 120.0  # the longest a candidate waits for the decision before it counts as a failure
# Candidates stop submitting a quarter of the run before its end (at most 30 s), and never later than
# a submission's own course needs: sign-in to confirmation, a reviewer's round and a poll take
# about six think times, the requests about a second.
DRAIN_SHARE, DRAIN_MAX_S, DRAIN_BASE_S, DRAIN_THINKS = 0.25, 30.0, 3.0, 8
POLL_MIN_S, POLL_MAX_S = 0.2, 2.0
REVIEWERS = 2  # operator users, whatever --users says
PAGE = 100  # registrations an operator takes from the queue at once


def drain_s(duration_s: int, think_ms: int) -> float:
    """How long before the run's end candidates stop submitting, so every submission can be decided."""
    return max(DRAIN_BASE_S + DRAIN_THINKS * think_ms / 1000, min(DRAIN_MAX_S, duration_s * DRAIN_SHARE))


class ReviewCandidateUser(EnrollingUser):
    """A candidate of the online-reviewed province: enrol, confirm, wait for the reviewers' approval."""

    weight = 1

    @task
    def submit_for_review(self) -> None:
        """One candidate's registration, followed until it is approved; then the next candidate."""
        left = seconds_left(self.knobs.duration_s)
        if left is not None and left < drain_s(self.knobs.duration_s, self.knobs.think_ms):
            gevent.sleep(min(max(left, 0.0), 1.0))  # too late to be sure of a decision: wait for the end
            return
        if not self.sign_in():
            return
        try:
            self.follow_review()
        except RescheduleTask:
            self.sign_out()
            raise
        self.sign_out()

    def follow_review(self) -> None:
        """Enrol in the review province, submit, and poll the registration until it is decided."""
        exam = self.open_exam()
        self.think()
        registration_id = self.enrol(exam, REVIEW_PROVINCE)
        if registration_id is None:
            return
        self.think()
        submitted = time.perf_counter()
        status = self.submit(exam, registration_id, REVIEW_PROVINCE, expected_outcomes=False)
        while status != "approved":
            if status not in ("under_review", "onsite_review"):
                self.flow_failed(APPROVED_AFTER_REVIEW, f"the registration went {status}", submitted)
                self.abort()
            if time.perf_counter() - submitted > REVIEW_WAIT_S:
                self.flow_failed(APPROVED_AFTER_REVIEW, f"not decided within {REVIEW_WAIT_S:g} s", submitted)
                self.abort()
            gevent.sleep(min(POLL_MAX_S, max(POLL_MIN_S, self.think_s())))
            answer = self.call("GET", f"/api/v1/registrations/{registration_id}", name="/api/v1/registrations/{id}",
                               fields=("registration_id", "status", "reasons"), headers=self.headers())
            if not answer.due:
                self.abort()
            status = str(answer.body["status"])
        self.flow_done(APPROVED_AFTER_REVIEW, submitted)


def _approved_all(_: Any, body: Any) -> str | None:
    results = body.get("results")
    if not isinstance(results, dict):
        return "no results"
    wrong = {rid: r for rid, r in results.items()
             if not (r.get("result") == "approved" or (r.get("result") == "already_decided"
                                                       and r.get("status") == "approved"))}
    return None if not wrong else f"{len(wrong)} not approved, e.g. {next(iter(wrong.items()))}"


class ReviewerUser(ExamgateUser):
    """An operator of the province's exam authority working through the review queue."""

    fixed_count = REVIEWERS

    def operator_headers(self) -> dict[str, str]:
        """The operator's bearer token."""
        return {"Authorization": f"Bearer {self.knobs.operator_token}"}

    @task
    def approve_a_page(self) -> None:
        """Take the oldest page waiting for review in the province and approve it at once."""
        exam = self.exam(EXAM_B_CODE)
        listed = self.call("GET", f"/admin/api/v1/reviews?exam_id={exam['id']}&province={REVIEW_PROVINCE}"
                                  f"&limit={PAGE}", name="/admin/api/v1/reviews",
                           fields=("registrations", "next_after"), headers=self.operator_headers())
        if not listed.due:
            self.abort()
        ids = [int(item["registration_id"]) for item in listed.body["registrations"]]
        if not ids:
            return  # nothing waiting: look again after the think time
        self.call("POST", "/admin/api/v1/reviews/approve", name="/admin/api/v1/reviews/approve",
                  json_body={"registration_ids": ids}, fields=("results", "approved"), check=_approved_all,
                  headers=self.operator_headers())
