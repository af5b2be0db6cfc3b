"""A database of its own for a migration test, migrated up to (not including) a given step."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.store import migrate as mig
from tests.conftest import BASE_DSN, _admin, _server_dsn


@contextlib.asynccontextmanager
async def migrated_before(
    step: str | None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[asyncpg.Connection]:
    """A new database migrated with every step whose name sorts before ``step`` (all of them
    for None), with one merchant ``acme`` and its member ``m1``; ``mig.available`` lists every
    step again once it is open, so ``mig.migrate(conn)`` then applies the rest."""
    name = f"lg_mig_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(_server_dsn(BASE_DSN, name))
        try:
            everything = mig.available()
            if step is not None:
                monkeypatch.setattr(
                    mig, "available", lambda: [f for f in everything if f[0] < step]
                )
            await mig.migrate(conn)
            monkeypatch.setattr(mig, "available", lambda: everything)
            await conn.execute("INSERT INTO merchants (id, name) VALUES ('acme', 'acme')")
            await conn.execute("INSERT INTO members (id, merchant_id) VALUES ('m1', 'acme')")
            yield conn
        finally:
            await conn.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
