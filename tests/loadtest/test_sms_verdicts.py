"""The SMS storm's verdicts on made-up figures: which 429s are the storm's, the throttles, the drain and its rate."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.sms_verdicts import (
    Drain,
    PhoneRecord,
    drain_bound_s,
    drained_at_rate,
    expected_refusal,
    mask_phone,
    refusal_kind,
    throttles_held,
)
from loadtest.summary import summarize
from tests.loadtest.test_summary import entry

pytestmark = pytest.mark.unit

CODES = "/api/v1/sms-codes"
HELD = PhoneRecord(messages=90, phones=90, too_soon=0, closest_s=None, example=None)


def too_many(**details: Any) -> dict[str, Any]:
    return {"error": {"code": "too_many_requests", "message": "…", "details": {"retry_after_s": 1, **details}}}


@pytest.mark.parametrize(("body", "kind"), [
    (too_many(rules=[], reason="sms_per_phone"), "sms_per_phone"),
    (too_many(rules=["sms-codes-global"]), "sms-codes-global"),
    (too_many(rules=["sms-codes-ip", "sms-codes-global"]), "sms-codes-global+sms-codes-ip"),
    (too_many(rules=["login-ip"]), None),  # another route's rule: not the storm's to expect
    (too_many(rules=["sms-codes-global", "login-ip"]), None),
    (too_many(rules=[]), None),
    ({"error": {"code": "overloaded", "details": {}}}, None),
    ({"expires_in": 300}, None),
    (None, None),
])
def test_the_throttle_a_429_names(body: Any, kind: str | None) -> None:
    assert refusal_kind(body) == kind


@pytest.mark.parametrize(("reason", "expected"), [
    ("sms_per_phone", True), ("sms-codes-global", True), ("sms-codes-global+sms-codes-ip", True),
    ("503 overloaded", True), ("429", False), ("site_full", False), ("sms-codes-global+login-ip", False),
])
def test_the_refusals_the_storm_expects(reason: str, expected: bool) -> None:
    assert expected_refusal(reason) is expected


def test_a_phone_is_masked() -> None:
    assert mask_phone("19912340042") == "199****0042"
    assert mask_phone("12") == "***"


def codes(accepted: int, failures: int = 0, refused: dict[str, int] | None = None) -> Any:
    """A summary of the code requests: accepted, failed and refused by reason."""
    entries = [entry(CODES, accepted + failures, failures)]
    entries += [entry(f"{CODES} (refused: {reason})", count) for reason, count in (refused or {}).items()]
    return summarize({"elapsed_s": 6.0, "entries": entries})


def test_the_throttles_held() -> None:
    verdict = throttles_held(codes(90, refused={"sms_per_phone": 20, "sms-codes-global": 35}), HELD, 60, 1)
    assert verdict.passed, verdict.text
    assert verdict.text == ("ok   sms throttles: 90 of 145 code requests accepted; refused: sms-codes-global ×35, "
                            "sms_per_phone ×20; no error; the outbox: 90 messages to 90 phones, none less than 60 s "
                            "after the phone's previous one (1 s allowed for the insert)")


def test_a_phone_with_two_codes_within_the_minute_fails() -> None:
    record = PhoneRecord(messages=91, phones=90, too_soon=1, closest_s=0.4, example="199****0042")
    verdict = throttles_held(codes(90, refused={"sms_per_phone": 20}), record, 60, 1)
    assert not verdict.passed
    assert verdict.text.startswith("FAIL sms throttles: 1 codes reached a phone less than 60 s after its previous one "
                                   "(closest 0.4 s, e.g. 199****0042)"), verdict.text


def test_errors_and_other_refusals_fail() -> None:
    verdict = throttles_held(codes(90, failures=3, refused={"sms_per_phone": 20, "429": 5}), HELD, 60, 1)
    assert not verdict.passed
    assert "3 answers were errors" in verdict.text
    assert "refused by other than the SMS throttles: 429 ×5" in verdict.text


def test_no_code_asked_for_fails() -> None:
    verdict = throttles_held(summarize({"elapsed_s": 1.0, "entries": []}), HELD, 60, 1)
    assert (verdict.passed, verdict.text) == (False, "FAIL sms throttles: no SMS code was asked for")


def drain(**changes: Any) -> Drain:
    base = Drain(rate_per_s=10, waiting=45, queued=40, bound_s=drain_bound_s(45, 10), emptied_s=4.5, left=0,
                 queued_done=40, queued_span_s=4.3, failed=0)
    return base._replace(**changes)


def test_the_bound_is_the_waiting_at_the_rate_with_slack() -> None:
    assert drain_bound_s(45, 10) == pytest.approx(45 / 10 * 1.1 + 2)
    assert drain_bound_s(0, 200) == pytest.approx(2)


def test_drained_at_the_rate() -> None:
    verdict = drained_at_rate(drain())
    assert verdict.passed, verdict.text
    assert verdict.text == ("ok   sms drain: the outbox emptied 4.5 s after the run <= 7.0 s (45 waiting when the "
                            "users stopped, at 10/s); the 40 queued then went out within 4.3 s: 9.3/s <= 10/s")


def test_a_rate_a_little_above_within_the_pacers_banked_burst_passes_and_says_so() -> None:
    verdict = drained_at_rate(drain(queued_done=42, queued_span_s=4.0))  # 10/s × (4 + 0.2) + 1 = 43 allowed
    assert verdict.passed, verdict.text
    assert verdict.text.endswith("10.5/s within 10/s and the pacer's banked 0.2 s")


def test_sent_faster_than_the_rate_fails() -> None:
    verdict = drained_at_rate(drain(queued_done=40, queued_span_s=2.0))
    assert not verdict.passed
    assert verdict.text.startswith("FAIL sms drain: the 40 queued then went out within 2.0 s: 20.0/s > 10/s ("), \
        verdict.text


def test_a_late_drain_fails_saying_how_late() -> None:
    verdict = drained_at_rate(drain(emptied_s=9.0))
    assert not verdict.passed
    assert verdict.text.startswith("FAIL sms drain: the outbox emptied 9.0 s after the run > 7.0 s (late by 2.0 s;")


def test_an_outbox_that_never_empties_fails() -> None:
    verdict = drained_at_rate(drain(emptied_s=None, left=12, queued_done=28))
    assert not verdict.passed
    assert verdict.text.startswith("FAIL sms drain: 12 messages still waiting when the watch ended (45 waiting when "
                                   "the users stopped, at 10/s, bound 7.0 s): ")
    assert "is the worker running" in verdict.text


def test_without_a_backlog_the_rate_is_not_measured() -> None:
    verdict = drained_at_rate(drain(waiting=0, queued=0, bound_s=2.0, emptied_s=0.0, queued_done=0,
                                    queued_span_s=None))
    assert verdict.passed
    assert "the send rate not measured: no message was still queued when the users stopped" in verdict.text


def test_failed_messages_are_reported() -> None:
    assert drained_at_rate(drain(failed=2)).text.endswith("; 2 failed for good (examgate sms outbox)")
