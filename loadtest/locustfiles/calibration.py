"""Calibration: every user asks one do-nothing path again as soon as it is answered (``examgate rehearse``).

``--calibration-path`` names the path: the gateway's ``/_bench/noop`` (or ``/healthz`` where the
benchmark routes are off), or the bare aiohttp app's ``/noop``. Only 200s count as answered; the
requests per second measured are what this generator, on this machine, gets from a route that does
nothing (``loadtest.calibrate``).
"""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser, constant, events, task

import loadtest.locust_hooks  # noqa: F401  (registers the run's options and the summary)


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--calibration-path", default="/_bench/noop", help="the do-nothing path every user asks")


class CalibrationUser(FastHttpUser):
    """Asks the calibration path in a loop, without a pause."""

    wait_time = constant(0)

    @task
    def ask(self) -> None:
        """One request to the do-nothing path."""
        options = self.environment.parsed_options
        assert options is not None  # locust parses them before any user starts
        path = str(options.calibration_path)
        self.client.get(path, name=path)
