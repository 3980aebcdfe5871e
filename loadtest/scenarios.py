"""The load-test scenarios: each a locustfile under ``loadtest/locustfiles/`` and what it needs to run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from loadtest.summary import Summary
from loadtest.verdicts import Verdict, every_submission_approved
from loadtest.watch import RunWatch

LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"


class Scenario(NamedTuple):
    """A peak rehearsed by one locustfile."""

    name: str
    locustfile: Path
    about: str
    payment_keys: bool = False  # signs provider notifications itself (the keys directory must be readable)
    waiting_room: bool = False  # goes through the waiting room of the open exam (turned on for the run)
    holds_seats: bool = False  # enrols candidates in the open exam, holds seats and opens orders
    operators: bool = False  # has operator users: the run hands them its operator token
    checks: tuple[Callable[[Summary], Verdict], ...] = ()  # the scenario's own verdicts on the figures
    watch: Callable[[], RunWatch] | None = None  # observes the system around the run; verdicts of its own


def _sms_outbox() -> RunWatch:
    from loadtest.outbox_watch import OutboxWatch

    return OutboxWatch.from_settings()


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("login-storm", LOCUSTFILES / "login_storm.py",
             "sign in, read the profile, sign out; again with the next candidate"),
    Scenario("registration-opening", LOCUSTFILES / "registration_opening.py",
             "enrol, sign the commitment, confirm (the automatic review), waiting room, poll, hold a seat, order, "
             "pay at the simulator, poll until paid", waiting_room=True, holds_seats=True),
    Scenario("payment-flood", LOCUSTFILES / "payment_flood.py",
             "open orders, then post signed provider notifications for them, each resent as providers do",
             payment_keys=True, holds_seats=True),
    Scenario("score-release", LOCUSTFILES / "score_release.py",
             "look up the finished exam's scores by id number or ticket number"),
    Scenario("ticket-printing", LOCUSTFILES / "ticket_printing.py",
             "look up the admission ticket, then download its PDF"),
    Scenario("mixed-peak", LOCUSTFILES / "mixed_peak.py",
             "all of the above at once, weighted as on a registration day",
             payment_keys=True, waiting_room=True, holds_seats=True),
    Scenario("review", LOCUSTFILES / "review.py",
             "candidates submit registrations in a province reviewed online; operators page the review queue and "
             "approve in bulk; every submission must end approved", operators=True,
             checks=(every_submission_approved,)),
    Scenario("photo-upload", LOCUSTFILES / "photo_upload.py",
             "sign in, upload the registration photo (a 1-2 MP camera JPEG drawn per user), see it and its link, "
             "sign out; again with the next candidate"),
    Scenario("sms-storm", LOCUSTFILES / "sms_storm.py",
             "ask for a registration code for a fresh phone, one in four again within the minute (refused); no phone "
             "gets two codes within the minute, and the outbox drains at EXAMGATE_SMS_SEND_RATE", watch=_sms_outbox),
)}
