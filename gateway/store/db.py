"""asyncpg adapter: pools, dedicated connections, and translation of driver errors.

``translate_errors`` is the boundary: asyncpg and socket errors become ``StoreUnavailable`` (or
``OutcomeUnknown`` when a COMMIT may have happened) here and nowhere deeper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg

from gateway.errors import StoreUnavailable

#: Errors after which the server may be fine but this connection or attempt is not.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,
    OSError,
    TimeoutError,
)
#: Errors after which re-running the whole transaction is correct.
RETRY_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

#: What a background pass may meet and retry later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, *CONNECTION_ERRORS)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise StoreUnavailable(
            f"PostgreSQL unavailable during {what}: {type(exc).__name__}"
        ) from exc


#: Sent in the startup packet, so it costs no round trip and no reset can undo it.
SERVER_SETTINGS = {"application_name": "loyalty-gateway"}


async def _release(conn: asyncpg.Connection[Any]) -> None:
    """What a connection needs on its way back to the pool: nothing beyond what asyncpg always
    does (roll back a transaction left open, drop listeners). asyncpg's default reset sends
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release: a second
    round trip for every pooled query. Pooled connections here never SET session state,
    LISTEN or keep cursors; the one session-level advisory lock (points expiry) is released
    by its holder, which terminates the connection if it cannot."""


def new_pool(
    dsn: str, size: int, timeout: float = 5.0, settings: dict[str, str] | None = None
) -> asyncpg.Pool[Any]:
    """A pool not yet connected: ``open_pool`` connects it (a node builds every component
    first, then starts them). ``settings``: server settings of its sessions besides ours."""
    return asyncpg.create_pool(
        dsn, min_size=1, max_size=size, reset=_release,
        server_settings={**SERVER_SETTINGS, **(settings or {})},
        command_timeout=timeout, timeout=timeout,
    )  # fmt: skip


async def open_pool(pool: asyncpg.Pool[Any]) -> asyncpg.Pool[Any]:
    with translate_errors("connect"):
        await pool
    return pool


async def create_pool(dsn: str, size: int, timeout: float = 5.0) -> asyncpg.Pool[Any]:
    return await open_pool(new_pool(dsn, size, timeout))


async def connect(
    dsn: str, timeout: float = 5.0, command_timeout: float | None = None
) -> asyncpg.Connection[Any]:
    with translate_errors("connect"):
        conn: asyncpg.Connection[Any] = await asyncpg.connect(
            dsn, timeout=timeout, server_settings=SERVER_SETTINGS, command_timeout=command_timeout
        )
    return conn
