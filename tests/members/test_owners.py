"""Which merchant a member belongs to (``members.Owners``), asked by every session's scope
check: cached, and shared by concurrent lookups."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from gateway.members import Owners


class CountingPool:
    """The real pool, with its ``fetchval`` calls counted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.fetchvals = 0

    async def fetchval(self, *args: object) -> object:
        self.fetchvals += 1
        return await self.pool.fetchval(*args)


async def test_concurrent_owner_lookups_of_one_member_share_one_query(
    world: dict[str, Any], pg_dsn: str
):
    """A node's clients reconnecting at once (their node died) subscribe to the same members:
    each member costs one query, and every waiter gets its answer, or its error."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    counting = CountingPool(pool)
    try:
        owners = Owners(counting)  # type: ignore[arg-type]
        a, b = world["members"][0], world["members"][1]
        got = await asyncio.gather(*(owners.of(m) for m in [a, b, "nobody"] * 20))
        assert got == [world["merchant"], world["merchant"], None] * 20
        assert counting.fetchvals == 3
        assert await owners.of(a) == world["merchant"]  # cached now
        assert counting.fetchvals == 3
        assert owners._lookups == {}
    finally:
        await pool.close()
    # with the pool gone the lookup fails, for every waiter at once, and is not remembered
    owners = Owners(counting)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(owners.of("someone-else") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
    assert counting.fetchvals == 4
    assert owners._lookups == {}
