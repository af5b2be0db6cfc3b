"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

Idempotent and safe to run from several processes at once: an advisory lock serialises
runners, and ``schema_migrations`` records what was applied (with a checksum, so an edited
migration is reported instead of silently skipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
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


async def email_idna(conn: asyncpg.Connection[Any]) -> None:
    """Email identities stored with an ``xn--`` domain label before the IDNA rule (2026-11-24)
    are rewritten in the Unicode spelling ``normalise_email`` now gives: the two spellings are
    one mailbox, and the old row would match neither. A row whose new spelling another member
    of the merchant already holds (that mailbox was enrolled twice, as two members) is left as
    it was: merge the two members."""
    from gateway.errors import Refused
    from gateway.loyalty.identity import normalise_email

    rows = await conn.fetch(
        "SELECT merchant_id, value FROM member_identities WHERE kind = 'email'"
        " AND value LIKE '%xn--%'"
    )
    for r in rows:
        try:
            new = normalise_email(r["value"])
        except Refused:
            continue
        if new != r["value"]:
            await conn.execute(
                """UPDATE member_identities SET value = $3
                    WHERE merchant_id = $1 AND kind = 'email' AND value = $2
                      AND NOT EXISTS (SELECT 1 FROM member_identities
                                       WHERE merchant_id = $1 AND kind = 'email'
                                         AND value = $3)""",
                r["merchant_id"],
                r["value"],
                new,
            )


#: Data migrations PostgreSQL cannot do itself, applied once each after the SQL ones.
PYTHON_STEPS: list[tuple[str, Callable[[asyncpg.Connection[Any]], Awaitable[None]]]] = [
    ("0110_email_idna.py", email_idna),
]


async def migrate(conn: asyncpg.Connection[Any]) -> list[str]:
    """Apply pending migrations; return the names applied now."""
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
        for name, step in PYTHON_STEPS:
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
