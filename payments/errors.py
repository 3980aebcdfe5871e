"""Errors of the payments package: bad notifications, missing keys, provider failures.

The gateway maps them to HTTP (and to the provider-specific "please retry" replies) in one table.
"""

from __future__ import annotations

from pathlib import Path

# ``Notice`` is what a good notification becomes; importable from here too, beside its failures.
from payments.notice import Notice

__all__ = [
    "BadNotification",
    "BadSignature",
    "KeysInvalid",
    "KeysMissing",
    "Notice",
    "PaymentError",
    "ProviderRejected",
    "ProviderUnavailable",
    "RefundFinished",
    "RefundInvalid",
    "RefundNotFound",
    "TradeAlreadyPaid",
    "TradeClosed",
]


class PaymentError(Exception):
    """Base class of every error raised by ``payments``."""


class BadSignature(PaymentError):
    """A signature is missing or invalid, the key serial unknown or the timestamp stale."""

    def __init__(self, reason: str = "bad_signature", detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BadNotification(PaymentError):
    """A correctly signed notification that cannot be used: malformed, undecryptable, fields missing."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ProviderUnavailable(PaymentError):
    """The provider did not answer usefully: network error, timeout, 5xx or a badly signed response."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider} unavailable: {reason}")
        self.provider = provider
        self.reason = reason


class ProviderRejected(PaymentError):
    """The provider answered, signed, and refused the request (its own error code and message)."""

    def __init__(self, provider: str, code: str, message: str = "") -> None:
        super().__init__(f"{provider} rejected the request: {code}" + (f" ({message})" if message else ""))
        self.provider = provider
        self.code = code
        self.message = message


class TradeAlreadyPaid(ProviderRejected):
    """The trade was paid: it can neither be created again nor closed."""


class TradeClosed(ProviderRejected):
    """The trade was closed: it cannot be created again under the same order number."""


class KeysMissing(PaymentError):
    """A key file is not in the keys directory."""

    def __init__(self, path: Path, keys_dir: Path) -> None:
        super().__init__(f"payment key file {path} is missing; run `examgate keys generate --dir {keys_dir}` "
                         f"(or set EXAMGATE_KEYS_DIR to where the keys are)")
        self.path = path
        self.keys_dir = keys_dir


class KeysInvalid(PaymentError):
    """A key file exists but cannot be used (not a PEM, wrong kind or size, halves of a pair differ)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"payment key file {path} is unusable: {reason}")
        self.path = path
        self.reason = reason


class RefundNotFound(PaymentError):
    """No refund has this id."""

    def __init__(self, refund_id: str) -> None:
        super().__init__(f"no refund {refund_id!r}")
        self.refund_id = refund_id


class RefundFinished(PaymentError):
    """The refund succeeded already: there is nothing left to send."""

    def __init__(self, refund_id: str) -> None:
        super().__init__(f"refund {refund_id} succeeded already")
        self.refund_id = refund_id


class RefundInvalid(PaymentError, ValueError):
    """A refund that cannot be asked for: unknown provider or reason, no amount, no paid trade to take it from."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
