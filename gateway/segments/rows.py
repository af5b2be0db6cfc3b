"""A member's segment memberships as a merge, an erasure and an export treat them
(``gateway.members.MemberRows``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.segments import store
from gateway.store.db import translate_errors


class SegmentRows:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """Nothing moves: the duplicate leaves its segments and the survivor's are evaluated
        again once the merge is done (``SegmentTriggers``, on the ``merged`` event)."""
        return {}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """An erased member is in no segment."""
        await store.drop_members(conn, members)

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            rows = await self._pool.fetch(
                """SELECT segment_id, since FROM segment_members
                    WHERE merchant_id = $1 AND member_id = $2 ORDER BY segment_id""",
                merchant,
                member,
            )
        return {
            "segments": [
                {"segment": r["segment_id"], "since": r["since"].isoformat()} for r in rows
            ]
        }
