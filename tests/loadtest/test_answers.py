"""Which answers are expected refusals, and the names they are recorded under."""

from __future__ import annotations

import pytest

from loadtest import answers

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("status", "code", "retry_after", "reason"), [
    (429, "too_many_requests", "3", "429"),
    (429, "too_many_attempts", None, "429"),
    (409, "site_full", None, "site_full"),
    (503, "overloaded", "1", "503 overloaded"),
    (503, "overloaded", None, None),  # shedding always says when to come back
    (503, "service_unavailable", "30", None),  # payment keys missing, captcha pool empty: not load
    (409, "already_paid", None, None),
    (500, None, None, None),
])
def test_expected_refusals(status: int, code: str | None, retry_after: str | None, reason: str | None) -> None:
    found = answers.refusal(status, code, retry_after)
    assert (found.reason if found else None) == reason


def test_refusals_are_recorded_under_their_own_name() -> None:
    name = answers.refused_name("/api/v1/registrations/{id}/seat", "site_full")
    assert name == "/api/v1/registrations/{id}/seat (refused: site_full)"
    assert answers.split_name(name) == ("/api/v1/registrations/{id}/seat", "site_full")
    assert answers.split_name("/api/v1/registrations/{id}/seat") == ("/api/v1/registrations/{id}/seat", None)
    assert answers.backoff_s(answers.Refusal("429", 30)) == answers.BACKOFF_CAP_S
