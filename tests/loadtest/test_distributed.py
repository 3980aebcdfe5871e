"""A Locust master and two worker machines: the summary and the verdicts are the sum of both workers.

Three separate ``examgate loadtest`` processes on loopback, as on three machines: the master
(``--processes 0 --remote-workers 2``: no load of its own) and two ``--worker --master-host``
commands. Each worker counts the requests it made itself and says so; the master's figures must
hold exactly the sum, with both workers in them.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.processes import ROOT, free_port
from tests.loadtest.conftest import CANDIDATES, RUN_TIMEOUT_S, THRESHOLDS, Run, Stack

pytestmark = pytest.mark.timeout(180)

WORKER_SENT = re.compile(r"^worker (\d): (\S+) \(index (\d+)\) sent (\d+) requests, (\d+) failed$", re.MULTILINE)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "examgate", "loadtest", "login-storm", *args]


def distributed_run(stack: Stack, out_dir: Path, *args: str, duration: str = "4s") -> tuple[Run, list[str]]:
    """The master and two one-process worker commands to the end: the master's run, the workers' output."""
    port = free_port()
    master_env = {k: v for k, v in os.environ.items() if not k.startswith("EXAMGATE_")}
    master_env["EXAMGATE_SECRETS_FILE"] = str(Path(stack.gateway.extra["run_dir"]) / "secrets.json")
    # A worker machine has the checkout and nothing else: no settings, no secrets, no token.
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMGATE_", "LOCUST_"))}
    master = subprocess.Popen(
        _command("--host", stack.gateway.url, "--out", str(out_dir / "master"), "--users", "6", "--duration", duration,
                 "--candidates", str(CANDIDATES), "--think-ms", "50", "--processes", "0", "--remote-workers", "2",
                 "--master-bind-host", "127.0.0.1", "--master-port", str(port), *args),
        cwd=ROOT, env=master_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(
        _command("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--processes", "1",
                 "--out", str(out_dir / f"machine-{number}")),
        cwd=ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for number in (1, 2)]
    try:
        stdout, stderr = master.communicate(timeout=RUN_TIMEOUT_S)
        outputs = []
        for worker in workers:
            worker_out, worker_err = worker.communicate(timeout=30)
            assert worker.returncode == 0, f"worker exit {worker.returncode}\n{worker_out}\n{worker_err}"
            outputs.append(worker_out)
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait()
    print(stdout, *outputs, sep="\n")
    return Run(master.returncode, stdout, stderr, out_dir / "master"), outputs


def test_the_master_sums_two_worker_machines_and_judges_the_sum(stack: Stack, tmp_path: Path) -> None:
    run, outputs = distributed_run(stack, tmp_path, *THRESHOLDS)

    assert run.code == 0, run.explain()
    assert "2 worker processes" in run.stdout and "PASSED (exit code 0)" in run.stdout
    # What each worker machine says it sent (its own count of its requests, by Locust client id).
    sent: dict[str, tuple[int, int, int]] = {}
    for output in outputs:
        ((_, client_id, index, requests, failures),) = WORKER_SENT.findall(output)
        sent[client_id] = (int(index), int(requests), int(failures))
    assert sorted(index for index, _, _ in sent.values()) == [0, 1]  # two workers, each its share of candidates
    assert all(requests > 0 for _, requests, _ in sent.values()), sent

    figures = run.figures
    assert figures["workers"] == 2
    assert {worker: (t["index"], t["requests"], t["failures"])
            for worker, t in figures["worker_requests"].items()} == sent
    assert set(figures["cpu"]["workers"]) == set(sent), "CPU samples from both workers"
    # The merged figures hold every request either worker made, no more and no fewer.
    total = sum(requests for _, requests, _ in sent.values())
    assert sum(entry["requests"] for entry in figures["entries"]) == total
    with open(run.out_dir / "locust_stats.csv", newline="") as fh:
        aggregated = next(row for row in csv.DictReader(fh) if row["Name"] == "Aggregated")
    assert int(aggregated["Request Count"]) == total
    # The verdicts are judged on that sum, as for one process.
    assert f"ok   --max-fail-ratio: 0.0000 (0 of {total:,} requests)" in run.stdout
    counts = sorted(sent.values())
    assert (f"load generator workers: 2 reported, requests #0 {counts[0][1]:,}, #1 {counts[1][1]:,} = {total:,}, "
            "the figures above") in run.stdout


def test_a_missed_threshold_fails_the_distributed_run(stack: Stack, tmp_path: Path) -> None:
    run, outputs = distributed_run(stack, tmp_path, "--target-rps", "1000000", duration="2s")

    assert run.code == 1, run.explain()
    assert "FAIL --target-rps:" in run.stdout and "FAILED: a threshold was missed (exit code 1)" in run.stdout
    assert run.figures["workers"] == 2
    assert all(len(WORKER_SENT.findall(output)) == 1 for output in outputs)
