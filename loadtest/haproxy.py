"""HAProxy in front of several gateway hosts, from the shipped ``deploy/haproxy/examgate.cfg``.

``render`` keeps everything of the shipped file but what a test (or a one-machine trial) must
choose: the address the proxy listens on, the gateway hosts, how often they are checked, and the
address the proxy connects from (the one the gateways' ``EXAMGATE_TRUSTED_PROXIES`` names).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loadtest.processes import ROOT, Process, wait_http

CONFIG = ROOT / "deploy" / "haproxy" / "examgate.cfg"
SERVERS = re.compile(r"^(?P<indent>[ \t]*)# servers: begin\n.*?^[ \t]*# servers: end\n", re.M | re.S)


def binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, not always on a user's PATH), or None."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    return found


def _replace_line(text: str, pattern: str, line: str) -> str:
    """``text`` with its one line matching ``pattern`` (after the indent) replaced by ``line``, indent kept."""
    regex = re.compile(rf"^(?P<indent>[ \t]*){pattern}.*$", re.M)
    if len(regex.findall(text)) != 1:
        raise ValueError(f"{CONFIG} has no single line matching {pattern!r}")
    return regex.sub(lambda m: m["indent"] + line, text)


def render(backends: Sequence[tuple[str, int]], *, bind: tuple[str, int], source: str | None = None,
           inter_ms: int = 2000, fall: int = 2, rise: int = 2, threads: int | None = None,
           maxconn: int | None = None, stats_socket: Path | None = None, template: Path = CONFIG) -> str:
    """The shipped configuration for these gateway ``backends`` (host, port), listening on ``bind``.

    ``source``: the address HAProxy connects to the gateways from; ``inter_ms``, ``fall``, ``rise``:
    the health check's pace; ``maxconn``: connections at once (HAProxy needs about twice as many open
    files); ``stats_socket``: a runtime API socket (``show stat``) for tests.
    """
    if not backends:
        raise ValueError("at least one gateway host")
    text = template.read_text()
    host, port = bind
    text = _replace_line(text, r"bind ", f"bind {host}:{port}")
    text = _replace_line(text, r"default-server ",
                         f"default-server check inter {inter_ms}ms fall {fall} rise {rise} maxconn 20000")
    if threads is not None:
        text = _replace_line(text, r"nbthread ", f"nbthread {threads}")
    if maxconn is not None:
        text = _replace_line(text, r"maxconn ", f"maxconn {maxconn}")
    if stats_socket is not None:
        text = _replace_line(text, r"global$", f"global\n    stats socket {stats_socket} level admin")
    if source is not None:
        text = _replace_line(text, r"balance ", f"balance roundrobin\n    source {source}")
    match = SERVERS.search(text)
    if match is None:
        raise ValueError(f"{template} has no '# servers: begin' ... '# servers: end' block")
    indent = match["indent"]
    servers = "".join(f"{indent}server gateway-{i} {h}:{p}\n" for i, (h, p) in enumerate(backends, 1))
    return text[:match.start()] + f"{indent}# servers: begin\n{servers}{indent}# servers: end\n" + text[match.end():]


def start_haproxy(config: str, *, url: str, timeout_s: float = 15) -> Process:
    """Run HAProxy in the foreground with ``config`` (checked first) and wait until ``url`` answers 200."""
    executable = binary()
    if executable is None:
        raise RuntimeError("haproxy is not installed (scripts/system-deps.sh installs it)")
    run_dir = Path(tempfile.mkdtemp(prefix="examgate-haproxy-"))
    path = run_dir / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([executable, "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy refuses the configuration:\n{checked.stdout}{checked.stderr}\n{config}")
    log_path = run_dir / "haproxy.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([executable, "-db", "-f", str(path)], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    process = Process(proc, log_path, url, {"run_dir": str(run_dir), "config": str(path)})
    try:
        wait_http(url, timeout_s=timeout_s, proc=process)
    except Exception:
        process.stop()
        raise
    return process


def stat_rows(stats_socket: Path) -> list[dict[str, str]]:
    """``show stat`` through the runtime API: a row per frontend, backend and server, by column name."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(stats_socket))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    lines = [line for line in b"".join(chunks).decode().splitlines() if line]
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


def server_states(stats_socket: Path, backend: str = "gateways") -> dict[str, str]:
    """Each server of ``backend`` → its state (``UP``, ``DOWN``, ``UP 1/2``...) per the runtime API."""
    return {row["svname"]: row["status"] for row in stat_rows(stats_socket)
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")}
