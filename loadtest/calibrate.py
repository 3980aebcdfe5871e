"""Calibration: what this load generator, on this machine, gets from a route that does nothing.

Absolute rates mean nothing across machines, so a rehearsal first runs the scenarios' own Locust
generator (the same master and worker processes) for a few seconds against the gateway's do-nothing
route, ``/_bench/noop`` (served with ``EXAMGATE_BENCH_ROUTES=true``; a gateway without it, as
``make demo`` starts it, is measured on ``/healthz``, which does as little, and the result says so),
then against the bare aiohttp + uvloop app (``benchmarks.bare_app``, started here on loopback):
the framework's floor on this machine, whatever the gateway does.

``factor`` is the bare app's rate over the one ``loadtest/targets.toml`` records for the machine its
figures were set on: the machine and the generator, which no build of the gateway can change. Were
it taken from the gateway's own route, a gateway made slower would lower its own targets (one
slowed by ``EXAMGATE_ADDED_LATENCY_MS=300`` measured 1 % of its reference and would have been
rehearsed with a single user). ``capacity_rps`` is what ``/_bench/noop`` should give here (its
reference times the factor), of which each scenario's ``rps_share_of_noop`` is taken; the scenarios'
users are multiplied by the factor too, so a faster machine is asked for proportionally more.

The gateway's route is judged instead: ``noop_share_of_bare`` (the do-nothing route over the floor)
must stay within ``edge_slowdown_allowed`` of the reference machine's share, or the edge itself got
slower (``verdict``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.processes import ROOT, Process, free_port, start_locust, wait_http
from loadtest.scenarios import LOCUSTFILES
from loadtest.summary import summarize
from loadtest.targets import BARE, NOOP_PATH, FigureVerdict, Targets

__all__ = ["Calibration", "CalibrationFailed", "Measured", "bare_app", "calibrate", "measure", "noop_path"]

LOCUSTFILE = LOCUSTFILES / "calibration.py"
FALLBACK_PATH = "/healthz"  # a gateway without the benchmark routes: liveness does as little
BARE_PATH = "/noop"
STARTUP_S = 60.0
STOP_S = 30.0


class CalibrationFailed(Exception):
    """The generator could not be measured (the gateway or the bare app did not answer, Locust failed)."""


class Measured(NamedTuple):
    """One calibration run: 200s per second, what was asked, and the generator's busiest second."""

    rps: float
    requests: int
    failures: int
    elapsed_s: float
    cpu_peak_pct: float | None


class Calibration(NamedTuple):
    """The rates measured, the references they are compared with, and the factor that scales the targets."""

    noop_path: str
    generator_noop_rps: float
    generator_bare_rps: float
    reference_noop_rps: float  # the targets file's figure for ``noop_path``
    reference_bare_rps: float
    factor: float  # generator_bare_rps over reference_bare_rps: this machine against the reference one
    capacity_rps: float  # what /_bench/noop should give on this machine: the shares' base
    noop_share_of_bare: float
    reference_share_of_bare: float  # the same on the machine the figures were set on
    edge_slowdown_allowed: float
    users: int
    duration_s: int
    processes: int
    note: str | None

    @property
    def edge_held(self) -> bool:
        """Whether the do-nothing route kept its share of the bare floor (within what the targets allow)."""
        return self.noop_share_of_bare >= self.reference_share_of_bare * (1 - self.edge_slowdown_allowed)

    def verdict(self) -> FigureVerdict:
        """The edge's check: a gateway slower than the machine explains fails here, before its targets shrink."""
        detail = (f"{self.noop_path} at {self.noop_share_of_bare:.0%} of the bare aiohttp app's rate, reference "
                  f"{self.reference_share_of_bare:.0%}")
        if self.edge_held:
            return FigureVerdict("do-nothing route", True, f"{detail} (at most {self.edge_slowdown_allowed:.0%} below)")
        return FigureVerdict("do-nothing route", False, f"{detail}: more than {self.edge_slowdown_allowed:.0%} below "
                                                        "(the gateway is slower, not the machine)")

    def as_json(self) -> dict[str, Any]:
        """As ``rehearsal.json`` shows it."""
        return {"generator_noop_rps": round(self.generator_noop_rps, 1),
                "generator_bare_rps": round(self.generator_bare_rps, 1), "factor": round(self.factor, 3),
                "reference_noop_rps": self.reference_noop_rps, "reference_bare_rps": self.reference_bare_rps,
                "noop_path": self.noop_path, "capacity_rps": round(self.capacity_rps, 1),
                "noop_share_of_bare": round(self.noop_share_of_bare, 3),
                "reference_share_of_bare": round(self.reference_share_of_bare, 3),
                "edge_slowdown_allowed": self.edge_slowdown_allowed, "verdict": self.verdict()._asdict(),
                "users": self.users,
                "duration_s": self.duration_s, "processes": self.processes, "note": self.note}

    def line(self) -> str:
        """One line for people."""
        return (f"calibration: bare aiohttp {self.generator_bare_rps:,.0f} req/s (reference "
                f"{self.reference_bare_rps:,.0f}: factor {self.factor:.2f}), the gateway's {self.noop_path} "
                f"{self.generator_noop_rps:,.0f} req/s (reference {self.reference_noop_rps:,.0f}); rate targets are "
                f"shares of {self.capacity_rps:,.0f} req/s")


