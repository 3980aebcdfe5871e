"""The sender boundary: one message to the SMS provider, and what came of it.

``Sender.send`` answers one of three things, never raises for the provider's sake:

- ``Accepted``: the provider took the message (its message id, Alibaba Cloud's BizId);
- ``Retryable``: not taken this time — throttled, busy, a 5xx, a timeout. ``ambiguous`` when the
  request may have reached the provider all the same (a timeout, a lost answer): such a message
  is looked up (``Sender.find``, by its OutId) before it is sent again. ``throttle`` names whose
  limit was hit: ``phone`` (this number's), ``account`` (our sending rate: every worker pauses);
- ``Permanent``: never (a bad number, an invalid template, a blacklisted phone, a refused account).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Literal, NamedTuple, Protocol

__all__ = ["Accepted", "Outgoing", "Permanent", "Retryable", "SendResult", "Sender", "Throttle"]

Throttle = Literal["phone", "account"]


class Outgoing(NamedTuple):
    """One message as the provider takes it: the number, the approved template, its parameters, our OutId."""

    phone: str
    template_code: str
    params: Mapping[str, str]
    out_id: str


class Accepted(NamedTuple):
    """The provider took the message."""

    biz_id: str  # the provider's message id (BizId)
    request_id: str = ""


class Retryable(NamedTuple):
    """Not taken this time; sending again later may work."""

    code: str  # the provider's (isp.SYSTEM_ERROR, isv.BUSINESS_LIMIT_CONTROL, …) or ours (timeout, connect, HTTP502)
    message: str
    ambiguous: bool = False  # the provider may have taken it: look it up before sending again
    throttle: Throttle | None = None


class Permanent(NamedTuple):
    """The provider will never take this message."""

    code: str
    message: str


SendResult = Accepted | Retryable | Permanent


class Sender(Protocol):
    """An SMS provider: send one message; say whether one was taken."""

    async def send(self, message: Outgoing) -> SendResult:
        """Send one message and say what came of it (no exception for the provider's answers or silence)."""
        ...

    async def find(self, phone: str, out_id: str, days: Sequence[date]) -> bool | Retryable:
        """Whether the provider lists a message to ``phone`` under ``out_id`` sent on one of ``days`` (its dates)."""
        ...

    async def aclose(self) -> None:
        """Release the connections."""
        ...
