"""Which answers a load test expects: an answer is due, an expected refusal, or a failure.

The gateway refuses on purpose under load — a throttle's 429, a full site's 409 ``site_full``,
overload shedding's 503 with ``Retry-After`` — and a rehearsal must tell those apart from
wrong answers. Refusals are recorded under their own request name (``name (refused: 429)``)
so the served requests' latencies stay clean and the reports show both.
"""

from __future__ import annotations

from typing import NamedTuple

REFUSED_MARK = " (refused: "
FLOW = "FLOW"  # the request type of what no single request shows: a flow's end (a review's wait) or its failure
# The longest a user waits before retrying a refused step, whatever Retry-After says: a short run
# must keep moving (a candidate's page would count the real wait down).
BACKOFF_CAP_S = 2.0


class Refusal(NamedTuple):
    """An expected refusal: a short reason (``429``, ``site_full``, ``503 overloaded``) and when to retry."""

    reason: str
    retry_after_s: float


def refusal(status: int, code: str | None, retry_after: str | None) -> Refusal | None:
    """The expected refusal this answer is, or None when it is not one (then it is a failure unless it was due)."""
    wait_s = _seconds(retry_after)
    if status == 429:
        return Refusal("429", wait_s if wait_s is not None else 1.0)
    if status == 409 and code == "site_full":
        return Refusal("site_full", 0.0)
    if status == 503 and code == "overloaded" and wait_s is not None:
        return Refusal("503 overloaded", wait_s)
    return None


def already_registered(status: int, code: str | None) -> bool:
    """A candidate enrolled by an earlier run: not the gateway's fault, the pool of seeded candidates is shared."""
    return status == 409 and code == "already_registered"


def refused_name(name: str, reason: str) -> str:
    """The request name a refusal is recorded under."""
    return f"{name}{REFUSED_MARK}{reason})"


def split_name(name: str) -> tuple[str, str | None]:
    """(request name, refusal reason or None) of a recorded name."""
    base, mark, rest = name.partition(REFUSED_MARK)
    if not mark or not rest.endswith(")"):
        return name, None
    return base, rest[:-1]


def backoff_s(refused: Refusal) -> float:
    """How long to wait before retrying after ``refused``."""
    return min(max(refused.retry_after_s, 0.0), BACKOFF_CAP_S)


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None  # an HTTP date: rare, and only a hint for the back-off
    return value if value >= 0 else None
