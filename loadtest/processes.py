"""Real processes for tests, benchmarks and load tests.

The gateway, the worker, the payment and SMS simulators, private redis-servers (alone or as a Redis Cluster)
and private PostgreSQL servers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A started child process with its log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def admin_token(self) -> str:
        """The first operator token of a gateway started by ``start_gateway``."""
        import json

        secrets = json.loads((Path(self.extra["run_dir"]) / "secrets.json").read_text())
        return str(next(iter(secrets["admin_tokens"].values())))

    def metrics_token(self) -> str:
        """The scrape token of a gateway started by ``start_gateway`` (``Authorization: Bearer`` on /metrics)."""
        import json

        secrets = json.loads((Path(self.extra["run_dir"]) / "secrets.json").read_text())
        return str(secrets["metrics_token"])

    def patch_config(self, patch: dict[str, object]) -> int:
        """PATCH the gateway's live config through the admin API; returns the new version."""
        import json

        request = urllib.request.Request(
            self.url + "/admin/api/v1/config", data=json.dumps(patch).encode(), method="PATCH",
            headers={"Authorization": f"Bearer {self.admin_token()}",
                     "Content-Type": "application/merge-patch+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(json.loads(resp.read())["version"])

    def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, wait, and SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_http(url: str, timeout_s: float = 30, status: int = 200, proc: Process | None = None) -> None:
    """Poll ``url`` until it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.proc.returncode}:\n{proc.log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == status:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
            if exc.code == status:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} in {timeout_s} s (last: {last})"
                       + (f"\n{proc.log()}" if proc else ""))


def examgate_env(pg_dsn: str, redis_url: str, run_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an examgate child process pointed at the test stores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMGATE_", "PROMETHEUS_"))}
    env.update({
        "EXAMGATE_DATABASE_URL": pg_dsn,
        "EXAMGATE_REDIS_URL": redis_url,
        "EXAMGATE_RUN_DIR": str(run_dir),
        "EXAMGATE_SECRETS_FILE": str(run_dir / "secrets.json"),
        "EXAMGATE_CATALOGUE_REFRESH_S": "0.5",
        "EXAMGATE_SHUTDOWN_TIMEOUT_S": "5",
        # No SMS provider unless a test starts one (start_smssim): never a demo's simulator on the default port.
        "EXAMGATE_SMS_URL": "http://127.0.0.1:9",
    })
    env.update(extra)
    return env


def start_gateway(pg_dsn: str, redis_url: str, *, workers: int = 2, cpus: str | None = None,
                  port: int | None = None, host: str = "127.0.0.1", **extra: str) -> Process:
    """Run ``examgate serve`` on ``host``:``port`` (default: a free port) and wait until it is ready; ``cpus``
    pins it (taskset).

    Pass ``port`` when the gateway must know its own URL before it starts (``EXAMGATE_PUBLIC_URL``), and
    another loopback ``host`` (127.0.0.2, ...) to run several gateway "hosts" side by side.
    """
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="examgate-test-"))
    env = examgate_env(pg_dsn, redis_url, run_dir, **extra)
    log_path = run_dir / "gateway.log"
    with open(log_path, "wb") as log_file:
        command = [sys.executable, "-m", "examgate", "serve", "--workers", str(workers), "--port", str(port),
                   "--host", host]
        if cpus is not None and shutil.which("taskset"):
            command = ["taskset", "-c", cpus, *command]
        proc = subprocess.Popen(
            command,
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    process = Process(proc, log_path, f"http://{host}:{port}", {"run_dir": str(run_dir)})
    try:
        wait_http(process.url + "/readyz", proc=process)
    except Exception:
        process.stop()
        raise
    return process


def start_worker(pg_dsn: str, redis_url: str, *, run_dir: Path | None = None, timeout_s: float = 30,
                 **extra: str) -> Process:
    """Run ``examgate worker`` (no captcha drawing unless asked) and wait until its tasks are running."""
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="examgate-worker-"))
    env = examgate_env(pg_dsn, redis_url, run_dir, **{"EXAMGATE_CAPTCHA_POOL_TARGET": "0", **extra})
    log_path = run_dir / f"worker-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examgate", "worker"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    process = Process(proc, log_path, "", {"run_dir": str(run_dir)})
    deadline = time.monotonic() + timeout_s
    while "running tasks" not in process.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the worker did not start:\n{process.log()}")
        time.sleep(0.05)
    return process


def start_paysim(keys_dir: str | Path, *, time_scale: float = 1.0, run_dir: Path | None = None,
                 timeout_s: float = 30, **extra: str) -> Process:
    """Run ``examgate paysim`` on a free port with the keys in ``keys_dir`` and wait until it answers."""
    port = free_port()
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="examgate-paysim-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMGATE_", "PROMETHEUS_"))}
    env.update({
        "EXAMGATE_RUN_DIR": str(run_dir),
        "EXAMGATE_SECRETS_FILE": str(run_dir / "secrets.json"),
        "EXAMGATE_KEYS_DIR": str(keys_dir),
        "EXAMGATE_PAYSIM_TIME_SCALE": repr(time_scale),
    })
    env.update(extra)
    log_path = run_dir / f"paysim-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examgate", "paysim", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    process = Process(proc, log_path, f"http://127.0.0.1:{port}", {"run_dir": str(run_dir)})
    try:
        wait_http(process.url + "/sim/healthz", timeout_s=timeout_s, proc=process)
    except Exception:
        process.stop()
        raise
    return process


def start_smssim(*args: str, run_dir: Path | None = None, timeout_s: float = 30, **extra: str) -> Process:
    """Run ``examgate smssim ARGS`` on a free port and wait until it answers (settings from ``extra``, the environment).

    Give it the AccessKey secret the worker has (``EXAMGATE_SMS_ACCESS_KEY_SECRET``), or the same secrets file.
    """
    port = free_port()
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="examgate-smssim-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMGATE_", "PROMETHEUS_"))}
    env.update({"EXAMGATE_RUN_DIR": str(run_dir), "EXAMGATE_SECRETS_FILE": str(run_dir / "secrets.json")})
    env.update(extra)
    log_path = run_dir / f"smssim-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examgate", "smssim", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    process = Process(proc, log_path, f"http://127.0.0.1:{port}", {"run_dir": str(run_dir)})
    try:
        wait_http(process.url + "/sim/healthz", timeout_s=timeout_s, proc=process)
    except Exception:
        process.stop()
        raise
    return process


@dataclass
class RedisServer:
    """A redis-server owned by one test, on its own port, keeping nothing on disk."""

    port: int
    proc: subprocess.Popen[bytes] | None = None
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="examgate-redis-")))
    args: tuple[str, ...] = ()  # more redis-server options (a cluster node's)
    own_session: bool = False  # a session of its own: a terminal's Ctrl-C or hang-up does not reach it

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart on the same port) and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed (make services installs it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=self.own_session,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Stop it at once (SIGKILL: a crash, not a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_redis() -> RedisServer:
    """A fresh test-owned redis-server on a free port."""
    return RedisServer(free_port()).start()


# --- a private Redis Cluster ------------------------------------------------------------------------------

CLUSTER_SLOTS = 16384
CLUSTER_MASTERS = 3  # each with one replica
_BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
_UNREACHABLE = frozenset({"fail", "fail?", "handshake", "noaddr"})


class ClusterNode(NamedTuple):
    """One line of ``CLUSTER NODES``: a node as one member of the cluster sees it."""

    id: str
    port: int
    flags: frozenset[str]  # myself, master, slave, fail?, fail, handshake, noaddr, ...
    master_id: str | None  # the master of a replica
    slots: tuple[tuple[int, int], ...]  # the (first, last) slot ranges a master holds

    @property
    def is_master(self) -> bool:
        """Whether it is a master (one whose replica took over keeps the flag, beside ``fail``)."""
        return "master" in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """The nodes of a ``CLUSTER NODES`` reply (slots being imported or migrated, ``[…]``, left out)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *slots = line.split()
        ranges = []
        for item in slots:
            if not item.startswith("["):
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first)))
        port = int(address.split("@")[0].rsplit(":", 1)[1])  # ip:port@bus-port[,hostname]
        nodes.append(ClusterNode(node_id, port, frozenset(flags.split(",")), None if master == "-" else master,
                                 tuple(ranges)))
    return nodes


