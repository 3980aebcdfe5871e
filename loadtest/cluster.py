"""``python -m loadtest.cluster up|down``: a local Redis Cluster (three masters, three replicas) to develop,
test and benchmark against.

``up`` starts six ``redis-server`` processes (the system's binary: the Debian package ``redis-server``,
which scripts/system-deps.sh installs) on free loopback ports, each in a directory of its own under
``.run/redis-cluster/``; joins them (``CLUSTER MEET``), gives the three masters the 16384 slots in
three ranges (``CLUSTER ADDSLOTSRANGE``), makes each of the other three a replica of one master
(``CLUSTER REPLICATE``), and waits (at most 30 s) until every node says ``cluster_state:ok``, all agree
on the slots and every replica's link to its master is up. It then prints the entry URL on stdout
(the steps go to stderr) and returns: the nodes keep running, detached from the terminal, until
``down``::

    $ python -m loadtest.cluster up
    redis://127.0.0.1:41234/0
    $ redis-cli -c -p 41234 set greeting hello      # -c: follow MOVED to the slot's master
    $ python -m loadtest.cluster down

Any node is an entry point for a cluster client (redis-py ``RedisCluster.from_url(url)``,
``redis-cli -c``); the one printed is the first master. ``.run/redis-cluster/cluster.json`` records
every node's port, pid, node id, role at start and directory. ``down`` stops exactly those processes
— each only after checking it is still the redis-server started there (its working directory is its
node's) — with SIGTERM, then SIGKILL after 5 s, and removes their directories and the state file.
``up`` refuses while a cluster it started is still running; ``--dir`` keeps another one elsewhere.

The nodes keep no data on disk (no RDB, no AOF), only their cluster config files, and a replica takes
over from a dead master within a few seconds (``cluster-node-timeout 1000``). The same cluster, from
``loadtest.cluster_servers.RedisClusterServers``, is the tests' ``redis_cluster`` fixture, which can also
kill a node, wait for the failover and restart the node as a replica.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.cluster_servers import RedisClusterServers
from loadtest.processes import ROOT

DEFAULT_DIR = ROOT / ".run" / "redis-cluster"
STATE_FILE = "cluster.json"
STOP_TIMEOUT_S = 5


def say(line: str) -> None:
    """A progress line on stderr (stdout carries only the URL)."""
    print(f"redis-cluster: {line}", file=sys.stderr, flush=True)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state ``up`` wrote in ``directory``, or None when there is none."""
    try:
        return dict(json.loads((directory / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None


def is_ours(node: dict[str, Any]) -> bool:
    """Whether the node's pid is still the redis-server ``up`` started: redis-server works in its node directory."""
    try:
        return Path(os.readlink(f"/proc/{node['pid']}/cwd")).resolve() == Path(node["dir"]).resolve()
    except OSError:
        return False


def up(directory: Path) -> int:
    """Start the cluster, record it in ``directory``, print its URL."""
    state = read_state(directory)
    if state is not None:
        running = [node for node in state["nodes"] if is_ours(node)]
        if running:
            pids = ", ".join(str(node["pid"]) for node in running)
            say(f"a cluster is already running at {state['url']} (pids {pids}); "
                "python -m loadtest.cluster down stops it")
            return 1
        say("clearing the state of a cluster no longer running")
        remove(directory, state)
    directory.mkdir(parents=True, exist_ok=True)
    cluster = RedisClusterServers(base_dir=directory, own_session=True)
    try:
        cluster.start(progress=say)
        masters = set(cluster.masters())
        nodes = [{"port": s.port, "pid": s.proc.pid if s.proc else None, "id": cluster.ids[s.port],
                  "role": "master" if s.port in masters else "replica", "dir": str(s.dir)} for s in cluster.servers]
        temporary = directory / f"{STATE_FILE}.tmp"
        temporary.write_text(json.dumps({"url": cluster.url, "nodes": nodes}, indent=2) + "\n")
        temporary.replace(directory / STATE_FILE)
    except (RuntimeError, TimeoutError, OSError) as exc:
        cluster.stop()
        say(f"failed: {exc}")
        return 1
    say(f"up: masters on {', '.join(str(p) for p in cluster.ports if p in masters)}, "
        f"python -m loadtest.cluster down stops it (state: {directory / STATE_FILE})")
    print(cluster.url, flush=True)
    return 0


def down(directory: Path) -> int:
    """Stop the cluster recorded in ``directory`` and remove its directories."""
    state = read_state(directory)
    if state is None:
        say(f"no cluster recorded in {directory}: nothing to stop")
        return 0
    running = [node for node in state["nodes"] if is_ours(node)]
    for node in running:
        os.kill(node["pid"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(is_ours(node) for node in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for node in running:
        if is_ours(node):
            say(f"node {node['port']} (pid {node['pid']}) still running after {STOP_TIMEOUT_S} s: SIGKILL")
            os.kill(node["pid"], signal.SIGKILL)
    remove(directory, state)
    say(f"stopped {len(running)} node(s) of {state['url']}")
    return 0


def remove(directory: Path, state: dict[str, Any]) -> None:
    """Remove the recorded nodes' directories (only those inside ``directory``) and the state file."""
    for node in state["nodes"]:
        node_dir = Path(node["dir"]).resolve()
        if node_dir.parent == directory.resolve():
            shutil.rmtree(node_dir, ignore_errors=True)
    (directory / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``up`` or ``down``."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.cluster",
        description="A local Redis Cluster (3 masters, 3 replicas) on loopback, left running until 'down'.")
    parser.add_argument("command", choices=("up", "down"),
                        help="up: start it and print its URL; down: stop it and remove its files")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="where the nodes' directories and the state file live (default: .run/redis-cluster)")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    return up(directory) if args.command == "up" else down(directory)


if __name__ == "__main__":
    sys.exit(main())
