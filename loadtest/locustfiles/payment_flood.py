"""Payment-notification flood: signed provider notifications and their resends (``examgate loadtest payment-flood``)."""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.notifications import NotificationFloodUser  # noqa: F401
