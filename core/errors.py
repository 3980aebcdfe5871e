"""Errors raised by the core layer; the gateway maps them to HTTP in one table."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from redis.exceptions import RedisError


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


# Driver errors that mean "the store is not answering", as opposed to a bug or a rule.
_PG_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
)


@contextlib.asynccontextmanager
async def storage_errors() -> AsyncIterator[None]:
    """Turn driver errors that mean PostgreSQL or Redis is not answering into ``StorageUnavailable``."""
    try:
        yield
    except _PG_DOWN as exc:
        raise StorageUnavailable("postgresql", str(exc) or type(exc).__name__) from exc
    except RedisError as exc:
        raise StorageUnavailable("redis", str(exc) or type(exc).__name__) from exc
