"""``python -m benchmarks.profile PATH … [--seconds 10] [--rate 250] [--json FILE]``: where a peak path's time goes.

Each path is set up as its benchmark sets it up (``bench_redis_get``, ``bench_ratelimit``,
``bench_lookups``, ``bench_seats``, the bare app of ``benchmarks.bare_app``): one serving process
pinned to core 0, wrk on core 1 with 64 connections. After a warm-up the path is loaded again
while py-spy, pinned to core 1 beside wrk, samples the process that listens on the port (the
gateway's serving child, not its supervisor) without stopping it (``py-spy record --nonblocking
--idle --threads -f raw``). Every answer is checked as in the benchmark.

**What is printed.** Per path: requests/s during the profile, and the time per request (µs) split
into groups: (samples of the group / all samples of the process's main thread) × profile seconds
/ requests served in that window, which sums to 1 / (requests/s); then the top frames by self
time (the innermost frame of each sample) in µs/request. ``--json FILE`` writes the same figures.

**The classification rule.** The first frame, from the innermost outwards, whose file belongs to
a group (``GROUPS``, checked in order: ``core/redis.py`` is the redis client, not ``core/``; the
edge's modules come before the rest of ``gateway/``; aiohttp's response and writer before the
rest of aiohttp) gives the sample its group. A file of no group (the standard library, pydantic,
``json``, asyncio's futures and locks) charges its time to its nearest caller that has one:
``json.dumps`` called by a route is the route's, a future awaited by the redis client is the
client's. A sample with no such frame (its stack unreadable, or the interpreter starting) is
``other``.

**Idle and waiting for the core.** uvloop's own C code (waiting in epoll, reading sockets,
calling callbacks) runs below Python: its samples show the loop runner (``asyncio/runners.py``)
as their innermost frame, and py-spy cannot tell a wait from work there (``--native`` would, but
it cannot sample without stopping the process). So the main thread's scheduler figures over the
profile (``/proc/PID/schedstat``: time on a core, time runnable but waiting for one) decide:
sleeping (wall − on a core − waiting) is ``idle``, taken out of the loop runner's share (at most
all of it; the rest is ``event loop``). Time waiting for core 0 while another process runs there
(often on a shared machine; Redis is not pinned either, so part of it is Redis serving the path)
is sampled wherever the thread was preempted: it is shown as its own row and taken out of the
other groups in proportion.

``--nonblocking`` reads a stack while it changes: some samples fail (counted as unreadable and
left out) and some come back truncated, which the innermost-first rule tolerates. Figures from a
shared machine move by tens of per cent between runs; compare groups within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import bench_lookups, bench_ratelimit, bench_seats
from benchmarks.common import bare_app, scratch_stores, wait_config_version
from loadtest.processes import Process, start_gateway

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_S = 3
LEAD_S = 1  # wrk runs this long before py-spy starts and after it stops
TOP_FRAMES = 15
EDGE = ("middleware", "edge", "shedding", "throttle", "metrics", "stats", "routing", "connections", "clientip",
        "errors", "liveconfig", "logs")
LOOP = "event loop (uvloop's C code)"
IDLE = "idle (epoll wait)"
PREEMPTED = "waiting for core 0 (other processes)"
OTHER = "other"
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("redis client", ("core/redis.py", "redis/", "hiredis/")),
    ("examgate edge", (*(f"gateway/{name}.py" for name in EDGE), "prometheus_client/")),
    ("routes & request handling", ("gateway/routes/", "gateway/")),  # auth, bodies, models, captcha gate…
    ("lookups/", ("lookups/",)),
    ("queueing/", ("queueing/",)),
    ("ratelimit/", ("ratelimit/",)),
    ("captcha/", ("captcha/",)),
    ("payments/", ("payments/",)),
    ("core/ (besides redis)", ("core/",)),
    ("bare app handler", ("benchmarks/bare_app.py",)),
    ("response writing (aiohttp, socket writes)", ("aiohttp/web_response.py", "aiohttp/http_writer.py")),
    ("aiohttp HTTP parsing & protocol", ("aiohttp/", "multidict/", "yarl/", "propcache/")),
    (LOOP, ("asyncio/runners.py", "uvloop/", "gateway/serve.py")),
)
PATHS = {  # path: (its set-up, what it is)
    "noop": ("edge", "GET /_bench/noop through the whole edge"),
    "redis_get": ("edge", "GET /_bench/redis-get: one auto-pipelined Redis GET"),
    "three_rules": ("edge", "GET /_bench/throttled under 3 generous rate-limit rules"),
    "score_lookup": ("lookups", "POST /api/v1/scores/lookup, captcha and throttles off"),
    "score_lookup_protected": ("lookups", "POST /api/v1/scores/lookup, load-test token, ip and id-number rules"),
    "queue_poll": ("seats", "GET /api/v1/exams/{id}/queue/{ticket} with a session"),
    "seat_hold": ("seats", "PUT /api/v1/registrations/{id}/seat moving between two sites"),
    "bare": ("bare", "GET /noop of the bare aiohttp + uvloop app"),
}
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_SAMPLES = re.compile(r"Samples: (\d+) Errors: (\d+)")


class Frame(NamedTuple):
    """One frame of a sampled stack: its function and its file, shortened to the package's path."""

    function: str
    path: str


