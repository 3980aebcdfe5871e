"""Real processes for tests, benchmarks and load tests.

The gateway, the worker, the payment and SMS simulators, a private redis-server and Locust; a private Redis
Cluster is ``loadtest.cluster_servers``, a private PostgreSQL server ``loadtest.pg_server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
