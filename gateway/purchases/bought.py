"""What members bought, line by line: the purchase history as the reorder loops read it (one
row per sale and SKU, oldest first), whatever the channel."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.store.db import translate_errors


@dataclass(frozen=True, slots=True)
class Bought:
    """``qty`` units of ``sku`` bought by ``member`` in one sale at ``at``, for ``value``
    (minor units: the lines' quantity x unit price)."""

    member: str
    sku: str
    at: datetime
    qty: int
    value: int = 0


# The sales_by_member index finds each member's sales; a sale's lines are unnested in place.
_BOUGHT = """
SELECT s.member_id, l.sku, s.created_at, sum(l.qty)::int AS qty,
       sum(l.qty::int8 * l.price)::int8 AS value
  FROM sales s
 CROSS JOIN LATERAL jsonb_to_recordset(s.lines) AS l(sku text, qty int, price int8)
 WHERE s.member_id = ANY($2::text[]) AND s.merchant_id = $1
   AND ($3::text[] IS NULL OR l.sku = ANY($3::text[]))
 GROUP BY s.seq, s.member_id, l.sku, s.created_at
HAVING sum(l.qty) > 0
 ORDER BY s.member_id, l.sku, s.created_at, s.seq
"""


async def bought(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any],
    merchant: str,
    members: Collection[str],
    skus: Collection[str] | None = None,
) -> list[Bought]:
    """The lines ``members`` bought (of ``skus`` only, if given), by member, SKU and time.
    Returns are not taken off: a product returned was still bought."""
    if not members:
        return []
    with translate_errors("purchases read"):
        rows = await conn.fetch(
            _BOUGHT, merchant, list(members), None if skus is None else list(skus)
        )
    return [Bought(r["member_id"], r["sku"], r["created_at"], r["qty"], r["value"]) for r in rows]


__all__ = ["Bought", "bought"]