def short_path(filename: str) -> str:
    """``aiohttp/web_protocol.py`` for any installed, standard-library or project file; others unchanged."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    if filename.startswith(f"{ROOT}/"):
        return filename[len(str(ROOT)) + 1:]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", filename)
    return stdlib[1] if stdlib else filename


def parse_frame(text: str) -> Frame:
    """A frame of py-spy's raw output, ``function (file:line)``."""
    found = _FRAME.match(text)
    return Frame(found["function"], short_path(found["file"])) if found else Frame(text, "")


def classify(stack: Sequence[Frame]) -> str:
    """The group of the innermost frame (the last) whose file belongs to one; ``other`` when none does."""
    for frame in reversed(stack):
        for group, prefixes in GROUPS:
            if frame.path.startswith(prefixes):
                return group
    return OTHER


def main_thread_stacks(raw: str, pid: int) -> list[tuple[tuple[Frame, ...], int]]:
    """The main thread's stacks and their sample counts from py-spy's raw output (recorded with ``--threads``)."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if thread.endswith(": MainThread") or thread.startswith(f"thread ({pid})"):
            stacks.append((tuple(parse_frame(frame) for frame in frames), int(count)))
    return stacks


# -- the process under load ---------------------------------------------------------------------


class SpyFailed(RuntimeError):
    """py-spy could not record the process (missing, or refused by ptrace)."""


def listening_pid(url: str) -> int:
    """The one process listening on ``url``'s port: the gateway's serving child (its supervisor holds no socket)."""
    port = urllib.parse.urlsplit(url).port
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{fields[9]}]")
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in sockets for fd in fd_dir.iterdir()):
                pids.add(int(fd_dir.parent.name))
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
    if len(pids) != 1:
        raise RuntimeError(f"expected one process listening on port {port}, found {sorted(pids)}")
    return pids.pop()


def scheduled_s(pid: int) -> tuple[float, float]:
    """Seconds the main thread of ``pid`` has run on a core, and waited runnable for one, so far."""
    run_ns, wait_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def record(pid: int, seconds: int, rate_hz: int, out: Path) -> tuple[int, int]:
    """py-spy on core 1 for ``seconds``, raw stacks to ``out``; (samples, unreadable samples)."""
    binary = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if binary is None:
        raise SpyFailed("py-spy is not installed: pip install -c constraints.txt -e '.[bench]'")
    command = [binary, "record", "--pid", str(pid), "--nonblocking", "--idle", "--threads", "--full-filenames",
               "--format", "raw", "--rate", str(rate_hz), "--duration", str(seconds), "--output", str(out)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    counted = _SAMPLES.search(done.stdout + done.stderr)
    if done.returncode != 0 or counted is None or not out.exists():
        raise SpyFailed(f"py-spy exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return int(counted[1]), int(counted[2])


# -- the set-ups --------------------------------------------------------------------------------


@dataclass
class Target:
    """A path under load: the URL its server listens on, a load of it (seconds → requests/s), what it answered wrong."""

    url: str
    load: Callable[[int], float]
    unexpected: Callable[[], dict[str, int]]
    before: Callable[[], None]


def _nothing() -> None:
    pass


def _load(url: str, load: bench_lookups.Load, before: Callable[[], None] = _nothing) -> Target:
    """A target loaded as the lookups benchmark loads its routes (a plain GET must answer 2xx only)."""
    phase = bench_lookups.Phase({"load": load})
    return Target(url, partial(phase.run, "load"), partial(phase.unexpected, "load"), before)


@contextmanager
def edge_setup(candidates: int) -> Iterator[dict[str, Target]]:
    """noop, redis_get and three_rules on one gateway set up as bench_redis_get and bench_ratelimit do."""
    with scratch_stores() as (pg_dsn, redis_url):
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true",
                                EXAMGATE_REDIS_CONNECTIONS="1")

        def three_rules() -> None:
            patch = {"ratelimit": {"rules": bench_ratelimit.RULES}, "shedding": {"max_loop_lag_ms": 0}}
            wait_config_version(gateway.url, gateway.patch_config(patch))

        try:
            yield {path: _load(gateway.url, bench_lookups.Load(gateway.url + route), before)
                   for path, route, before in [("noop", "/_bench/noop", _nothing),
                                               ("redis_get", "/_bench/redis-get", _nothing),
                                               ("three_rules", "/_bench/throttled", three_rules)]}
        finally:
            gateway.stop()


@contextmanager
def lookup_setup(candidates: int) -> Iterator[dict[str, Target]]:
    """Both score lookups, seeded, prewarmed and configured as in bench_lookups (``candidates`` seeded)."""
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        warm = asyncio.run(bench_lookups.seed_and_prewarm(pg_dsn, redis_url, candidates))
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_BENCH_ROUTES="true")
        try:
            off, on = bench_lookups.phases(gateway, None, warm["exam_id"], candidates, Path(tmp))
            yield {path: _load(gateway.url, spec.loads["lookup_redis"],
                               partial(bench_lookups.apply_phase, gateway, spec))
                   for path, spec in (("score_lookup", off), ("score_lookup_protected", on))}
        finally:
            gateway.stop()


@contextmanager
def seat_setup(candidates: int) -> Iterator[dict[str, Target]]:
    """The queue poll and the seat hold, prepared and configured as in bench_seats."""
    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        data = asyncio.run(bench_seats.prepare(pg_dsn, redis_url))
        gateway: Process = bench_seats.start_seat_gateway(pg_dsn, redis_url, data)
        try:
            loads = bench_seats.Loads(gateway.url, gateway.metrics_token(), data, Path(tmp))

            def unexpected(name: str) -> dict[str, int]:
                return {status: n for status, n in loads.statuses[name].items() if status != "200"}

            yield {"queue_poll": Target(gateway.url, loads.poll, partial(unexpected, "poll"), _nothing),
                   "seat_hold": Target(gateway.url, loads.seat, partial(unexpected, "seat"), _nothing)}
        finally:
            gateway.stop()


@contextmanager
def bare_setup(candidates: int) -> Iterator[dict[str, Target]]:
    """The bare aiohttp app pinned to core 0."""
    with bare_app() as url:
        yield {"bare": _load(url, bench_lookups.Load(url + "/noop"))}


SETUP_FUNCTIONS = {"edge": edge_setup, "lookups": lookup_setup, "seats": seat_setup, "bare": bare_setup}


# -- one profile --------------------------------------------------------------------------------


def split(stacks: list[tuple[tuple[Frame, ...], int]], us_per_request: float, on_core: float,
          waiting: float) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """µs/request by group, and by innermost frame (with its group), from the main thread's sampled stacks.

    ``on_core`` and ``waiting`` are the shares of the profile the thread ran and waited for its core.
    """
    total = sum(count for _, count in stacks)
    groups: Counter[str] = Counter()
    frames: Counter[tuple[str, str]] = Counter()
    for stack, count in stacks:
        group = classify(stack)
        groups[group] += count
        frames[f"{stack[-1].function} ({stack[-1].path})" if stack else "(no Python frame)", group] += count
    us = {group: count / total * us_per_request for group, count in groups.items()}
    us[IDLE] = min(us.get(LOOP, 0.0), max(0.0, 1 - on_core - waiting) * us_per_request)
    us[LOOP] = us.get(LOOP, 0.0) - us[IDLE]
    busy_us = us_per_request - us[IDLE]  # sampled while on a core or preempted
    us[PREEMPTED] = min(busy_us, waiting * us_per_request)
    scale = (busy_us - us[PREEMPTED]) / busy_us if busy_us else 0.0
    return ({group: value if group in (IDLE, PREEMPTED) else value * scale for group, value in us.items()},
            {key: count / total * us_per_request * scale for key, count in frames.items()})


def profile(target: Target, seconds: int, rate_hz: int, raw_path: Path) -> dict[str, Any]:
    """Load the target, record its serving process meanwhile, and split its time per request into groups."""
    target.before()
    target.load(WARM_UP_S)
    pid = listening_pid(target.url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(target.load, seconds + 2 * LEAD_S)
        time.sleep(LEAD_S)
        (run_before, wait_before), wall_before = scheduled_s(pid), time.perf_counter()
        samples, unreadable = record(pid, seconds, rate_hz, raw_path)
        (run_after, wait_after), wall_s = scheduled_s(pid), time.perf_counter() - wall_before
        rps = loading.result()
    stacks = main_thread_stacks(raw_path.read_text(), pid)
    if not stacks or not rps:
        raise RuntimeError(f"nothing to split: {len(stacks)} main-thread stacks at {rps} requests/s")
    on_core, waiting = (run_after - run_before) / wall_s, (wait_after - wait_before) / wall_s
    us_per_request = 1e6 / rps  # the profile's seconds over the requests served in them
    groups, frames = split(stacks, us_per_request, on_core, waiting)
    top = sorted(frames.items(), key=lambda item: -item[1])[:TOP_FRAMES]
    return {"pid": pid, "requests_per_s": round(rps), "us_per_request": round(us_per_request, 2),
            "seconds": seconds, "rate_hz": rate_hz, "main_thread_samples": sum(count for _, count in stacks),
            "samples": samples, "unreadable_samples": unreadable, "on_core": round(on_core, 3),
            "waiting_for_core": round(waiting, 3),
            "groups_us": {group: round(us, 2) for group, us in sorted(groups.items(), key=lambda item: -item[1])},
            "top_frames_us": [{"frame": frame, "group": group, "us": round(us, 2)} for (frame, group), us in top],
            "unexpected_answers": target.unexpected()}


def render(path: str, result: dict[str, Any]) -> str:
    """One path's profile as plain text."""
    per_request = result["us_per_request"]
    lines = [f"== {path}: {PATHS[path][1]} (pid {result['pid']})",
             (f"   {result['requests_per_s']:,} req/s while profiled ({result['seconds']} s at {result['rate_hz']} Hz: "
              f"{result['main_thread_samples']:,} main-thread samples, {result['unreadable_samples']:,} unreadable), "
              f"on core {result['on_core']:.0%}, waiting for it {result['waiting_for_core']:.0%}: "
              f"{per_request:.1f} µs per request"),
             f"   {'group':<46}{'µs/req':>8}{'share':>8}"]
    lines += [f"   {group:<46}{us:>8.1f}{us / per_request:>8.0%}" for group, us in result["groups_us"].items() if us]
    lines.append(f"   {'top frames by self time (the loop runner: idle included)':<80}{'µs/req':>8}  group")
    lines += [f"   {row['frame'][:80]:<80}{row['us']:>8.1f}  {row['group']}" for row in result["top_frames_us"]]
    if result["unexpected_answers"]:
        lines.append(f"   UNEXPECTED ANSWERS: {result['unexpected_answers']}")
    return "\n".join(lines)


