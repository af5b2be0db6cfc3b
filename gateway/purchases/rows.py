"""The purchase history's rows of a member, as a merge, an erasure and an export treat them
(``gateway.members.MemberRows``)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from gateway.purchases.history import history


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PurchaseRows:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        sales = await conn.execute(
            "UPDATE sales SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
            survivor,
        )
        returns = await conn.execute(
            "UPDATE sale_returns SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
            survivor,
        )
        return {"sales": _count(sales), "returns": _count(returns)}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """Item names go (they may say who bought them); SKUs, quantities and amounts stay."""
        await conn.execute(
            """UPDATE sales SET lines = (
                   SELECT COALESCE(jsonb_agg(l - 'name'), '[]'::jsonb)
                     FROM jsonb_array_elements(lines) AS l)
                WHERE member_id = ANY($1::text[])""",
            members,
        )

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        purchases = []
        before = None
        while True:
            page, nxt = await history(self._pool, merchant, member, before, 100)
            purchases.extend(page)
            if nxt is None:
                break
            before = int(nxt)
        return {"purchases": msgspec.to_builtins(purchases)}
