"""Score release: score lookups by id number or ticket number (``examgate loadtest score-release``)."""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.lookups import ScoreLookupUser  # noqa: F401
