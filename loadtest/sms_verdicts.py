"""The SMS storm's verdicts: the code throttles held, and the outbox drained at the configured send rate.

``POST /api/v1/sms-codes`` refuses on purpose in two ways: 429 ``details.reason: sms_per_phone``
(a phone had a code within the minute, ``core.phone_codes``) and 429 naming the route's rules in
``details.rules`` (``sms-codes-ip`` per address, ``sms-codes-global`` in all); shedding's 503
``overloaded`` is expected under load as everywhere. The users record each under its kind
(``refusal_kind``), and the verdicts read them back from the summary:

- ``throttles_held``: no answer was an error, every refusal was one of those kinds, and the outbox
  (``PhoneRecord``, read by ``loadtest.outbox_watch``) holds no two messages to one phone less than
  the minimum interval apart;
- ``drained_at_rate``: once the users stopped, the outbox emptied within a bound computed from what
  was waiting and the configured rate (``drain_bound_s``), and the messages still queued then (none
  claimed yet, so each was sent after that moment) were not sent faster than the rate allows
  (``Drain``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from loadtest.summary import Summary
from loadtest.verdicts import Verdict, number
from messaging.pace import BURST_S

__all__ = [
    "CODES_ROW", "DRAIN_SLACK_S", "DRAIN_SLACK_SHARE", "Drain", "OVERLOADED", "PER_PHONE", "SMS_RULES", "PhoneRecord",
    "drain_bound_s", "drained_at_rate", "expected_refusal", "mask_phone", "refusal_kind", "throttles_held",
]  # fmt: skip

CODES_ROW = "POST /api/v1/sms-codes"
PER_PHONE = "sms_per_phone"
SMS_RULES = ("sms-codes-ip", "sms-codes-global")
OVERLOADED = "503 overloaded"  # shedding, as on every route (loadtest.answers)
# The outbox must be empty within what was waiting at the rate, plus this share and these seconds: the last
# batch's record, an idle worker's poll (0.25 s), the provider's answers, the watch's own polling.
DRAIN_SLACK_SHARE = 0.1
DRAIN_SLACK_S = 2.0


def refusal_kind(body: Any) -> str | None:
    """The SMS throttle a 429 body names: ``sms_per_phone``, or the SMS rules that refused joined by ``+``.

    None when the body is not a ``too_many_requests`` refusal of one of those (another rule's, or no error).
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != "too_many_requests":
        return None
    details = error.get("details")
    if not isinstance(details, dict):
        return None
    if details.get("reason") == PER_PHONE:
        return PER_PHONE
    rules = details.get("rules")
    if isinstance(rules, list) and rules and all(rule in SMS_RULES for rule in rules):
        return "+".join(sorted(rules))
    return None


def expected_refusal(reason: str) -> bool:
    """Whether a recorded refusal reason is one the storm expects."""
    if reason in (PER_PHONE, OVERLOADED):
        return True
    return all(rule in SMS_RULES for rule in reason.split("+"))


def mask_phone(phone: str) -> str:
    """A phone as a report may print it: 199****0042."""
    return phone[:3] + "****" + phone[-4:] if len(phone) == 11 else "***"


class PhoneRecord(NamedTuple):
    """The outbox's messages created during the run, per phone."""

    messages: int
    phones: int
    too_soon: int  # messages created less than the minimum interval after the phone's previous one
    closest_s: float | None  # the shortest gap between two messages to one phone (None: no phone had two)
    example: str | None  # a phone that had messages too close (masked), None when none had


def throttles_held(summary: Summary, phones: PhoneRecord, min_interval_s: float, tolerance_s: float) -> Verdict:
    """No error answered, every refusal an SMS throttle's (or shedding's), no phone sent two codes too close."""
    option = "sms throttles"
    row = next((r for r in summary.rows if r.name == CODES_ROW), None)
    if row is None or row.requests == 0:
        return Verdict(option, False, "FAIL sms throttles: no SMS code was asked for")
    accepted = row.requests - row.failures - row.refused
    refusals = ", ".join(f"{reason} ×{count:,}" for reason, count in row.reasons.most_common()) or "none"
    unexpected = {reason: count for reason, count in row.reasons.items() if not expected_refusal(reason)}
    problems = []
    if row.failures:
        problems.append(f"{row.failures:,} answers were errors (see the failures above)")
    if unexpected:
        problems.append("refused by other than the SMS throttles: "
                        + ", ".join(f"{reason} ×{count:,}" for reason, count in sorted(unexpected.items())))
    if phones.too_soon:
        closest = "-" if phones.closest_s is None else f"{phones.closest_s:.1f} s"
        problems.append(f"{phones.too_soon:,} codes reached a phone less than {number(min_interval_s)} s after its "
                        f"previous one (closest {closest}, e.g. {phones.example})")
    asked = f"{accepted:,} of {row.requests:,} code requests accepted; refused: {refusals}"
    if problems:
        return Verdict(option, False, f"FAIL sms throttles: {'; '.join(problems)} ({asked})")
    return Verdict(option, True, f"ok   sms throttles: {asked}; no error; the outbox: {phones.messages:,} messages to "
                                 f"{phones.phones:,} phones, none less than {number(min_interval_s)} s after the "
                                 f"phone's previous one ({number(tolerance_s)} s allowed for the insert)")


def drain_bound_s(waiting: int, rate_per_s: float) -> float:
    """How long the outbox may take to empty of ``waiting`` messages at ``rate_per_s``."""
    return waiting / rate_per_s * (1 + DRAIN_SLACK_SHARE) + DRAIN_SLACK_S


class Drain(NamedTuple):
    """The outbox from the moment the users had stopped until it was empty (or the watch gave up)."""

    rate_per_s: float  # the configured send rate (EXAMGATE_SMS_SEND_RATE), every worker together
    waiting: int  # messages waiting (queued or sending) at that moment
    queued: int  # of them, queued: not claimed by a worker yet, so each was sent after that moment
    bound_s: float  # drain_bound_s(waiting, rate_per_s)
    emptied_s: float | None  # seconds until no message was waiting; None: not within the watch
    left: int  # messages waiting when the watch ended (0 once emptied)
    queued_done: int  # of the queued, sent or failed for good by the end of the watch
    queued_span_s: float | None  # seconds from that moment to the last of those being recorded sent or failed
    failed: int  # of the queued, failed for good


def allowed_sends(rate_per_s: float, span_s: float) -> float:
    """The most sends a rate allows in ``span_s``: the rate, plus what the pacer banks when idle, plus one."""
    return rate_per_s * (span_s + BURST_S) + 1


def drained_at_rate(drain: Drain) -> Verdict:
    """The outbox emptied within its bound, and the messages queued at the run's end went out within the rate."""
    option = "sms drain"
    rate = f"{number(drain.rate_per_s)}/s"
    hint = ("is the worker running, the provider reachable, and EXAMGATE_SMS_SEND_RATE here the worker's? "
            "(examgate sms outbox)")
    waited = f"{drain.waiting:,} waiting when the users stopped, at {rate}"
    if drain.emptied_s is None:
        return Verdict(option, False, f"FAIL sms drain: {drain.left:,} messages still waiting when the watch ended "
                                      f"({waited}, bound {drain.bound_s:,.1f} s): {hint}")
    if drain.emptied_s > drain.bound_s:
        return Verdict(option, False, f"FAIL sms drain: the outbox emptied {drain.emptied_s:,.1f} s after the run "
                                      f"> {drain.bound_s:,.1f} s (late by {drain.emptied_s - drain.bound_s:,.1f} s; "
                                      f"{waited}): {hint}")
    emptied = f"the outbox emptied {drain.emptied_s:,.1f} s after the run <= {drain.bound_s:,.1f} s ({waited})"
    failed = f"; {drain.failed:,} failed for good (examgate sms outbox)" if drain.failed else ""
    span = drain.queued_span_s
    if not drain.queued_done or span is None or span <= 0:
        return Verdict(option, True, f"ok   sms drain: {emptied}; the send rate not measured: no message was still "
                                     f"queued when the users stopped (the storm stayed within the send rate){failed}")
    measured = drain.queued_done / span
    sent = f"the {drain.queued_done:,} queued then went out within {span:,.1f} s: {measured:,.1f}/s"
    if drain.queued_done > allowed_sends(drain.rate_per_s, span):
        return Verdict(option, False, f"FAIL sms drain: {sent} > {rate} (more than the rate allows, even with the "
                                      f"pacer's banked {number(BURST_S)} s; {hint}){failed}")
    banked = f"within {rate} and the pacer's banked {number(BURST_S)} s"
    within = f"<= {rate}" if measured <= drain.rate_per_s else banked
    return Verdict(option, True, f"ok   sms drain: {emptied}; {sent} {within}{failed}")
