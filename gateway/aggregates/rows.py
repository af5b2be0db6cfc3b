"""A member's aggregates as a merge, an erasure and an export treat them
(``gateway.members.MemberRows``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from gateway.aggregates.reads import summary

_MOVE = """
WITH gone AS (
  DELETE FROM member_purchase_days WHERE merchant_id = $1 AND member_id = $2
  RETURNING dim, key, day, merchant_id, units, spend, visits
)
INSERT INTO member_purchase_days AS d (member_id, dim, key, day, merchant_id, units, spend, visits)
SELECT $3, dim, key, day, merchant_id, units, spend, visits FROM gone
ON CONFLICT (member_id, dim, key, day) DO UPDATE
   SET units = d.units + EXCLUDED.units, spend = d.spend + EXCLUDED.spend,
       visits = d.visits + EXCLUDED.visits
"""


class AggregateRows:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """The duplicate's figures are added to the survivor's, day by day: the survivor's
        aggregates are what they would be had every sale named it (its sales moved too)."""
        status = await conn.execute(_MOVE, merchant, source, survivor)
        return {"purchase_days": int(status.rsplit(" ", 1)[-1])}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """What an erased member bought, by category, brand and SKU, goes (the sales keep
        their SKUs and amounts; the aggregates are derived from them and serve nobody now)."""
        await conn.execute(
            "DELETE FROM member_purchase_days WHERE member_id = ANY($1::text[])", members
        )

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        s = await summary(self._pool, merchant, member, top=1_000)

        def plain(v: Any) -> Any:
            return v.isoformat() if hasattr(v, "isoformat") else v

        data = dataclasses.asdict(s)
        out: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, list):
                out[k] = [{kk: plain(vv) for kk, vv in b.items()} for b in v]
            else:
                out[k] = plain(v)
        return {"purchase_aggregates": out}
