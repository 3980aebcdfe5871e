"""SMS-code storm: people ask for their registration codes at once (``examgate loadtest sms-storm``)."""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.sms import SmsCodeUser  # noqa: F401
