"""Score release and ticket printing: seeded candidates of the finished exam look up their records."""

from __future__ import annotations

from typing import Any

from locust import task

from loadtest.users.base import ExamgateUser
from seed import EXAM_A_CODE, lookup_keys

SCORE_FIELDS = ("exam_id", "name", "ticket_no", "subjects", "passed_all")
TICKET_FIELDS = ("ticket_no", "name", "exam", "site", "room", "seat_no", "subjects", "pdf_url")


def _ticket_is(ticket_no: str) -> Any:
    def check(_: Any, body: Any) -> str | None:
        return None if body.get("ticket_no") == ticket_no else f"another candidate's record ({body.get('ticket_no')})"

    return check


def _is_pdf(resp: Any, _: Any) -> str | None:
    content_type = (resp.headers or {}).get("Content-Type", "")
    if not content_type.startswith("application/pdf") or not (resp.content or b"").startswith(b"%PDF"):
        return f"not a PDF ({content_type or 'no content type'})"
    return None


class ScoreLookupUser(ExamgateUser):
    """A candidate refreshing the score page the hour scores are released."""

    weight = 3

    @task
    def look_up_score(self) -> None:
        """Look up the next candidate's scores, by id number or (every other one) by ticket number."""
        exam = self.exam(EXAM_A_CODE)
        index = self.next_candidate()
        keys = lookup_keys(index)
        body: dict[str, Any] = {"exam_id": exam["id"], "name": keys.name}
        if index % 2:
            body["ticket_no"] = keys.ticket_no
        else:
            body["id_number"] = keys.id_number
        self.call("POST", "/api/v1/scores/lookup", name="/api/v1/scores/lookup", fields=SCORE_FIELDS,
                  check=_ticket_is(keys.ticket_no), json_body=body, headers=self.headers(captcha=True))


class TicketPrintingUser(ExamgateUser):
    """A candidate printing the admission ticket: look it up, then download the PDF."""

    weight = 2

    @task
    def print_ticket(self) -> None:
        """Look up the next candidate's ticket and download its PDF."""
        exam = self.exam(EXAM_A_CODE)
        index = self.next_candidate()
        keys = lookup_keys(index)
        found = self.call("POST", "/api/v1/tickets/lookup", name="/api/v1/tickets/lookup", fields=TICKET_FIELDS,
                          check=_ticket_is(keys.ticket_no), headers=self.headers(captcha=True),
                          json_body={"exam_id": exam["id"], "name": keys.name, "id_number": keys.id_number})
        if not found.due:
            return
        self.think()
        self.call("GET", str(found.body["pdf_url"]), name="/api/v1/tickets/{ticket_no}.pdf", check=_is_pdf,
                  headers=self.headers())
