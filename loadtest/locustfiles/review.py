"""Online review: candidates submit where review is online, operators approve in bulk (``examgate loadtest review``).

Two operator users page the review queue whatever ``--users`` is; the rest are candidates.
"""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.review import ReviewCandidateUser, ReviewerUser  # noqa: F401