def free_cluster_port(taken: Collection[int] = ()) -> int:
    """A free port for a cluster node whose bus port (+10000) is free too, neither among ``taken`` nor their buses."""
    import socket

    busy = {p for t in taken for p in (t, t + _BUS_PORT_OFFSET)}
    for _ in range(200):
        port = free_port()
        bus = port + _BUS_PORT_OFFSET
        if bus > 65535 or busy & {port, bus}:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", bus))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port with a free cluster bus port (+10000) found")


def _redis_command(port: int, *args: str | int, timeout_s: float = 2) -> Any:
    """One command to the node on ``port`` over a connection of its own; no retry, so a dead node fails at once."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=timeout_s,
                     socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)) as client:
        return client.execute_command(*args)


def _running(server: RedisServer) -> bool:
    return server.proc is not None and server.proc.poll() is None


@dataclass
class RedisClusterServers:
    """A Redis Cluster of six loopback redis-servers: three masters holding the 16384 slots, a replica of each.

    Each node has a directory of its own (under ``base_dir`` when given, else a temporary one) holding
    its cluster config file and log, and keeps no data on disk. Roles and slots are read live from
    ``CLUSTER NODES``, so they stay right after a failover. Every wait is bounded (``timeout_s``) and
    fails naming what is still wrong.
    """

    base_dir: Path | None = None
    own_session: bool = False  # nodes in a session of their own (a cluster left running by a command)
    timeout_s: float = 30
    with_replicas: bool = True  # False: the three masters alone (a benchmark's cluster without replication)
    servers: list[RedisServer] = field(default_factory=list)  # in start order: the masters, then their replicas
    ids: dict[int, str] = field(default_factory=dict)  # port → node id (kept across restarts: the config file)

    @property
    def ports(self) -> list[int]:
        """Every node's port, in start order (the first masters first)."""
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        """The entry point for a cluster client: the first node still running (the first master until killed)."""
        port = next((s.port for s in self.servers if _running(s)), self.ports[0] if self.servers else 0)
        return f"redis://127.0.0.1:{port}/0"

    def start(self, progress: Callable[[str], None] | None = None) -> RedisClusterServers:
        """Start the six nodes, join them, share out the slots, pair the replicas, wait until it all settles.

        ``progress`` is told each step in a line. Whatever started is stopped again if a step fails.
        """
        say = progress or (lambda _line: None)
        if self.servers:
            raise RuntimeError("this cluster was already started")
        try:
            taken: list[int] = []
            for _ in range((2 if self.with_replicas else 1) * CLUSTER_MASTERS):
                taken.append(free_cluster_port(taken))
                self.servers.append(self._server(taken[-1]))
            say(f"starting {len(self.servers)} redis-server nodes on ports {', '.join(map(str, self.ports))}")
            for epoch, server in enumerate(self.servers, 1):
                self._start_node(server)
                self.ids[server.port] = _redis_command(server.port, "CLUSTER", "MYID")
                # Distinct epochs before the nodes meet, as redis-cli --cluster create does: no collision to settle.
                _redis_command(server.port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
            say("joining them (CLUSTER MEET) and giving the masters the slots (CLUSTER ADDSLOTSRANGE)")
            first, *others = self.ports
            for port in others:
                _redis_command(first, "CLUSTER", "MEET", "127.0.0.1", port)
            masters, replicas = self.ports[:CLUSTER_MASTERS], self.ports[CLUSTER_MASTERS:]
            for i, port in enumerate(masters):
                _redis_command(port, "CLUSTER", "ADDSLOTSRANGE", i * CLUSTER_SLOTS // CLUSTER_MASTERS,
                               (i + 1) * CLUSTER_SLOTS // CLUSTER_MASTERS - 1)
            self._wait("the nodes meeting", self._strangers, self.timeout_s)
            if replicas:
                say("making a replica of each master (CLUSTER REPLICATE)")
            for master, replica in zip(masters, replicas, strict=False):
                _redis_command(replica, "CLUSTER", "REPLICATE", self.ids[master])
            say("waiting for cluster_state:ok on every node, one slot map and the replicas' links up")
            self._wait("the cluster settling", self._problems, self.timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_nodes(self) -> list[ClusterNode]:
        """``CLUSTER NODES`` as the first running node that answers sees it."""
        import redis

        errors = []
        for server in self.servers:
            if _running(server):
                try:
                    return parse_cluster_nodes(_redis_command(server.port, "CLUSTER", "NODES"))
                except redis.RedisError as exc:
                    errors.append(f"{server.port}: {exc}")
        raise RuntimeError(f"no cluster node answers ({'; '.join(errors) or 'none is running'})")

    def masters(self) -> list[int]:
        """The masters' ports now (a node flagged failed left out), in start order."""
        return sorted((n.port for n in self.cluster_nodes() if n.is_master and "fail" not in n.flags),
                      key=self.ports.index)

    def replicas(self) -> list[int]:
        """The replicas' ports now (a node flagged failed left out), in start order."""
        return sorted((n.port for n in self.cluster_nodes() if not n.is_master and "fail" not in n.flags),
                      key=self.ports.index)

    def master_of_slot(self, slot: int) -> int:
        """The port of the master holding ``slot`` now (a failed one too, until its replica takes over)."""
        for node in self.cluster_nodes():
            if node.is_master and any(first <= slot <= last for first, last in node.slots):
                return node.port
        raise LookupError(f"no node holds slot {slot}")

    def master_for_key(self, key: str | bytes) -> int:
        """The port of the master holding ``key``'s slot now."""
        from redis.crc import key_slot

        return self.master_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def kill(self, port: int) -> None:
        """Stop the node on ``port`` at once (SIGKILL: a crash); its directory and config file stay."""
        self._server_on(port).stop()

    def wait_for_failover(self, dead_port: int, timeout: float = 20) -> None:
        """Wait (at most ``timeout`` s) until every running node has flagged the killed node failed, a replica
        of it (when it was a master) holds its slots, and the cluster is ``ok`` on every running node."""
        if _running(self._server_on(dead_port)):
            raise ValueError(f"the node on port {dead_port} is running: kill it first")
        self._wait(f"the failover after the node on port {dead_port} stopped", self._problems, timeout)

    def restart(self, port: int) -> None:
        """Start the killed node on ``port`` again (same port, same config file) and wait until it has rejoined:
        as the replica of the master now holding its old slots, when a replica of it took them over."""
        server = self._server_on(port)
        if _running(server):
            raise ValueError(f"the node on port {port} is running")
        self._start_node(server)
        self._wait(f"the node on port {port} rejoining", self._problems, self.timeout_s)

    def stop(self) -> None:
        """Stop every node at once and remove their directories."""
        for server in self.servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self if self.servers else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------------------------

    def _server(self, port: int) -> RedisServer:
        directory = Path(tempfile.mkdtemp(prefix=f"redis-cluster-{port}-", dir=self.base_dir))
        return RedisServer(port, dir=directory, own_session=self.own_session, args=(
            "--cluster-enabled", "yes", "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
            "--cluster-allow-reads-when-down", "no",
            # A replica's full sync starts at once instead of 5 s later (the wait for other replicas to join it).
            "--repl-diskless-sync-delay", "0",
            # A replica takes over however long ago it last heard from its master (a test cluster is often idle).
            "--cluster-replica-validity-factor", "0",
            "--logfile", str(directory / "redis.log"),
        ))

    def _server_on(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise ValueError(f"no node of this cluster on port {port} (its ports: {self.ports})")

    def _start_node(self, server: RedisServer) -> None:
        try:
            server.start()
        except (RuntimeError, TimeoutError) as exc:
            server.stop()
            log = server.dir / "redis.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise RuntimeError(f"{exc}; its log ({log}) ends:\n{tail}") from exc

    def _wait(self, what: str, problems: Callable[[], list[str]], timeout_s: float) -> None:
        """Poll ``problems`` until it finds none; a TimeoutError naming the last ones after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while found := problems():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done within {timeout_s:g} s: {'; '.join(found)}")
            time.sleep(0.1)

    def _strangers(self) -> list[str]:
        """Nodes not yet knowing all the others (past the handshake)."""
        import redis

        problems = []
        for port in self.ports:
            try:
                view = parse_cluster_nodes(_redis_command(port, "CLUSTER", "NODES"))
            except redis.RedisError as exc:
                problems.append(f"{port}: {exc}")
                continue
            known = {n.id for n in view if "handshake" not in n.flags}
            if missing := set(self.ids.values()) - known:
                problems.append(f"{port} does not know {sorted(p for p, i in self.ids.items() if i in missing)}")
        return problems

    def _problems(self) -> list[str]:
        """What keeps the cluster from being settled; none when every running node says ``cluster_state:ok``,
        every one sees the same slot map and roles, the 16384 slots are held by three running masters,
        every other running node is a replica of one with its link up, and every stopped node is flagged failed."""
        import redis

        running = [s.port for s in self.servers if _running(s)]
        views: dict[int, list[ClusterNode]] = {}
        problems = []
        for port in running:
            try:
                info = _redis_command(port, "CLUSTER", "INFO")
                views[port] = parse_cluster_nodes(_redis_command(port, "CLUSTER", "NODES"))
            except redis.RedisError as exc:
                problems.append(f"{port}: {exc}")
                continue
            if "cluster_state:ok" not in info.split():
                problems.append(f"{port} is not cluster_state:ok")
        layouts = {}
        for port, view in views.items():
            if {n.id for n in view} != set(self.ids.values()):
                problems.append(f"{port} knows {sorted(n.port for n in view)}")
                continue
            for node in view:
                if node.port in running and node.flags & _UNREACHABLE:
                    problems.append(f"{port} sees {node.port} as {','.join(sorted(node.flags))}")
                elif node.port not in running and "fail" not in node.flags:
                    problems.append(f"{port} has not flagged the stopped {node.port} failed")
            port_of = {n.id: n.port for n in view}
            slots = tuple(sorted((first, last, n.port) for n in view for first, last in n.slots))
            roles = tuple(sorted((n.port, port_of.get(n.master_id or "", 0)) for n in view if n.port in running))
            layouts[port] = (slots, roles)
        if problems:
            return problems
        if len(set(layouts.values())) > 1:
            return [f"the nodes disagree on slots or roles: {layouts}"]
        slots, roles = next(iter(layouts.values()))
        ends = [-1] + [end for first, last, _ in slots for end in (first - 1, last)] + [CLUSTER_SLOTS - 1]
        if any(ends[i] != ends[i + 1] for i in range(0, len(ends), 2)):
            problems.append(f"the slots are not all held exactly once: {slots}")
        holders = {port for _, _, port in slots}
        if len(holders) != CLUSTER_MASTERS or not holders <= set(running):
            problems.append(f"the slots are held by {sorted(holders)}, running: {sorted(set(running))}")
        for port, master in roles:
            if port in holders:
                continue
            if master not in holders:
                problems.append(f"{port} is neither a master holding slots nor a replica of one")
                continue
            try:
                link = _redis_command(port, "INFO", "replication").get("master_link_status")
            except redis.RedisError as exc:
                link = str(exc)
            if link != "up":
                problems.append(f"{port}'s link to its master {master} is {link}")
        return problems


def start_redis_cluster(*, with_replicas: bool = True) -> RedisClusterServers:
    """A fresh test-owned Redis Cluster (three masters, and a replica of each unless told not) on free ports."""
    return RedisClusterServers(with_replicas=with_replicas).start()


# --- a private PostgreSQL server ------------------------------------------------------------------------

_PG_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no way to run them (root without a ``postgres`` user)."""


def _has_pg_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _PG_BINARIES)


def _version_key(directory: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin → (15,): newest first when sorted in reverse."""
    return tuple(int(part) for part in directory.parent.name.split(".") if part.isdigit())


def postgres_bindir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are, or None when no PostgreSQL server is installed."""
    candidates: list[Path] = []
    if os.environ.get("EXAMGATE_PG_BINDIR"):
        candidates.append(Path(os.environ["EXAMGATE_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if found.returncode == 0 and found.stdout.strip():
                candidates.append(Path(found.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/pgsql/bin")]
    return next((c for c in candidates if _has_pg_binaries(c)), None)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster owned by one test: its own data directory, a free loopback port, trust auth.

    PostgreSQL refuses to run as root, so under root every binary runs as the ``postgres``
    user (``runuser``, else ``su``) and the temporary directory is handed to that user.
    """

    port: int
    bindir: Path
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="examgate-pg-")))
    user: str | None = None  # run the binaries as this user (None: as ourselves)
    start_timeout_s: float = 30

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (kept across ``stop`` and ``start``)."""
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """The server log (``pg_ctl -l``)."""
        return self.dir / "postgres.log"

    @property
    def dsn(self) -> str:
        """The ``postgres`` database as its superuser ``postgres`` (no password: trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _run(self, *args: str, check: bool = True, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.user, "--", *command]
            else:
                command = ["su", self.user, "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(command, cwd=self.dir, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{self.log()}")
        return done

    def init(self) -> PostgresServer:
        """``initdb`` the data directory (superuser ``postgres``, trust auth, no fsync)."""
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self) -> PostgresServer:
        """Start (or start again, same port and data) and wait until it accepts connections."""
        options = shlex.join(["-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-k", str(self.dir),
                              "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", str(int(self.start_timeout_s)), "start", timeout_s=self.start_timeout_s + 10)
        return self

    def running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        return self.data_dir.exists() and self._run("pg_ctl", "-D", str(self.data_dir), "status",
                                                    check=False).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: roll back and disconnect every session, then shut down cleanly); the data stays."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        """Stop it at once and remove its directory."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A fresh test-owned PostgreSQL on a free port; raises ``PostgresUnavailable`` when that cannot be had."""
    bindir = postgres_bindir()
    if bindir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found")
    user = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no postgres user to run PostgreSQL as") from None
        if not (shutil.which("runuser") or shutil.which("su")):
            raise PostgresUnavailable("running as root and neither runuser nor su is installed")
        user = "postgres"
    server = PostgresServer(free_port(), bindir, user=user)
    try:
        return server.init().start()
    except Exception:
        server.destroy()
        raise


# --- Locust -----------------------------------------------------------------------------------------------

def start_locust(locustfiles: list[Path], args: list[str], *, log_path: Path,
                 env: dict[str, str] | None = None) -> Process:
    """Run ``python -m locust -f FILES ARGS`` in the repository, its output in ``log_path`` (not waited for).

    Locust monkey-patches with gevent when imported, so it only ever runs in a process of its own.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "locust", "-f", ",".join(str(f) for f in locustfiles), *args]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env if env is not None else dict(os.environ),
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Process(proc, log_path)
