"""HTTP headers from a verdict: Retry-After and the IETF ``RateLimit-Policy`` / ``RateLimit`` fields.

The fields follow draft-ietf-httpapi-ratelimit-headers-11 (the same syntax since -08):
Structured Field Lists of String items with Integer parameters,

    RateLimit-Policy: "login-ip";q=10;w=60, "login-account";q=5;w=300
    RateLimit: "login-ip";r=3;t=12

``q`` is the quota and ``w`` its window in whole seconds (a rule's rate per period);
``r`` the quota available now and ``t`` the seconds before it is restored (rounded up).
Partition keys (``pk``) are left out: they would echo the client's subject back.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ratelimit.rules import Rule

if TYPE_CHECKING:
    from ratelimit.limiter import RuleState, Verdict


def retry_after_header(seconds: float) -> str:
    """Retry-After value: whole seconds rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def policy_quota(rule: Rule) -> tuple[int, int]:
    """``(q, w)`` for a rule: its rate per period, with the period stretched to whole seconds."""
    window_s = max(1, math.ceil(rule.period_s))
    # A sub-second or fractional period scales the quota to the whole-second window.
    quota = math.floor(rule.rate * window_s / rule.period_s + 1e-9)
    return quota, window_s


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(state: RuleState) -> str:
    """One RateLimit-Policy list member: ``"<rule id>";q=<quota>;w=<window s>``."""
    return f"{_sf_string(state.rule_id)};q={state.quota};w={state.window_s}"


_policy_cache: dict[tuple[tuple[str, int, int], ...], str | None] = {}


def ratelimit_policy_header(verdict: Verdict) -> str | None:
    """RateLimit-Policy for every enforced rule the verdict decided, or None when there is none."""
    # The same few rule sets answer every request: format each once.
    key = tuple((s.rule_id, s.quota, s.window_s) for s in verdict.states if s.enforced)
    header = _policy_cache.get(key)
    if header is None and key not in _policy_cache:
        if len(_policy_cache) > 1024:
            _policy_cache.clear()
        items = [f"{_sf_string(rule_id)};q={quota};w={window_s}" for rule_id, quota, window_s in key]
        header = _policy_cache[key] = ", ".join(items) if items else None
    return header


def most_restrictive(verdict: Verdict) -> RuleState | None:
    """The rule to report in RateLimit: a denying one with the latest retry, else the one with least left."""
    best: RuleState | None = None
    denying = False
    for state in verdict.states:  # one pass: this runs on every throttled response
        if not state.enforced:
            continue
        if not state.allowed:
            if not denying or state.reset_s > best.reset_s:  # type: ignore[union-attr]
                best, denying = state, True
        elif not denying and (best is None or state.remaining < best.remaining
                              or (state.remaining == best.remaining and state.reset_s > best.reset_s)):
            best = state
    return best


def ratelimit_header(verdict: Verdict) -> str | None:
    """RateLimit for the most restrictive enforced rule: ``"<rule id>";r=<remaining>;t=<seconds>``."""
    state = most_restrictive(verdict)
    if state is None:
        return None
    return f"{_sf_string(state.rule_id)};r={state.remaining};t={math.ceil(state.reset_s)}"


def ratelimit_headers(verdict: Verdict) -> dict[str, str]:
    """Every rate-limit header for the response: the two draft fields and, when refused, Retry-After."""
    headers: dict[str, str] = {}
    policy = ratelimit_policy_header(verdict)
    current = ratelimit_header(verdict)
    if policy is not None and current is not None:
        headers["RateLimit-Policy"] = policy
        headers["RateLimit"] = current
    if not verdict.allowed:
        headers["Retry-After"] = retry_after_header(verdict.retry_after_s)
    return headers
