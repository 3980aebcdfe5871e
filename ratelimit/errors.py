"""Errors of the rate limiter."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimit.limiter import Verdict


class RateLimitError(Exception):
    """Base class of every error raised by ``ratelimit``."""


class InvalidRule(RateLimitError):
    """A rule in the live config is malformed; ``path`` names the field (``rules[2].rate``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class RateLimited(RateLimitError):
    """An enforced rule refused the request (HTTP 429); ``verdict`` has what the headers need."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.retry_after_s = verdict.retry_after_s
        self.rule_ids = tuple(state.rule_id for state in verdict.states if state.enforced and not state.allowed)
        super().__init__(f"rate limited by {', '.join(self.rule_ids)}; retry after {self.retry_after_s:.3f} s")


class LimiterUnavailable(RateLimitError):
    """Redis cannot be reached and a matching rule fails closed (HTTP 503)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.retry_after_s = verdict.retry_after_s
        super().__init__(f"rate limiter unavailable; retry after {self.retry_after_s:.3f} s")
