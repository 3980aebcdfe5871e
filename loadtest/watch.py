"""What a scenario observes of the system around its run, beyond Locust's figures, and judges after it.

Most scenarios are judged on what their users saw. Some promise something the users cannot see:
the SMS storm's outbox must drain at the provider's rate once the users have stopped. Such a
scenario names a watch (``Scenario.watch``): ``before`` notes the system's state as the users start,
``after`` observes it once they have stopped (waiting, within a bound, for what it waits for) and
gives the verdicts, judged with the thresholds'.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from loadtest.summary import Summary
from loadtest.verdicts import Verdict

__all__ = ["Check", "RunWatch", "WatchFailed"]

Check = Callable[[Summary], Verdict]


class WatchFailed(Exception):
    """The watch cannot observe what it judges (its store unreachable): the run is not made."""


class RunWatch(Protocol):
    """A scenario's observer of the system around its run."""

    def before(self) -> None:
        """Note the system's state as the users start; ``WatchFailed`` when it cannot be observed."""

    def after(self, out_dir: Path, echo: Callable[[str], None]) -> list[Check]:
        """Once the users have stopped: observe, write what was seen under ``out_dir``, and give the verdicts."""