def noop_path(host: str) -> str:
    """``/_bench/noop`` when the gateway serves it, else ``/healthz``; CalibrationFailed when neither answers."""
    for path in (NOOP_PATH, FALLBACK_PATH):
        try:
            with urllib.request.urlopen(host + path, timeout=5) as resp:
                if resp.status == 200:
                    return path
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise CalibrationFailed(f"{host}{path} answered {exc.code}") from None
        except OSError as exc:
            raise CalibrationFailed(f"{host} does not answer: {exc}") from None
    raise CalibrationFailed(f"{host} serves neither {NOOP_PATH} nor {FALLBACK_PATH}")


@contextmanager
def bare_app() -> Iterator[str]:
    """``python -m benchmarks.bare_app`` on a free loopback port: its base URL while it runs."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_app", str(port)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}{BARE_PATH}", timeout_s=30)
        except (TimeoutError, OSError) as exc:
            raise CalibrationFailed(f"the bare aiohttp app did not start: {exc}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def measure(host: str, path: str, *, users: int, duration_s: int, processes: int, out_dir: Path) -> Measured:
    """Run the calibration locustfile against ``host`` + ``path``; its figures (Locust's reports in ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    master = start_locust([LOCUSTFILE], [
        "--headless", "--master", "--only-summary", "--expect-workers", str(processes),
        "--expect-workers-max-wait", str(int(STARTUP_S)), "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "--host", host, "--users", str(users), "--spawn-rate", str(users),
        "--run-time", f"{duration_s}s", "--duration-s", str(duration_s), "--scenario", "calibration",
        "--calibration-path", path, "--csv", str(out_dir / "locust"), "--summary-file", str(out_dir / "summary.json"),
    ], log_path=out_dir / "locust-master.log")
    workers: list[Process] = []
    try:
        for number in range(processes):
            worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            log_path = out_dir / f"locust-worker-{number + 1}.log"
            workers.append(start_locust([LOCUSTFILE], worker_args, log_path=log_path))
        deadline = time.monotonic() + STARTUP_S + duration_s + STOP_S
        while master.proc.poll() is None and time.monotonic() < deadline:
            if any(w.proc.poll() not in (None, 0) for w in workers):
                break
            time.sleep(0.2)
    finally:
        for process in [master, *workers]:
            process.stop(timeout_s=10)
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        tail = "\n".join(master.log().splitlines()[-10:])
        raise CalibrationFailed(f"the calibration run against {host}{path} did not finish; last lines of "
                                f"{master.log_path}:\n{tail}")
    figures = json.loads(summary_path.read_text())
    summary = summarize(figures)
    samples = [s for worker in (figures.get("cpu") or {}).get("workers", {}).values() for s in worker]
    return Measured(summary.good_rps, summary.total.requests, summary.total.failures, summary.elapsed_s,
                    max(samples) if samples else None)


def calibrate(host: str, targets: Targets, out_dir: Path, *, processes: int | None = None,
              progress: Callable[[str], None] = print) -> Calibration:
    """Measure the do-nothing route and the bare app with the generator the scenarios use; the factor."""
    processes = processes or targets.processes
    users, duration_s = targets.calibration_users, targets.calibration_duration_s
    path = noop_path(host)
    note = None
    if path != NOOP_PATH:
        note = (f"the gateway serves no {NOOP_PATH} (EXAMGATE_BENCH_ROUTES is off): calibrated on {path}, "
                f"compared with the reference measured on {path}")
    reference = targets.reference_rps.get(path)
    if reference is None:
        raise CalibrationFailed(f"{targets.path}: calibration.reference_rps has no figure for {path}")
    progress(f"calibrating: {users} users for {duration_s} s against {host}{path}")
    noop = measure(host, path, users=users, duration_s=duration_s, processes=processes,
                   out_dir=out_dir / "calibration-noop")
    if noop.rps <= 0:
        raise CalibrationFailed(f"no request to {host}{path} was answered 200 ({noop.failures:,} failed)")
    with bare_app() as bare_url:
        progress(f"calibrating: {users} users for {duration_s} s against the bare aiohttp app ({bare_url}{BARE_PATH})")
        bare = measure(bare_url, BARE_PATH, users=users, duration_s=duration_s, processes=processes,
                       out_dir=out_dir / "calibration-bare")
    if bare.rps <= 0:
        raise CalibrationFailed("no request to the bare aiohttp app was answered 200")
    factor = bare.rps / targets.reference_rps[BARE]
    return Calibration(
        noop_path=path, generator_noop_rps=noop.rps, generator_bare_rps=bare.rps, reference_noop_rps=reference,
        reference_bare_rps=targets.reference_rps[BARE], factor=factor,
        capacity_rps=targets.reference_rps[NOOP_PATH] * factor, noop_share_of_bare=noop.rps / bare.rps,
        reference_share_of_bare=reference / targets.reference_rps[BARE],
        edge_slowdown_allowed=targets.edge_slowdown_allowed, users=users, duration_s=duration_s,
        processes=processes, note=note,
    )
