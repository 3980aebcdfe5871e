"""The base of every load user: its options, its share of seeded candidates, and a request that judges the answer.

``ExamgateUser.call`` sends one request and sorts its answer three ways: due (the status the
contract promises, with the fields it promises), an expected refusal (recorded under its own
name, see ``loadtest.answers``; retried after the back-off when the step allows), or a failure
("HTTP 409 already_paid where 200 was due", "HTTP 200 without pay_url"). A due answer may still
end the flow as expected (a registration sent to review instead of approved): the step's
``outcome`` names it, and it is recorded under its own name like a refusal. A failed step ends the
user's iteration (``RescheduleTask``); the next one starts with the next candidate.
"""

from __future__ import annotations

import json
import random
import time
import weakref
from collections.abc import Callable, Collection
from typing import Any, NamedTuple, NoReturn

import gevent
from locust import FastHttpUser
from locust.env import Environment
from locust.exception import RescheduleTask
from locust.runners import WorkerRunner

from loadtest import answers
from loadtest.answers import FLOW
from loadtest.candidates import CandidatePool, client_address
from seed import candidate_credentials

LOADTEST_HEADER = "X-Loadtest-Token"

_pools: weakref.WeakKeyDictionary[Environment, CandidatePool] = weakref.WeakKeyDictionary()


CANDIDATE_DRAWS = 64  # how many of its share a user looks through for a candidate it wants


class Knobs(NamedTuple):
    """The run's options a user reads (Locust's parsed options, sent by the master to every worker)."""

    loadtest_token: str
    think_ms: int
    waiting_room: bool
    keys_dir: str
    alipay_app_id: str
    wechat_app_id: str
    wechat_mch_id: str
    operator_token: str = ""
    duration_s: int = 0  # 0: not told

    @classmethod
    def of(cls, environment: Environment) -> Knobs:
        """The knobs of ``environment``'s run."""
        options = environment.parsed_options
        assert options is not None  # locust parses them before any user starts
        return cls(options.loadtest_token, int(options.think_ms), options.waiting_room == "on", options.keys_dir,
                   options.alipay_app_id, options.wechat_app_id, options.wechat_mch_id, options.operator_token,
                   int(options.duration_s))


def candidate_pool(environment: Environment) -> CandidatePool:
    """This process's share of the seeded candidates (one pool per process, shared by its users)."""
    pool = _pools.get(environment)
    if pool is None:
        options = environment.parsed_options
        assert options is not None  # locust parses them before any user starts
        runner = environment.runner
        workers, index = 1, 0
        if isinstance(runner, WorkerRunner):
            workers = max(1, int(getattr(options, "expect_workers", 1) or 1))
            index = max(0, runner.worker_index) % workers
        pool = _pools[environment] = CandidatePool(int(options.first_candidate), int(options.candidates),
                                                   int(options.candidate_offset), index, workers)
    return pool


class Answer(NamedTuple):
    """What a step got: the status, the decoded JSON body (None if not JSON), and how it was judged."""

    status: int
    body: Any
    due: bool
    refused: answers.Refusal | None = None
    text: str = ""


