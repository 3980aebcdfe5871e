"""Files of secret keys: a private directory, writes never readable by others nor half-written, and a lock so
that processes starting at once generate one set (the payment keys, the certificate signing key)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["locked", "make_private_dir", "write_private"]


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` 0700 if missing (an existing one keeps its mode: it may be shared, like /tmp)."""
    try:
        directory.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        return
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def write_private(path: Path, content: bytes) -> Path:
    """Write through a temporary file created 0600, then rename: never readable by others, never half-written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the directory's ``.lock`` (flock) while the block runs."""
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
