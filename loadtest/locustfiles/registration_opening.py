"""Registration opening: enrol → sign → confirm (reviewed) → waiting room → poll → seat → order → pay → paid.

Run with ``examgate loadtest registration-opening``.
"""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.registration import RegistrationUser  # noqa: F401