def compare(results: dict[str, dict[str, Any]]) -> str:
    """The groups' µs/request side by side, one column per path."""
    groups = [group for group, _ in GROUPS if group != LOOP] + [LOOP, OTHER, IDLE, PREEMPTED]
    lines = [f"{'µs per request':<46}" + "".join(f"{path[:14]:>15}" for path in results)]
    for group in groups:
        values = [result["groups_us"].get(group, 0.0) for result in results.values()]
        if any(values):
            lines.append(f"{group:<46}" + "".join(f"{value:>15.1f}" for value in values))
    lines.append(f"{'total (1 / requests per second)':<46}"
                 + "".join(f"{result['us_per_request']:>15.1f}" for result in results.values()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the named paths; exit 1 when one answered something unexpected."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", choices=list(PATHS), metavar="PATH", help=", ".join(PATHS))
    parser.add_argument("--seconds", type=int, default=10, help="profile length per path (default 10)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--candidates", type=int, default=bench_lookups.KEYS,
                        help=f"candidates seeded for the lookups (at least {bench_lookups.KEYS:,})")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this directory (flamegraph.pl input)")
    args = parser.parse_args(argv)
    if args.candidates < bench_lookups.KEYS:
        parser.error(f"--candidates must be at least {bench_lookups.KEYS:,}: the lookups rotate through that many")
    paths = list(dict.fromkeys(args.paths))
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        raw_dir = args.raw or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-raw-")))
        raw_dir.mkdir(parents=True, exist_ok=True)
        for setup in dict.fromkeys(PATHS[path][0] for path in paths):
            print(f"-- setting up {setup}", flush=True)
            with SETUP_FUNCTIONS[setup](args.candidates) as targets:
                for path in (path for path in paths if PATHS[path][0] == setup):
                    print(f"-- profiling {path} for {args.seconds} s", flush=True)
                    results[path] = profile(targets[path], args.seconds, args.rate, raw_dir / f"{path}.txt")
    print()
    for path in paths:
        print(render(path, results[path]), end="\n\n")
    if len(results) > 1:
        print(compare({path: results[path] for path in paths}))
    if args.json:
        args.json.write_text(json.dumps({"paths": {path: results[path] for path in paths}}, indent=2,
                                        ensure_ascii=False))
    return 1 if any(result["unexpected_answers"] for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
