"""Errors raised by the core layer; the gateway maps them to HTTP in one table."""

from __future__ import annotations


class CoreError(Exception):
    """Base class of every error raised by ``core``."""


class StorageUnavailable(CoreError):
    """PostgreSQL or Redis did not answer within its budget."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} unavailable: {reason}")
        self.store = store
        self.reason = reason


class MigrationError(CoreError):
    """The migrations on disk and the ones recorded in the database disagree."""


class NotFound(CoreError):
    """A requested record does not exist."""

    def __init__(self, what: str, key: object) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what = what
        self.key = key
