"""Ticket printing: admission-ticket lookups and PDF downloads (``examgate loadtest ticket-printing``)."""

from __future__ import annotations

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)
from loadtest.shape import PeakShape  # noqa: F401
from loadtest.users.lookups import TicketPrintingUser  # noqa: F401
