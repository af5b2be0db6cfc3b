"""Loading a merchant's programme, with a short cache (admin writes on this node invalidate it
at once, other nodes within ``CACHE_SECONDS``)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.programme.catalogue import list_rewards
from gateway.programme.model import Programme, Rule, Tier
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode

CACHE_SECONDS = 5.0


_PROGRAMME = """
SELECT m.currency, m.points_per_unit, p.region, p.rounding, p.max_points_per_sale,
       p.tier_window_days, p.expiry_days, p.code_valid_days
  FROM merchants m LEFT JOIN programmes p ON p.merchant_id = m.id
 WHERE m.id = $1
"""


async def load_programme(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any], merchant: str
) -> Programme:
    with translate_errors("programme read"):
        row = await conn.fetchrow(_PROGRAMME, merchant)
        if row is None:
            raise Refused("unknown merchant", ErrorCode.FORBIDDEN)
        rules = await conn.fetch(
            """SELECT id, kind, name, sku, category, multiplier, bonus, min_total, tier,
                      starts_at, ends_at
                 FROM earning_rules WHERE merchant_id = $1 ORDER BY id""",
            merchant,
        )
        tiers = await conn.fetch(
            """SELECT id, name, threshold, multiplier FROM tiers
                WHERE merchant_id = $1 ORDER BY threshold""",
            merchant,
        )
        rewards = await list_rewards(conn, merchant)
    return Programme(
        merchant=merchant,
        currency=row["currency"],
        points_per_unit=Decimal(row["points_per_unit"]),
        region=row["region"] or "US",
        rounding=row["rounding"] or "line",
        max_points_per_sale=row["max_points_per_sale"],
        tier_window_days=row["tier_window_days"] or 365,
        expiry_days=row["expiry_days"],
        code_valid_days=row["code_valid_days"] or 30,
        rules=tuple(
            Rule(
                id=r["id"],
                kind=r["kind"],
                name=r["name"],
                sku=r["sku"],
                category=r["category"],
                multiplier=Decimal(r["multiplier"]),
                bonus=r["bonus"],
                min_total=r["min_total"],
                tier=r["tier"],
                starts_at=r["starts_at"],
                ends_at=r["ends_at"],
            )
            for r in rules
        ),
        tiers=tuple(
            Tier(r["id"], r["name"], r["threshold"], Decimal(r["multiplier"])) for r in tiers
        ),
        rewards=tuple(rewards),
    )


class Programmes:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, Programme]] = {}
        #: Admin writes seen per merchant: a load that began before one is not cached.
        self._writes: dict[str, int] = {}

    async def get(self, merchant: str) -> Programme:
        hit = self._cache.get(merchant)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        writes = self._writes.get(merchant, 0)
        programme = await load_programme(self._pool, merchant)
        if self._writes.get(merchant, 0) == writes:
            # A load that read the old rules while a write on this node committed would
            # otherwise be cached after the write's invalidation, for CACHE_SECONDS.
            self._cache[merchant] = (now + CACHE_SECONDS, programme)
        return programme

    def invalidate(self, merchant: str) -> None:
        self._writes[merchant] = self._writes.get(merchant, 0) + 1
        self._cache.pop(merchant, None)


async def expiry_days(conn: Any, merchant: str | None = None) -> dict[str, int]:
    """The merchants whose points expire after inactivity (every merchant's, or only
    ``merchant``'s), and after how many days."""
    with translate_errors("programme read"):
        rows = await conn.fetch(
            """SELECT merchant_id, expiry_days FROM programmes
                WHERE expiry_days IS NOT NULL AND ($1::text IS NULL OR merchant_id = $1)""",
            merchant,
        )
    return {r["merchant_id"]: r["expiry_days"] for r in rows}
