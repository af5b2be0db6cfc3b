"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

Idempotent and safe to run from several processes at once: an advisory lock serialises
runners, and ``schema_migrations`` records what was applied (with a checksum, so an edited
migration is reported instead of silently skipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import asyncpg

_LOCK_KEY = 0x6C6F79616C7479  # "loyalty"


def available() -> list[tuple[str, str]]:
    folder = resources.files("gateway.store") / "migrations"
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in files]


class MigrationError(RuntimeError):
    pass


#: A data migration PostgreSQL cannot do itself: its name (recorded once applied) and the step.
PythonStep = tuple[str, Callable[["asyncpg.Connection[Any]"], Awaitable[None]]]


async def migrate(
    conn: asyncpg.Connection[Any], python_steps: Sequence[PythonStep] = ()
) -> list[str]:
    """Apply pending migrations, the SQL ones then ``python_steps`` (the data migrations of
    the packages that own the data: ``gateway.schema`` gathers them); return the names
    applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["name"]: r["checksum"]
            for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")
        }
        for name, sql in available():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise MigrationError(f"migration {name} was edited after being applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", name, checksum
                )
            applied_now.append(name)
        for name, step in python_steps:
            if name in done:
                continue
            async with conn.transaction():
                await step(conn)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, 'python')", name
                )
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def ensure_database(dsn: str) -> None:
    """Create the database named in ``dsn`` if the server does not have it yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    base, _, name = dsn.rpartition("/")
    name = name.split("?", 1)[0]
    admin = await asyncpg.connect(base + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await admin.close()
