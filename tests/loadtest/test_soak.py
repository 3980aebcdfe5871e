"""The soak: its arithmetic on made-up samples, then the CI version — two minutes of mixed-peak against a stack.

The stack is the soak's own (a private redis-server, so used_memory, the clients and every key are the
run's alone; a database of its own on the test PostgreSQL server; a 2-process gateway and the worker).
Sessions, waiting-room places and seat holds are given short lives so they expire within the run: the
gateway's session idle / absolute timeouts (15 / 40 s), and through the live config ``place_ttl_s`` 10 s
and ``hold_ttl_s`` 60 s (the shortest allowed). Besides the load, a few *leavers* walk away as
candidates do: each signs in and never signs out, joins the waiting room and never polls, holds a seat
in an exam of its own and never pays; the verdicts then show what was left to expire was cleaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import db
from loadtest import report
from loadtest.admin import Operator
from loadtest.candidates import client_address
from loadtest.private_stack import PrivateStack, provider_ids
from loadtest.rehearsal_record import append_run, run_entry
from loadtest.resources import Sample, key_family, read_samples
from loadtest.run import RunOptions
from loadtest.scenarios import SCENARIOS
from loadtest.soak import Bounds, SoakPlan, judge, run_soak, thirds
from loadtest.verdicts import Thresholds, Verdict
from seed import EXAM_B_CODE, candidate_credentials
from tests.conftest import TEST_PG_SERVER
from tests.factories import make_exam
from tests.gateway.seat_stack import make_registrations

CANDIDATES = 80
# The users' closed window (candidates 0 … 59), small enough that every kind of user has gone through it
# within the warm-up: what a candidate legitimately leaves (a registration, a seat, cached lookups) is
# all there by the middle third, so whatever still grows after it grows with time.
LOAD_WINDOW = 60
LEAVERS = range(LOAD_WINDOW, CANDIDATES)  # the leavers' own candidates
SOAK_S = 120
SHORT_LIVES = {"EXAMGATE_SESSION_IDLE_TIMEOUT_S": "15", "EXAMGATE_SESSION_ABSOLUTE_TIMEOUT_S": "40"}
PLACE_TTL_S = 10
ADMISSION_TTL_S = 10  # with the place TTL: a passed place is forgotten 30 s after it was passed
HOLD_TTL_S = 60
LEAVE_EVERY_S = 3.5  # each leaver is back after 70 s: its hold (60 s) has expired by then


# --- the arithmetic, on made-up samples -------------------------------------------------------------------

def sample(t: float, keys: dict[str, int] | None = None, rss: int = 100 << 20, memory: int = 10 << 20,
           clients: int = 12, pg: int = 8, **entries: int) -> Sample:
    return Sample(t, {"gateway 1": rss}, memory, clients, keys or {}, dict(entries), pg, [],
                  dict.fromkeys(keys or {}, -1.0))


def verdicts_of(samples: list[Sample]) -> dict[str, Verdict]:
    return {v.option: v for v in judge(samples)}


@pytest.mark.unit
@pytest.mark.parametrize(("key", "family"), [
    ("eg:session:9f86d081884c7d659a2feaa0c55ad015", "eg:session:*"),
    ("eg:{candidate:17}:sessions", "eg:{candidate:*}:sessions"),
    ("eg:{exam:12}:site:3:left", "eg:{exam:*}:site:*:left"),
    ("eg:{exam:12}:holds:expiry", "eg:{exam:*}:holds:expiry"),
    ("eg:{rl}:login-ip:10.1.2.3", "eg:{rl}:login-ip:*"),
    ("eg:{rl}:lookup-ip:2001:db8::1", "eg:{rl}:lookup-ip:*"),
    ("eg:config", "eg:config"),
    ("eg:captcha:pow:AbCdEfGhIjKlMnOpQrStUv", "eg:captcha:pow:*"),
])
def test_keys_fall_into_families_with_their_variable_parts_starred(key: str, family: str) -> None:
    assert key_family(key) == family


@pytest.mark.unit
def test_a_steady_run_passes_every_verdict() -> None:
    samples = [sample(t, {"eg:session:*": 300 + (t % 20), "eg:config": 1}, clients=12 + t % 2, **{"holds": 40})
               for t in range(0, 121, 10)]
    found = verdicts_of(samples)
    assert [v.passed for v in found.values()] == [True] * 4, found
    assert "none of 3 key families and kinds of entries grew" in found["keys"].text


@pytest.mark.unit
def test_a_family_growing_with_time_fails_the_keys_verdict_and_is_named() -> None:
    samples = [sample(t, {"eg:session:*": 300, "eg:leak:*": 10 * t}) for t in range(0, 121, 10)]
    verdict = verdicts_of(samples)["keys"]
    assert not verdict.passed
    assert "1 of 2" in verdict.text and "eg:leak:*" in verdict.text and "+600.0/min" in verdict.text, verdict.text


@pytest.mark.unit
def test_growth_within_the_bound_passes_and_beyond_it_fails() -> None:
    # Middle third 1,000 keys; the bound is 10% (100) of that, more than the 50 floor.
    within = [sample(t, {"eg:x:*": 1000 if t < 80 else 1090}) for t in range(0, 121, 10)]
    beyond = [sample(t, {"eg:x:*": 1000 if t < 80 else 1150}) for t in range(0, 121, 10)]
    assert verdicts_of(within)["keys"].passed
    assert not verdicts_of(beyond)["keys"].passed


@pytest.mark.unit
def test_warm_up_growth_is_not_held_against_the_run() -> None:
    # Caches fill in the first third, then stay: the middle and last thirds agree.
    samples = [sample(t, {"eg:lk:*": min(t, 40) * 100}) for t in range(0, 121, 10)]
    assert len(thirds(samples).warmup) == 4
    assert verdicts_of(samples)["keys"].passed


@pytest.mark.unit
def test_a_family_whose_keys_outlive_a_third_of_the_run_is_named_not_judged() -> None:
    # Per-second buckets kept 120 s keep adding up through a 2-minute run; that is no leak.
    samples = [sample(t, {"eg:stats:*": t, "eg:leak:*": 10 * t}) for t in range(0, 121, 10)]
    samples = [s._replace(ttls={"eg:stats:*": 119.5, "eg:leak:*": -1.0}) for s in samples]
    verdict = verdicts_of(samples)["keys"]
    assert not verdict.passed and "eg:leak:*" in verdict.text.split("not judged")[0], verdict.text
    assert "not judged, their keys live longer than a third of the run (40 s): eg:stats:* 120 s" in verdict.text


@pytest.mark.unit
def test_rss_growth_overdue_holds_and_connection_growth_each_fail_their_verdict() -> None:
    growing_rss = [sample(t, rss=(100 << 20) + t * (1 << 20)) for t in range(0, 121, 10)]
    verdict = verdicts_of(growing_rss)["memory"]
    assert not verdict.passed and "gateway 1" in verdict.text and "MiB" in verdict.text, verdict.text

    overdue = [sample(t, **{"holds overdue": 3 if t == 90 else 0}) for t in range(0, 121, 10)]
    verdict = verdicts_of(overdue)["cleanup"]
    assert not verdict.passed and "3 seat holds overdue" in verdict.text, verdict.text
    early = [sample(t, **{"holds overdue": 3 if t == 10 else 0}) for t in range(0, 121, 10)]
    assert verdicts_of(early)["cleanup"].passed  # the warm-up's backlog is not judged

    leaking = [sample(t, pg=8 + t // 10) for t in range(0, 121, 10)]
    verdict = verdicts_of(leaking)["connections"]
    assert not verdict.passed and "postgresql connections" in verdict.text, verdict.text


@pytest.mark.unit
def test_too_few_samples_is_a_failure_not_a_pass() -> None:
    found = verdicts_of([sample(0)])
    assert not found["keys"].passed and not found["cleanup"].passed


@pytest.mark.unit
def test_the_live_config_a_soak_changes_is_put_back_as_it_was() -> None:
    from loadtest.soak import _undo

    before = {"seats": {"hold_ttl_s": 1800}, "queue": {"exams": {"7": {"enabled": False}}}}
    patch = {"seats": {"hold_ttl_s": 60}, "queue": {"exams": {"7": {"place_ttl_s": 10}, "8": {"place_ttl_s": 10}}}}
    assert _undo(patch, before) == {"seats": {"hold_ttl_s": 1800},
                                    "queue": {"exams": {"7": {"place_ttl_s": None}, "8": None}}}


@pytest.mark.unit
def test_runs_are_added_to_the_rehearsal_record(tmp_path: Path) -> None:
    ok = run_entry("mixed-peak", "soak", tmp_path / "mixed-peak-soak", {"duration_s": 120},
                   [Verdict("keys", True, "ok   keys")], None)
    path = append_run(tmp_path, ok)
    bad = run_entry("mixed-peak", "chaos:pause-redis", tmp_path / "mixed-peak-chaos-pause-redis", {},
                    [Verdict("capacity", False, "FAIL capacity")], None)
    append_run(tmp_path, bad)
    append_run(tmp_path, ok)  # the same run again replaces the first
    record = json.loads(path.read_text())
    assert [r["phase"] for r in record["runs"]] == ["chaos:pause-redis", "soak"]
    assert record["passed"] is False
    assert record["runs"][1] == {"scenario": "mixed-peak", "phase": "soak", "dir": "mixed-peak-soak",
                                 "target": {"duration_s": 120},
                                 "verdicts": [{"name": "keys", "passed": True, "detail": "ok   keys"}],
                                 "passed": True, "invalid": None}
    assert set(record["machine"]) == {"cpus", "cpu_model", "memory_gib", "python", "commit"}


# --- two minutes of mixed-peak -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = PrivateStack.start(tmp_path_factory.mktemp("soak-stack"), CANDIDATES, pg_server=TEST_PG_SERVER,
                               gateway_env=SHORT_LIVES)
    try:
        yield stack
    finally:
        stack.stop()


class Leavers:
    """Candidates who walk away: signed in and never out, a place taken and never polled, a seat never paid."""

    def __init__(self, stack: PrivateStack, room_exam: int, hold_exam: int, hold_site: int,
                 registrations: dict[int, int], token: str) -> None:
        self.stack, self.room_exam, self.hold_exam, self.hold_site = stack, room_exam, hold_exam, hold_site
        self.registrations, self.token = registrations, token
        self.left: dict[str, int] = {"sessions": 0, "places": 0, "holds": 0}
        self.refused = 0  # sign-ins shed (503 overloaded: the password-hashing pool is full)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leavers", daemon=True)

    def __enter__(self) -> Leavers:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _call(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(self.stack.gateway.url + path, data=json.dumps(body).encode(),
                                         method=method, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()[:300]

    def _leave(self, index: int) -> None:
        credentials = candidate_credentials(index)
        address = {"X-Forwarded-For": client_address(index)}
        status, body = self._call("POST", "/api/v1/sessions", {"username": credentials.username,
                                                               "password": credentials.password},
                                  {**address, "X-Loadtest-Token": self.token})
        if status == 503:
            self.refused += 1
            return
        if status != 201:
            self.errors.append(f"sign-in {status} {body!r}")
            return
        self.left["sessions"] += 1
        signed = {**address, "Authorization": f"Bearer {body['token']}"}
        status, body = self._call("POST", f"/api/v1/exams/{self.room_exam}/queue", {}, signed)
        if status == 202:
            self.left["places"] += 1
        else:
            self.errors.append(f"queue {status} {body!r}")
        registration = self.registrations[index]
        status, body = self._call("PUT", f"/api/v1/registrations/{registration}/seat", {"site_id": self.hold_site},
                                  signed)
        if status == 200:
            self.left["holds"] += 1
        elif status != 409:  # already held: back before the previous hold expired
            self.errors.append(f"seat {status} {body!r}")

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(LEAVE_EVERY_S):
            self._leave(LEAVERS[turn % len(LEAVERS)])
            turn += 1


async def _leavers_registrations(stack: PrivateStack) -> tuple[int, int, dict[int, int]]:
    """An exam of the leavers' own (no waiting room, one big site), and an approved registration in it for each."""
    conn = await db.connect(stack.dsn)
    try:
        exam_id = await make_exam(conn, sites=[("11", 10_000)])
        site_id = await conn.fetchval("SELECT id FROM exam_sites WHERE exam_id = $1", exam_id)
        usernames = [candidate_credentials(i).username for i in LEAVERS]
        rows = await conn.fetch("SELECT id, username FROM candidates WHERE username = ANY($1)", usernames)
        by_name = {row["username"]: row["id"] for row in rows}
        ids = [by_name[candidate_credentials(i).username] for i in LEAVERS]
        registrations = await make_registrations(conn, exam_id, ids)
        return exam_id, site_id, dict(zip(LEAVERS, registrations, strict=True))
    finally:
        await conn.close()


