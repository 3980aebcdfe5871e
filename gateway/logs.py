"""Logging set-up for the command-line processes."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, process: str) -> None:
    """One line per record on stderr, naming the process that wrote it."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s",
        force=True,
    )
