"""Photo upload: seeded candidates sign in and upload their photo at once (``examgate loadtest photo-upload``)."""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.photos import PhotoUploadUser  # noqa: F401