@pytest.mark.timeout(420)
def test_two_minutes_of_mixed_peak_grow_nothing_and_what_expired_is_cleaned(soak_stack: PrivateStack,
                                                                            tmp_path: Path) -> None:
    stack = soak_stack
    room_exam = stack.exam_ids[EXAM_B_CODE]
    hold_exam, hold_site, registrations = asyncio.run(_leavers_registrations(stack))
    operator = Operator(stack.gateway.url, stack.admin_token)
    stack.wait_inventory()
    token = operator.issue_loadtest_token(SOAK_S + 600, "soak leavers")
    report_dir = tmp_path / "report"
    ids = provider_ids()
    options = RunOptions(
        scenario=SCENARIOS["mixed-peak"], host=stack.gateway.url, admin_token=stack.admin_token, users=10,
        spawn_rate=10, duration_s=SOAK_S, processes=1, out_dir=report_dir / "mixed-peak-soak",
        thresholds=Thresholds(None, 0.01, None, None), first_candidate=0, candidates=LOAD_WINDOW, think_ms=100,
        keys_dir=str(stack.keys_dir), alipay_app_id=ids["alipay_app_id"], wechat_app_id=ids["wechat_app_id"],
        wechat_mch_id=ids["wechat_mch_id"],
    )  # fmt: skip
    live = {"seats": {"hold_ttl_s": HOLD_TTL_S},
            "queue": {"exams": {str(room_exam): {"place_ttl_s": PLACE_TTL_S, "admission_ttl_s": ADMISSION_TTL_S}}}}
    plan = SoakPlan(options, stack.redis.url, stack.dsn, stack.processes, report_dir=report_dir, interval_s=10,
                    bounds=Bounds(), metrics_token=stack.gateway.metrics_token(), live_config=live)
    printed: list[str] = []
    leavers = Leavers(stack, room_exam, hold_exam, hold_site, registrations, token)
    with contextlib.ExitStack() as running:
        running.enter_context(leavers)
        code = run_soak(plan, echo=printed.append)
    text = "\n".join(printed)
    print(text)
    print(f"leavers: {leavers.left}, sign-ins shed {leavers.refused}, errors: {leavers.errors[:5]}")

    samples = list(read_samples(options.out_dir / "soak.jsonl"))
    assert len(samples) >= 12, text
    assert {label.split()[0] for label in samples[-1].rss} == {"gateway", "worker"}
    assert all(s.redis_memory and s.pg_connections is not None and not s.errors for s in samples), samples
    # The leavers left sessions, places and holds behind, and each kind expired within the run.
    assert not leavers.errors, leavers.errors
    assert min(leavers.left.values()) >= 20, leavers.left
    last = samples[-1]
    assert last.keys.get("eg:session:*", 0) < leavers.left["sessions"], last.keys
    assert last.entries.get("waiting-room places live", 0) < leavers.left["places"], last.entries
    assert last.entries.get("holds expiring", 0) < leavers.left["holds"], last.entries
    record = json.loads((report_dir / "rehearsal.json").read_text())
    assert [(r["scenario"], r["phase"], r["dir"]) for r in record["runs"]] == [("mixed-peak", "soak",
                                                                                 "mixed-peak-soak")]
    assert [v["name"] for v in record["runs"][0]["verdicts"]] == ["load", "keys", "cleanup", "memory", "connections"]
    assert (options.out_dir / "metrics.jsonl").stat().st_size > 0
    assert "mixed-peak" in report.write(report_dir).read_text()
    found = {v["name"]: v for v in record["runs"][0]["verdicts"]}
    assert all(v["passed"] for v in found.values()), text
    assert code == 0, text
    assert record["passed"] is True
