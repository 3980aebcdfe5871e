"""The limiter: every rule matching a request decided in one Redis round trip, with local fallbacks.

Order of a check: rules in mode ``off`` dropped → the local denial cache (a subject
refused until a known time is refused again without asking Redis) → the breaker → the
request joins this event-loop tick's batch, and one ``gcra.lua`` call within the time budget
decides the whole batch, each request atomically and in arrival order → on failure, each
rule's ``on_redis_error``. Batching is what makes the limiter cheap at peak: one script call,
one clock read and one write per hot key for a tick's requests instead of one per request
(measured: ~30 µs of Redis per 3-rule request alone, a few µs batched).
Per-rule constants (key prefix, script arguments, local bucket, denial cache) live in a
plan cached by rule identity, so the hot path only builds the key and the argument list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal, NamedTuple

from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis import AutoPipeline
from core.scripts import load_scripts, preload
from ratelimit import local
from ratelimit.breaker import Breaker
from ratelimit.errors import LimiterUnavailable, RateLimited, RateLimitError
from ratelimit.headers import policy_quota

# Every limiter key carries the tag of PREFIX: on a cluster the batch's script goes to that slot's node.
from ratelimit.keys import PREFIX, encode_subject, rule_prefix
from ratelimit.rules import Rule

Source = Literal["redis", "denial_cache", "fallback_open", "fallback_closed", "fallback_local", "none"]
COUNTERS = (
    "checks", "denied", "redis_calls", "redis_errors", "redis_timeouts", "breaker_open",
    "denial_cache_hits", "shadow_denials", "fallback_open", "fallback_closed", "fallback_local",
)


class RuleState(NamedTuple):
    """One rule's answer for the request, with what the RateLimit headers need."""

    rule_id: str
    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    quota: int
    window_s: int
    enforced: bool


class Verdict(NamedTuple):
    """The limiter's answer; ``unavailable`` means answer 503 (Redis down, a rule fails closed), not 429."""

    allowed: bool
    retry_after_s: float
    states: tuple[RuleState, ...]
    shadow_denied: tuple[str, ...]
    source: Source
    unavailable: bool = False

    def refusal(self) -> RateLimitError | None:
        """The error to raise for a refused request (``LimiterUnavailable`` → 503, ``RateLimited`` → 429), else None."""
        if self.allowed:
            return None
        return LimiterUnavailable(self) if self.unavailable else RateLimited(self)


@dataclass(frozen=True)
class LimiterSettings:
    """Tuning of one process's limiter."""

    budget_ms: int = 75
    processes: int = 1
    breaker_failures: int = 5
    breaker_cooldown_s: float = 2.0
    unavailable_retry_after_s: float = 2.0
    denial_cache_entries: int = 10_000
    local_entries: int = 10_000
    ttl_pad_ms: int = 1_000
    max_plans: int = 1_024
    # Keys per script call: a bound on the script's run time (and on Lua's unpack of KEYS).
    max_batch_keys: int = 768
    # Longest a batch waits for the one in flight (only reached when Redis is slow).
    cork_ms: float = 2.0

    def __post_init__(self) -> None:
        if min(self.budget_ms, self.processes, self.denial_cache_entries, self.max_plans, self.max_batch_keys) < 1:
            raise ValueError(
                "budget_ms, processes, denial_cache_entries, max_plans and max_batch_keys must be positive"
            )


_NOTHING = Verdict(True, 0.0, (), (), "none")
_COUNTS = {n: f"${len(str(n))}\r\n{n}\r\n" for n in range(1, 17)}


def bulk_strings(values: Sequence[object]) -> str:
    """RESP bulk strings of ASCII values (key names and numbers here always are)."""
    return "".join(f"${len(text)}\r\n{text}\r\n" for text in map(str, values))


