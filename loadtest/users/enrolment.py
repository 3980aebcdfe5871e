"""The steps from a signed-in candidate to an order in the open exam: waiting room, enrol, seat, confirm, order."""

from __future__ import annotations

import random
import time
from typing import Any, NamedTuple

import gevent

from loadtest.candidates import enrolment
from loadtest.users.base import ExamgateUser
from seed import EXAM_B_CODE

ADMISSION_WAIT_S = 120.0  # the longest a user waits in the room before it counts as a failure
SITE_TRIES = 3
PROVIDERS = ("alipay", "wechat")


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


class EnrollingUser(ExamgateUser):
    """A candidate of the open exam (DEMO-2026-B) going from sign-in to an order."""

    abstract = True

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

    def enrol(self, exam: dict[str, Any]) -> int | None:
        """Create the draft registration; None when the candidate is enrolled already (by an earlier run)."""
        assert self.index is not None
        answer = self.call("POST", "/api/v1/registrations", name="/api/v1/registrations", due=(201,),
                           fields=("registration_id", "status"), check=_status_is("draft"),
                           json_body=enrolment(self.index, exam), headers=self.headers(),
                           tolerated=("already_registered",))
        if answer.refused is not None:
            return None
        if not answer.due:
            self.abort()
        return int(answer.body["registration_id"])

    def hold_seat(self, exam: dict[str, Any], registration_id: int, admission: str | None) -> int:
        """Hold a seat at a site of the candidate's province with seats left; the site."""
        assert self.index is not None
        province = enrolment(self.index, exam)["province"]  # where the candidate enrolled
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

    def confirm(self, registration_id: int) -> None:
        """Make the registration's details final (needs the live hold)."""
        answer = self.call("POST", f"/api/v1/registrations/{registration_id}/confirm",
                           name="/api/v1/registrations/{id}/confirm", check=_status_is("confirmed"),
                           fields=("registration_id", "status", "site_id", "hold_expires_at"), headers=self.headers())
        if not answer.due:
            self.abort()

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
        """From the signed-in candidate to an open order; None when the candidate was enrolled already."""
        exam = self.open_exam()
        admission = self.admission(exam)
        self.think()
        registration_id = self.enrol(exam)
        if registration_id is None:
            return None
        self.hold_seat(exam, registration_id, admission)
        self.think()
        self.confirm(registration_id)
        self.think()
        return self.open_order(registration_id)
