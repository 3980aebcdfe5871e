"""Errors of the captcha package."""

from __future__ import annotations

__all__ = ["REASONS", "CaptchaError", "CaptchaInvalid", "CaptchaRequired", "PoolEmpty"]

# Why a captcha was refused. All answer 400 ``captcha_invalid``; the reason is for logs
# and metrics (telling a client "expired" versus "wrong" helps nobody but a bot).
REASONS = (
    "missing",        # no captcha where the route requires one
    "malformed",      # not the documented shape, bad base64/JSON/types, out-of-range number
    "wrong_kind",     # a kind the route's mode does not accept
    "unknown",        # image id never issued, already used, or its answer expired
    "wrong_answer",   # image digits do not match (the captcha is consumed all the same)
    "bad_signature",  # proof-of-work challenge not signed by us
    "expired",        # proof-of-work challenge past its expiry
    "wrong_solution",  # proof-of-work number does not hash to the challenge
    "replayed",       # proof-of-work solution already used once
)


class CaptchaError(Exception):
    """Base class of every error raised by ``captcha``."""


class CaptchaInvalid(CaptchaError):
    """The request's captcha is missing, wrong, expired, replayed or malformed (HTTP 400 ``captcha_invalid``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"captcha invalid: {reason}")
        self.reason = reason


class CaptchaRequired(CaptchaError):
    """This request must carry a captcha of ``kind`` (an escalation) and did not (HTTP 400 ``captcha_required``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"a {kind} captcha is required")
        self.kind = kind


class PoolEmpty(CaptchaError):
    """No pre-drawn image is left in the pool (HTTP 503 with ``Retry-After``)."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__(f"captcha image pool empty; retry after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s
