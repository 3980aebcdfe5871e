"""A private PostgreSQL server for tests and the resilience runs: its own data directory, a free loopback port,
trust auth; under root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.processes import free_port

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
