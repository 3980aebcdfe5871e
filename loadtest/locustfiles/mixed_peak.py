"""Mixed peak: every scenario's users at once, by their weights (``examgate loadtest mixed-peak``).

Weights: sign-ins 3, registrations 2, notification flood 1, score lookups 3, ticket printing 2.
"""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.login import LoginUser  # noqa: F401
from loadtest.users.lookups import ScoreLookupUser, TicketPrintingUser  # noqa: F401
from loadtest.users.notifications import NotificationFloodUser  # noqa: F401
from loadtest.users.registration import RegistrationUser  # noqa: F401
