"""A member's offer rows as a merge, an erasure and an export treat them
(``gateway.members.MemberRows``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.store.db import translate_errors


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class OfferRows:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """The duplicate's uses count against the survivor's per-member limits (a merge never
        frees a use), and the offers that listed the duplicate list the survivor."""
        uses = await conn.execute(
            "UPDATE offer_uses SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
            survivor,
        )
        listed = await conn.fetch(
            """DELETE FROM offer_members WHERE merchant_id = $1 AND member_id = $2
            RETURNING offer_id""",
            merchant,
            source,
        )
        if listed:
            await conn.execute(
                """INSERT INTO offer_members (merchant_id, offer_id, member_id)
                   SELECT $1, unnest($2::text[]), $3 ON CONFLICT DO NOTHING""",
                merchant,
                [r[0] for r in listed],
                survivor,
            )
        return {"offer_uses": _count(uses), "offer_listings": len(listed)}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """An erased member is listed by no offer; its uses stay (counts, no personal data)."""
        await conn.execute("DELETE FROM offer_members WHERE member_id = ANY($1::text[])", members)

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            listed = await self._pool.fetch(
                """SELECT offer_id FROM offer_members
                    WHERE merchant_id = $1 AND member_id = $2 ORDER BY offer_id""",
                merchant,
                member,
            )
            uses = await self._pool.fetch(
                """SELECT offer_id, op_id, points, reserved_at, applied_at FROM offer_uses
                    WHERE merchant_id = $1 AND member_id = $2 ORDER BY reserved_at, op_id""",
                merchant,
                member,
            )
        return {
            "offers_listed": [r[0] for r in listed],
            "offer_uses": [
                {
                    "offer": r["offer_id"],
                    "op": r["op_id"],
                    "points": r["points"],
                    "applied": r["applied_at"] is not None,
                    "at": r["reserved_at"].isoformat(),
                }
                for r in uses
            ],
        }
