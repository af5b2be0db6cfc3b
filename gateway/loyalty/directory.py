"""Merchants and members: creation and lookup (the programme's directory)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg


async def create_merchant(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any],
    merchant: str,
    name: str = "",
    points_per_unit: Decimal | int = 1,
    currency: str = "USD",
) -> None:
    await conn.execute(
        """INSERT INTO merchants (id, name, points_per_unit, currency) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO NOTHING""",
        merchant,
        name or merchant,
        Decimal(points_per_unit),
        currency,
    )


async def create_members(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], merchant: str, members: list[str]
) -> None:
    """Create members with empty accounts (idempotent)."""
    await conn.execute(
        """WITH m AS (
             INSERT INTO members (id, merchant_id)
             SELECT id, $1 FROM unnest($2::text[]) AS t(id)
             ON CONFLICT (id) DO NOTHING RETURNING id, merchant_id)
           INSERT INTO accounts (member_id, merchant_id) SELECT id, merchant_id FROM m""",
        merchant,
        members,
    )
