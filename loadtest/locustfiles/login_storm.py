"""Login storm: every user signs in, reads the profile and signs out, again and again.

Run with ``examgate loadtest login-storm``.
"""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.login import LoginUser  # noqa: F401
