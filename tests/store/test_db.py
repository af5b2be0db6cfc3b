"""The PostgreSQL pool (gateway/store/db.py) against the real server: one round trip per pooled
query (no reset query on release), the application name kept, and what a release must still
clean up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.store.db import create_pool


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, size=1)
    yield p
    await p.close()


async def last_query(db: asyncpg.Connection, pid: int) -> str:
    return str(await db.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))


async def test_a_pooled_query_is_the_last_thing_its_backend_ran(pool: asyncpg.Pool, db):
    """asyncpg's default release sends 'SELECT pg_advisory_unlock_all(); CLOSE ALL; ...': a
    second round trip for every pooled query. The pool's release sends nothing."""
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    assert await pool.fetchval("SELECT 40 + $1::int", 2) == 42
    assert await last_query(db, pid) == "SELECT 40 + $1::int"


async def test_pooled_connections_keep_their_application_name(pool: asyncpg.Pool, db):
    for _ in range(3):  # RESET ALL on release used to clear a name set with SET
        name = await pool.fetchval("SELECT current_setting('application_name')")
        assert name == "loyalty-gateway"
    rows = await db.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    assert [r["application_name"] for r in rows] == ["loyalty-gateway"]


async def test_a_transaction_left_open_is_rolled_back_on_release(pool: asyncpg.Pool, db):
    await db.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO pool_probe VALUES (1)")
    # the same (only) connection, handed out again: no transaction, nothing written
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
    await db.execute("DROP TABLE pool_probe")