class ExamgateUser(FastHttpUser):
    """A candidate's browser (or a provider's notifier): paces itself and judges every answer."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.knobs = Knobs.of(environment)
        self.index: int | None = None
        self.session: str | None = None
        self._exams: dict[str, dict[str, Any]] | None = None

    def wait_time(self) -> float:
        """The pause between two iterations: a think time."""
        return self.think_s()

    def think_s(self) -> float:
        """A think time around ``--think-ms``."""
        return self.knobs.think_ms / 1000 * random.uniform(0.5, 1.5)

    def think(self) -> None:
        """Pause as a candidate reading the page would."""
        gevent.sleep(self.think_s())

    def wants(self, index: int) -> bool:
        """Whether this user plays seeded candidate ``index`` (every one, unless a user needs some)."""
        return True

    def next_candidate(self) -> int:
        """Move on to the next seeded candidate of this process's share that ``wants`` takes."""
        pool = candidate_pool(self.environment)
        index = pool.next()
        for _ in range(CANDIDATE_DRAWS):  # bounded: a share without any such candidate takes what it drew
            if self.wants(index):
                break
            index = pool.next()
        self.index = index
        self.session = None
        return self.index

    def headers(self, *, captcha: bool = False, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The candidate's headers: their own address, their session, the load-test token where captcha guards."""
        headers = dict(extra or {})
        if self.index is not None:
            headers["X-Forwarded-For"] = client_address(self.index)
        if self.session is not None:
            headers["Authorization"] = f"Bearer {self.session}"
        if captcha:
            headers[LOADTEST_HEADER] = self.knobs.loadtest_token
        return headers

    def call(self, method: str, path: str, *, name: str, due: Collection[int] = (200,), fields: Collection[str] = (),
             json_body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None,
             check: Callable[[Any, Any], str | None] | None = None, tolerated: Collection[str] = (),
             outcome: Callable[[Any], str | None] | None = None, retries: int = 2) -> Answer:
        """One step: send, judge, retry expected refusals up to ``retries`` times after their back-off.

        ``fields`` must be in a due JSON body; ``check(response, body)`` may name any other problem;
        ``tolerated`` error codes count as expected refusals for this step only; ``outcome(body)`` names
        a due answer that ends the flow as expected (then ``refused`` carries that name).
        """
        answer = Answer(0, None, False)
        for attempt in range(retries + 1):
            answer = self._once(method, path, name, due, fields, json_body, data, headers, check, tolerated, outcome)
            refused = answer.refused
            if answer.due or refused is None or refused.reason == "site_full" or refused.reason in tolerated \
                    or attempt == retries:
                break
            gevent.sleep(answers.backoff_s(refused))
        return answer

    def _once(self, method: str, path: str, name: str, due: Collection[int], fields: Collection[str],
              json_body: Any, data: bytes | None, headers: dict[str, str] | None,
              check: Callable[[Any, Any], str | None] | None, tolerated: Collection[str],
              outcome: Callable[[Any], str | None] | None) -> Answer:
        # locust documents bytes for ``data`` (they are sent as they are) but annotates only str or dict.
        with self.client.request(method, path, name=name, json=json_body, data=data,  # type: ignore[arg-type]
                                 headers=headers or {}, catch_response=True) as resp:
            status = resp.status_code or 0
            answered = resp.headers or {}
            text = ""
            body: Any = None
            content_type = answered.get("Content-Type", "") if status else ""
            if content_type.startswith("application/json") and resp.content:
                try:
                    body = json.loads(resp.content)
                except ValueError:
                    resp.failure(f"HTTP {status} with a body that is not JSON")
                    return Answer(status, None, False)
            elif content_type.startswith("text/"):
                text = resp.text or ""
            if status == 0:
                resp.failure(f"no answer: {getattr(resp, 'error', None) or 'connection failed'}")
                return Answer(0, None, False)
            if status in due:
                missing = [f for f in fields if not isinstance(body, dict) or f not in body]
                problem = f"HTTP {status} without {', '.join(missing)}" if missing else None
                if problem is None and check is not None:
                    problem = check(resp, body)
                if problem is not None:
                    resp.failure(problem)
                    return Answer(status, body, False, text=text)
                ended = outcome(body) if outcome is not None else None
                if ended is not None:
                    resp.request_meta["name"] = answers.refused_name(name, ended)
                resp.success()
                return Answer(status, body, True, None if ended is None else answers.Refusal(ended, 0.0), text)
            code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(
                body.get("error"), dict) else None
            refused = answers.refusal(status, code, answered.get("Retry-After"))
            if refused is None and code in tolerated:
                refused = answers.Refusal(str(code), 0.0)
            if refused is not None:
                resp.request_meta["name"] = answers.refused_name(name, refused.reason)
                resp.success()
                return Answer(status, body, False, refused, text)
            wanted = " or ".join(str(s) for s in sorted(due))
            resp.failure(f"HTTP {status} {code or text[:40] or ''}".rstrip() + f" where {wanted} was due")
            return Answer(status, body, False, text=text)

    def flow_failed(self, name: str, message: str, started: float) -> None:
        """Record a failure that is no single request's (a payment never settled, a place never admitted)."""
        self.environment.events.request.fire(
            request_type=FLOW, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=RuntimeError(message), context={})

    def flow_done(self, name: str, started: float) -> None:
        """Record a flow that reached its end (a registration approved after review), timed from ``started``."""
        self.environment.events.request.fire(
            request_type=FLOW, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=None, context={})

    @staticmethod
    def abort() -> NoReturn:
        """End this iteration: the step failed or was refused for good."""
        raise RescheduleTask()

    def exams(self) -> dict[str, dict[str, Any]]:
        """The exam catalogue by code (fetched once per user, as a page load would)."""
        if self._exams is None:
            answer = self.call("GET", "/api/v1/exams", name="/api/v1/exams", headers=self.headers())
            if not answer.due or not isinstance(answer.body, list):
                self.abort()
            self._exams = {exam["code"]: exam for exam in answer.body}
        return self._exams

    def exam(self, code: str) -> dict[str, Any]:
        """The exam with ``code``; a failure when the gateway does not have it."""
        exam = self.exams().get(code)
        if exam is None:
            self.flow_failed("exam in the catalogue", f"no exam {code}: seed the demo data", time.perf_counter())
            self.abort()
        assert exam is not None
        return exam

    def sign_in(self) -> bool:
        """Sign in as the next candidate; False when refused (the iteration then ends)."""
        index = self.next_candidate()
        credentials = candidate_credentials(index)
        answer = self.call("POST", "/api/v1/sessions", name="/api/v1/sessions", due=(201,),
                           fields=("token", "expires_in"), headers=self.headers(captcha=True),
                           json_body={"username": credentials.username, "password": credentials.password})
        if not answer.due:
            return False
        self.session = str(answer.body["token"])
        return True

    def sign_out(self) -> None:
        """End the session (204)."""
        if self.session is None:
            return
        self.call("DELETE", "/api/v1/sessions/current", name="/api/v1/sessions/current", due=(204,),
                  headers=self.headers())
        self.session = None
