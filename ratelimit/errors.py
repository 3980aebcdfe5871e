"""Errors of the rate limiter."""

from __future__ import annotations


class RateLimitError(Exception):
    """Base class of every error raised by ``ratelimit``."""


class InvalidRule(RateLimitError):
    """A rule in the live config is malformed; ``path`` names the field (``rules[2].rate``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
