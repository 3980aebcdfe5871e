"""Driving ``wrk`` from Python: one measured run, its requests/s and latency."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"Latency\s+([\d.]+)(us|ms|s)")
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors:.*")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_STATUS = re.compile(r"^status (\d+) (\d+)$", re.M)

# Appended to a wrk Lua script: counts every answer's status per thread and prints them when
# the run is done (read back with ``statuses``), so a benchmark can fail on unexpected answers.
LUA_STATUS_COUNTER = """
statuses = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do io.write(string.format("status %d %d\\n", status, count)) end
  end
end
"""


def statuses(output: str) -> dict[str, int]:
    """The answers counted by ``LUA_STATUS_COUNTER``, by status: {"200": 51234, …}."""
    return {status: int(count) for status, count in _STATUS.findall(output)}


class WrkMissing(RuntimeError):
    """wrk is not installed (``make bench`` installs it)."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    url: str
    requests_per_s: float
    mean_latency_ms: float
    non_2xx: int
    socket_errors: str | None
    output: str = ""  # wrk's whole report, with whatever a Lua script's ``done()`` printed


def run_wrk(url: str, *, duration_s: int = 8, connections: int = 64, threads: int = 1,
            cpus: str | None = "1", script: str | None = None) -> WrkResult:
    """Load ``url`` with wrk pinned to ``cpus`` (the gateway runs on the other core).

    ``script`` is a wrk Lua file (``-s``) for requests that need a method, headers or a body.
    """
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkMissing("wrk is not installed: run scripts/bench-deps.sh (make bench does)")
    command = [binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if script is not None:
        command += ["-s", script]
    command.append(url)
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 30).stdout
    rps = _RPS.search(out)
    if rps is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    latency = _LATENCY.search(out)
    errors = _ERRORS.search(out)
    sockets = _SOCKET_ERRORS.search(out)
    return WrkResult(
        url=url,
        requests_per_s=float(rps[1]),
        mean_latency_ms=float(latency[1]) * _UNIT_MS[latency[2]] if latency else float("nan"),
        non_2xx=int(errors[1]) if errors else 0,
        socket_errors=sockets[0] if sockets else None,
        output=out,
    )
