"""SMS-code storm: people opening their accounts the day registration opens, each asking for the phone's code.

Each iteration is another person: a fresh mobile number, from an address of their own
(``X-Forwarded-For``), asking ``POST /api/v1/sms-codes`` for a ``register`` code (the load-test token
stands in for the captcha). The numbers are ``19`` and nine digits — the top of the range, which
seeded candidates never reach (``seed.demo``) — from a random place per run (``--phone-base``,
drawn by the master and sent to its workers), each load-generator process taking every W-th, so
neither the processes nor successive runs meet each other's numbers.

One person in four presses 重新发送 before the minute is up: that second request is due a 429
``sms_per_phone`` (a 202 would be the per-phone throttle failing, and is a failure). Together the
users may exceed the route's rules; a 429 naming ``sms-codes-global`` (or ``sms-codes-ip``) is an
expected refusal, waited out (``Retry-After``, at most 2 s) and asked again twice at most, as the
page's countdown would. Every refusal is recorded under its kind
(``/api/v1/sms-codes (refused: sms_per_phone)``); a 429 of any other kind is a failure.
"""

from __future__ import annotations

import random
import secrets
import weakref
from typing import Any

import gevent
from locust import events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest import answers
from loadtest.candidates import CandidatePool, client_address
from loadtest.sms_verdicts import PER_PHONE, refusal_kind
from loadtest.users.base import Answer, ExamgateUser

CODES = "/api/v1/sms-codes"
PHONE_PREFIX = "19"
PHONES = 10**9  # the numbers after the prefix
AGAIN_SHARE = 0.25  # people who ask again before the minute is up
AGAIN_WITHIN_S = 30.0  # at most this long after the first code (well within the minute)
RULE_RETRIES = 2  # asks again after a rule's refusal

_pools: weakref.WeakKeyDictionary[Environment, CandidatePool] = weakref.WeakKeyDictionary()


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """``--phone-base``: where this run's numbers start (the master's draw is sent to every worker)."""
    parser.add_argument("--phone-base", type=int, default=secrets.randbelow(PHONES),
                        help="first of the run's mobile numbers after the 19 prefix (default: random)")


def phone_pool(environment: Environment) -> CandidatePool:
    """This process's share of the run's numbers (one pool per process, shared by its users)."""
    pool = _pools.get(environment)
    if pool is None:
        options = environment.parsed_options
        assert options is not None  # locust parses them before any user starts
        runner = environment.runner
        workers, index = 1, 0
        if isinstance(runner, WorkerRunner):
            workers = max(1, int(getattr(options, "expect_workers", 1) or 1))
            index = max(0, runner.worker_index) % workers
        pool = _pools[environment] = CandidatePool(0, PHONES, int(options.phone_base) % PHONES, index, workers)
    return pool


def phone_number(index: int) -> str:
    """The mobile number of a person of the storm."""
    return f"{PHONE_PREFIX}{index % PHONES:09d}"


def _judged(resp: Any, body: Any) -> str | None:
    """A 202 says how long the code lasts; a 429 must be one of the SMS throttles'."""
    if resp.status_code == 202:
        ttl = body.get("expires_in") if isinstance(body, dict) else None
        return None if isinstance(ttl, int) and ttl > 0 else "HTTP 202 without expires_in"
    if refusal_kind(body) is None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        return f"HTTP 429 not an SMS code throttle: {error.get('details') if isinstance(error, dict) else body}"
    return None


def _throttled(body: Any) -> str | None:
    """The throttle a due 429 names (recorded as an expected refusal); None for a 202."""
    return refusal_kind(body) if isinstance(body, dict) and "error" in body else None


class SmsCodeUser(ExamgateUser):
    """People asking for their registration code the minute registration opens, one after another."""

    @task
    def ask_for_code(self) -> None:
        """The next person: a code for their phone, and for one in four another before the minute is up."""
        number = phone_pool(self.environment).next()
        first = self.request_code(number, again=False)
        if not first.due or first.refused is not None or random.random() >= AGAIN_SHARE:
            return
        gevent.sleep(min(self.think_s(), AGAIN_WITHIN_S))
        self.request_code(number, again=True)

    def request_code(self, number: int, *, again: bool) -> Answer:
        """Ask for a ``register`` code; after a rule's 429, wait it out and ask again (twice at most).

        The first request is due a 202 (or a 429 ``sms_per_phone``, for a number a person used lately);
        one ``again`` within the minute is due the 429 alone.
        """
        body = {"phone": phone_number(number), "purpose": "register"}
        headers = self.headers(captcha=True, extra={"X-Forwarded-For": client_address(number)})
        answer = Answer(0, None, False)
        for attempt in range(RULE_RETRIES + 1):
            answer = self.call("POST", CODES, name=CODES, due=(429,) if again else (202, 429), json_body=body,
                               headers=headers, check=_judged, outcome=_throttled)
            refused = answer.refused  # a rule's 429 is due, named by the outcome; shedding's 503 was retried
            if not answer.due or refused is None or refused.reason == PER_PHONE or attempt == RULE_RETRIES:
                break
            gevent.sleep(answers.backoff_s(answers.Refusal(refused.reason, _retry_after_s(answer.body))))
        return answer


def _retry_after_s(body: Any) -> float:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    wait = details.get("retry_after_s") if isinstance(details, dict) else None
    return float(wait) if isinstance(wait, int | float) else 1.0