class _Plan:
    """What a rule needs on the hot path, computed once per rule object."""

    __slots__ = ("rule_id", "prefix", "argv", "check_argv", "argv_resp", "check_argv_resp", "counts_failures",
                 "enforce", "on_error", "cost", "limit", "quota", "window_s", "denials", "max_denials", "bucket")

    def __init__(self, rule: Rule, settings: LimiterSettings) -> None:
        emission = local.emission_us(rule.emission_interval_s)
        self.rule_id = rule.id
        self.prefix = rule_prefix(rule.id)
        self.enforce = rule.mode == "enforce"
        self.argv = (emission, rule.burst * emission, rule.cost, 1 if self.enforce else 0)
        # A rule counting failures is only checked on requests; ``failures=True`` consumes it.
        self.counts_failures = rule.counts == "failures"
        self.check_argv = (*self.argv[:3], self.argv[3] + 2) if self.counts_failures else self.argv
        self.argv_resp = bulk_strings(self.argv)
        self.check_argv_resp = bulk_strings(self.check_argv)
        self.on_error = rule.on_redis_error
        self.cost = rule.cost
        self.limit = rule.burst
        self.quota, self.window_s = policy_quota(rule)
        # subject -> (monotonic time Redis may allow again, time it certainly will)
        self.denials: dict[str, tuple[float, float]] = {}
        self.max_denials = settings.denial_cache_entries
        self.bucket = local.LocalGCRA.for_rule(rule, settings.processes, max_entries=settings.local_entries)

    def state(self, allowed: bool, remaining: int, reset_s: float) -> RuleState:
        return RuleState(self.rule_id, allowed, self.limit, remaining, reset_s, self.quota, self.window_s, self.enforce)

    def remember_denial(self, subject: str, bypass_at: float, retry_at: float, now: float) -> None:
        denials = self.denials
        if subject not in denials and len(denials) >= self.max_denials:
            for old in [s for s, (until, _) in denials.items() if until <= now]:
                del denials[old]
            if len(denials) >= self.max_denials:
                for old in list(islice(denials, max(1, self.max_denials // 4))):
                    del denials[old]
        denials[subject] = (bypass_at, retry_at)


class PendingCheck(NamedTuple):
    """A check ``Limiter.submit`` queued: its rules and subjects, and the future of its part of the reply."""

    active: list[tuple[_Plan, str]]
    reply: asyncio.Future[list[int]]
    sent_at: float
    failures: bool


class _Batch:
    """Checks gathered for one script call, kept as pre-encoded RESP parts (see ``Limiter._call``)."""

    __slots__ = ("keys", "args", "key_count", "arg_count", "futures", "sent", "timer")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[str] = []
        self.key_count = 0
        self.arg_count = 0
        self.futures: list[tuple[asyncio.Future[list[int]], int]] = []
        self.sent = False
        self.timer: asyncio.TimerHandle | None = None

    def add(self, keys: str, args: str, rules: int) -> asyncio.Future[list[int]]:
        """Add one request: its keys and arguments as bulk strings, ``rules`` of each."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.keys.append(keys)
        self.args.append(args)
        self.key_count += rules
        self.arg_count += 1 + 4 * rules
        self.futures.append((future, rules))
        return future

    def resolve(self, reply: list[int]) -> None:
        """Hand each request its slice of the flat reply: allowed, retry, then 3 numbers per rule."""
        at = 0
        for future, rules in self.futures:
            end = at + 2 + 3 * rules
            if not future.done():
                future.set_result(reply[at:end])
            at = end

    def fail(self, exc: BaseException) -> None:
        for future, _ in self.futures:
            if not future.done():
                future.set_exception(exc)


class Limiter:
    """Decides requests against rate-limit rules through Redis, falling back per rule when Redis fails."""

    def __init__(
        self,
        client: AutoPipeline,
        settings: LimiterSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings = settings or LimiterSettings()
        self.client = client
        self.script = load_scripts("ratelimit")["gcra"]
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown_s, clock=clock)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._clock = clock
        self._budget_s = settings.budget_ms / 1000
        # A client whose own per-call timeout fits the budget needs no asyncio.timeout around
        # each call (measured: the timeout context is ~8 µs of a ~30 µs check).
        self._client_keeps_budget = getattr(client, "timeout_ms", None) is not None and (
            client.timeout_ms <= settings.budget_ms)
        self._pad = settings.ttl_pad_ms
        self._closed_verdict = Verdict(False, settings.unavailable_retry_after_s, (), (), "fallback_closed", True)
        self._plans: dict[int, tuple[Rule, _Plan]] = {}
        self._plans_by_rule: dict[Rule, _Plan] = {}
        self._batch: _Batch | None = None
        self._in_flight = 0
        self._cork_s = settings.cork_ms / 1000
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def preload(self) -> None:
        """Load the script into Redis now, so the first check at peak skips the NOSCRIPT round trip."""
        await preload(self.client, [self.script])

    def _plan(self, rule: Rule) -> _Plan:
        if len(self._plans) >= self.settings.max_plans:
            self._plans.clear()
            self._plans_by_rule.clear()
        # An equal rule from a config reload keeps its denial cache and local state.
        plan = self._plans_by_rule.get(rule)
        if plan is None:
            plan = self._plans_by_rule[rule] = _Plan(rule, self.settings)
        # Holding the rule keeps its id from being reused by another object while cached.
        self._plans[id(rule)] = (rule, plan)
        return plan

    async def check(self, checks: Sequence[tuple[Rule, str]], *, failures: bool = False) -> Verdict:
        """Decide one request: ``checks`` are the matching rules, each with its resolved subject.

        Rules with ``counts: failures`` may refuse the request but consume nothing, unless
        ``failures`` is set: then the request is a failure being recorded and they consume.
        """
        return await self.finish(self.submit(checks, failures=failures))

    def submit(self, checks: Sequence[tuple[Rule, str]], *, failures: bool = False) -> Verdict | PendingCheck:
        """``check`` without awaiting: the verdict when no Redis call is needed, else the call queued in this
        tick's batch (``finish`` gives the verdict). Lets a request send its check beside its other commands."""
        counters = self.counters
        counters["checks"] += 1
        plans = self._plans
        active: list[tuple[_Plan, str]] = []
        for rule, subject in checks:
            if rule.mode == "off":
                continue
            entry = plans.get(id(rule))
            active.append((entry[1] if entry is not None else self._plan(rule), subject))
        if not active:
            return _NOTHING

        now = self._clock()
        hits: list[tuple[_Plan, float]] | None = None
        for plan, subject in active:
            if plan.enforce and plan.denials:
                cached = plan.denials.get(subject)
                if cached is not None:
                    if now < cached[0]:
                        hits = hits or []
                        hits.append((plan, cached[1]))
                    else:
                        del plan.denials[subject]
        if hits is not None:
            counters["denial_cache_hits"] += 1
            counters["denied"] += 1
            states = tuple(plan.state(False, 0, retry_at - now) for plan, retry_at in hits)
            return Verdict(False, max(state.reset_s for state in states), states, (), "denial_cache")

        if not self.breaker.allow():
            counters["breaker_open"] += 1
            return self._fallback(active, failures)
        keys = []
        args = [_COUNTS.get(len(active)) or bulk_strings((len(active),))]
        for plan, subject in active:
            key = plan.prefix + encode_subject(subject)
            keys.append(f"${len(key)}\r\n{key}\r\n")
            args.append(plan.argv_resp if failures else plan.check_argv_resp)
        return PendingCheck(active, self._decide("".join(keys), "".join(args), len(active)), now, failures)

    async def finish(self, pending: Verdict | PendingCheck) -> Verdict:
        """The verdict of a ``submit``."""
        if not isinstance(pending, PendingCheck):
            return pending
        try:
            reply = await pending.reply
        except (RedisError, TimeoutError):  # counted, and the breaker told, once per batch
            return self._fallback(pending.active, pending.failures)
        return self._verdict(pending.active, reply, pending.sent_at)

    def _decide(self, keys: str, args: str, rules: int) -> asyncio.Future[list[int]]:
        """Queue one request for the next batch; the future gets its part of the reply.

        A batch goes out at the end of the tick when no other is in flight. While one is,
        requests gather until its reply comes back (or ``cork_ms`` passes): under load each
        call decides every request that arrived during one round trip, and at low load
        nothing waits. Round trips, not requests, then cost syscalls and script calls.
        """
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            loop = self._loop or self._get_loop()
            if self._in_flight == 0:
                loop.call_soon(self._send_batch, batch)
            else:
                batch.timer = loop.call_later(self._cork_s, self._send_batch, batch)
        future = batch.add(keys, args, rules)
        if batch.key_count >= self.settings.max_batch_keys:
            self._send_batch(batch)
        return future

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _send_batch(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
        if batch.sent:
            return
        batch.sent = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._in_flight += 1
        # Written now, not when the task first runs: at the end of the tick that gathered it, beside
        # the commands the same requests sent through the main client (one round trip for both).
        packed = self._packed(batch)
        try:
            reply: asyncio.Future[list[int]] | BaseException = self.client.write_packed(packed, PREFIX)
        except RedisError as exc:
            reply = exc
        task = asyncio.ensure_future(self._run_batch(batch, packed, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: _Batch, packed: bytes,
                         reply: asyncio.Future[list[int]] | BaseException) -> None:
        """Await the batch's script call, within the budget; then the batch gathered meanwhile goes."""
        try:
            await self._call(batch, packed, reply)
        finally:
            self._in_flight -= 1
            waiting = self._batch
            if waiting is not None and self._in_flight == 0:
                self._send_batch(waiting)

    async def _call(self, batch: _Batch, packed: bytes, reply: asyncio.Future[list[int]] | BaseException) -> None:
        """The batch's script call; the breaker hears once per call."""
        counters = self.counters
        counters["redis_calls"] += 1
        breaker = self.breaker
        try:
            if self._client_keeps_budget:
                result = await self._evalsha(packed, reply)
            else:
                async with asyncio.timeout(self._budget_s):
                    result = await self._evalsha(packed, reply)
        except (TimeoutError, RedisTimeoutError) as exc:
            counters["redis_timeouts"] += 1
            counters["redis_errors"] += 1
            breaker.record_failure()
            batch.fail(exc)
            return
        except RedisError as exc:
            counters["redis_errors"] += 1
            breaker.record_failure()
            batch.fail(exc)
            return
        except BaseException:
            breaker.abandon()
            batch.fail(RedisError("rate-limit batch abandoned"))
            raise
        breaker.record_success()
        batch.resolve(result)

    def _packed(self, batch: _Batch) -> bytes:
        """EVALSHA of the batch, encoded here from pre-encoded parts (see ``AutoPipeline.send_packed``)."""
        key_count = batch.key_count
        return "".join((
            f"*{3 + key_count + 2 + batch.arg_count}\r\n$7\r\nEVALSHA\r\n$40\r\n{self.script.sha}\r\n",
            bulk_strings((key_count,)), *batch.keys, bulk_strings((self._pad, len(batch.futures))), *batch.args,
        )).encode()

    async def _evalsha(self, packed: bytes, reply: asyncio.Future[list[int]] | BaseException) -> list[int]:
        """The reply of the written call; the script loaded and the call sent again after NOSCRIPT."""
        try:
            if isinstance(reply, BaseException):
                raise reply
            return await reply
        except NoScriptError:
            await self.script.load(self.client)
            return await self.client.send_packed(packed, PREFIX)

    def _verdict(self, active: list[tuple[_Plan, str]], reply: list[int], sent_at: float) -> Verdict:
        received_at = self._clock()
        states = []
        shadow_denied: list[str] = []
        index = 2
        for plan, subject in active:
            allowed = reply[index] == 1
            reset_s = reply[index + 2] / 1000
            states.append(plan.state(allowed, reply[index + 1], reset_s))
            index += 3
            if not allowed:
                if plan.enforce:
                    # Redis ran the script between sending and receiving: ask again no earlier
                    # than it might allow, report a retry time no earlier than it surely will.
                    plan.remember_denial(subject, sent_at + reset_s, received_at + reset_s, received_at)
                else:
                    shadow_denied.append(plan.rule_id)
        if shadow_denied:
            self.counters["shadow_denials"] += len(shadow_denied)
        if reply[0] != 1:
            self.counters["denied"] += 1
            return Verdict(False, reply[1] / 1000, tuple(states), tuple(shadow_denied), "redis")
        return Verdict(True, 0.0, tuple(states), tuple(shadow_denied), "redis")

    def _fallback(self, active: list[tuple[_Plan, str]], failures: bool = False) -> Verdict:
        """Decide without Redis: each rule's ``on_redis_error``; a closed rule wins over a local one."""
        counters = self.counters
        opened = closed = 0
        entries: list[local.Entry] = []
        deciding: list[_Plan] = []
        for plan, subject in active:
            if plan.on_error == "local":
                entries.append((plan.bucket, subject, plan.cost, plan.enforce, plan.counts_failures and not failures))
                deciding.append(plan)
            elif plan.enforce:  # a shadow rule never blocks, whatever its on_redis_error says
                if plan.on_error == "closed":
                    closed += 1
                else:
                    opened += 1
        if closed:
            counters["fallback_closed"] += closed
            counters["denied"] += 1
            return self._closed_verdict
        counters["fallback_open"] += opened
        if not entries:
            return Verdict(True, 0.0, (), (), "fallback_open")
        counters["fallback_local"] += len(entries)
        decision = local.decide(entries, self._clock())
        states = tuple(plan.state(*result) for plan, result in zip(deciding, decision.results, strict=True))
        shadow_denied = tuple(state.rule_id for state in states if not state.enforced and not state.allowed)
        if shadow_denied:
            counters["shadow_denials"] += len(shadow_denied)
        if not decision.allowed:
            counters["denied"] += 1
        return Verdict(decision.allowed, decision.retry_after_s, states, shadow_denied, "fallback_local")
