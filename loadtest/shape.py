"""The load shapes a run picks with ``--shape``: a spike (every user within seconds, then hold) or steps."""

from __future__ import annotations

import math

from locust import LoadTestShape


class PeakShape(LoadTestShape):
    """``--users`` at ``--spawn-rate`` for ``--run-time``: all at once (spike) or in ``--steps`` equal steps."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        """(users wanted now, spawn rate), or None when the run time is over."""
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        assert options is not None
        run_s = self.get_run_time()
        duration_s = options.run_time
        if duration_s and run_s >= duration_s:
            return None
        users, rate = int(options.num_users or 1), float(options.spawn_rate or 1)
        if getattr(options, "shape", "spike") == "steps" and duration_s:
            steps = max(1, int(options.steps))
            step = min(steps, int(run_s // (duration_s / steps)) + 1)
            return math.ceil(users * step / steps), rate
        return users, rate
