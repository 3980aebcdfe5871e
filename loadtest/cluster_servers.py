"""A private Redis Cluster for tests, benchmarks and ``python -m loadtest.cluster``: three masters, a replica of
each unless told not, on free loopback ports, from Debian's ``redis-server``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from loadtest.processes import RedisServer, free_port

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
