"""The profiler's bookkeeping: py-spy's raw stacks read, classified innermost first, and split per request."""

from __future__ import annotations

import pytest

from benchmarks import profile
from benchmarks.profile import Frame

pytestmark = pytest.mark.unit

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/py/lib/python3.11"


def line(thread: str, frames: list[str], count: int) -> str:
    """One line of ``py-spy record --threads -f raw``."""
    return ";".join([thread, *frames]) + f" {count}"


RAW = "\n".join([
    line("thread (41): MainThread", [f"run_child ({profile.ROOT}/gateway/serve.py:1)",
                                     f"Runner.run ({STDLIB}/asyncio/runners.py:118)"], 6),
    line("thread (41): MainThread", [f"RequestHandler.start ({SITE}/aiohttp/web_protocol.py:686)",
                                     f"Edge.wrap.<locals>.edge ({profile.ROOT}/gateway/edge.py:90)",
                                     f"lookup ({profile.ROOT}/gateway/routes/lookups.py:50)",
                                     f"dumps ({STDLIB}/json/__init__.py:231)"], 2),
    line("thread (41): MainThread", [], 1),
    line("thread (57): ThreadPoolExecutor-0_0", [f"_worker ({STDLIB}/concurrent/futures/thread.py:81)"], 9),
])


def test_only_the_main_threads_stacks_are_read_with_short_paths() -> None:
    stacks = profile.main_thread_stacks(RAW, pid=41)
    assert [count for _, count in stacks] == [6, 2, 1]
    assert stacks[0][0][-1] == Frame("Runner.run", "asyncio/runners.py")
    assert [frame.path for frame in stacks[1][0]] == ["aiohttp/web_protocol.py", "gateway/edge.py",
                                                      "gateway/routes/lookups.py", "json/__init__.py"]


@pytest.mark.parametrize(("paths", "group"), [
    (["aiohttp/web_protocol.py", "gateway/edge.py", "gateway/routes/lookups.py", "json/__init__.py"],
     "routes & request handling"),
    (["gateway/routes/lookups.py", "lookups/records.py", "core/redis.py", "asyncio/locks.py"], "redis client"),
    (["gateway/edge.py", "gateway/throttle.py", "ratelimit/limiter.py"], "ratelimit/"),
    (["aiohttp/web_protocol.py", "gateway/edge.py", "prometheus_client/values.py"], "examgate edge"),
    (["aiohttp/web_protocol.py", "aiohttp/web_response.py", "aiohttp/http_writer.py"],
     "response writing (aiohttp, socket writes)"),
    (["gateway/serve.py", "asyncio/runners.py", "_weakrefset.py"], profile.LOOP),
    (["<frozen runpy>"], profile.OTHER),
    ([], profile.OTHER),
])
def test_a_sample_belongs_to_its_innermost_frame_of_a_known_group(paths: list[str], group: str) -> None:
    assert profile.classify([Frame("f", path) for path in paths]) == group


def test_idle_comes_out_of_the_loop_runner_and_waiting_out_of_every_group_in_proportion() -> None:
    stacks = profile.main_thread_stacks(RAW, pid=41)  # 6 loop runner, 2 routes, 1 unreadable: 9 samples
    groups, frames = profile.split(stacks, us_per_request=90.0, on_core=0.6, waiting=0.1)
    assert groups[profile.IDLE] == pytest.approx(27.0)  # 30 % asleep, out of the runner's 60 µs
    assert groups[profile.PREEMPTED] == pytest.approx(9.0)
    scale = (90.0 - 27.0 - 9.0) / (90.0 - 27.0)
    assert groups[profile.LOOP] == pytest.approx(33.0 * scale)
    assert groups["routes & request handling"] == pytest.approx(20.0 * scale)
    assert sum(groups.values()) == pytest.approx(90.0)
    assert frames["dumps (json/__init__.py)", "routes & request handling"] == pytest.approx(20.0 * scale)
