"""The database schema of the whole node: every SQL migration (``store/migrations``), then the
data migrations of the packages that own the data. ``python -m gateway migrate``, the tests and
the load tool all migrate through ``migrate`` here."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.members import DATA_MIGRATIONS
from gateway.store import migrate as store

#: Every data migration, in the order they are applied.
PYTHON_STEPS = [*DATA_MIGRATIONS]


async def migrate(conn: asyncpg.Connection[Any]) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    return await store.migrate(conn, PYTHON_STEPS)


ensure_database = store.ensure_database
MigrationError = store.MigrationError
