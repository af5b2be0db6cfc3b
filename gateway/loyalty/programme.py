"""A merchant's programme: base rate, rounding, cap, earning rules, tiers; read with a short
cache (admin writes on this node invalidate it at once, other nodes within ``CACHE_SECONDS``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode

CACHE_SECONDS = 5.0


def plain(d: Decimal) -> str:
    """A rate or multiplier as the admin API and the protocol write it, and as the admin API
    reads it back: no exponent, no trailing zeros ("10", "1.5"; ``str`` of a normalised 10
    is "1E+1")."""
    return format(d.normalize(), "f")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: str  # product | category | promotion
    name: str = ""
    sku: str | None = None
    category: str | None = None
    multiplier: Decimal = Decimal(1)
    bonus: int = 0
    min_total: int = 0
    tier: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def active(self, at: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= at) and (
            self.ends_at is None or at < self.ends_at
        )

    def matches(self, sku: str, category: str | None) -> bool:
        """Whether the rule's product/category filter (if any) covers a line."""
        if self.sku is not None and self.sku != sku:
            return False
        return self.category is None or self.category == category


@dataclass(frozen=True, slots=True)
class Tier:
    id: str
    name: str
    threshold: int
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class Programme:
    merchant: str
    currency: str = "USD"
    points_per_unit: Decimal = Decimal(1)
    region: str = "US"
    rounding: str = "line"
    max_points_per_sale: int | None = None
    tier_window_days: int = 365
    expiry_days: int | None = None
    code_valid_days: int = 30
    rules: tuple[Rule, ...] = ()
    #: Lowest threshold first.
    tiers: tuple[Tier, ...] = field(default=())

    def tier(self, tier_id: str) -> Tier | None:
        return next((t for t in self.tiers if t.id == tier_id), None)

    def tier_rank(self, tier_id: str | None) -> int:
        """0 for no tier, 1 for the lowest tier, ..."""
        for i, t in enumerate(self.tiers):
            if t.id == tier_id:
                return i + 1
        return 0

    def reaches(self, tier: str | None, min_tier: str | None) -> bool:
        """Whether a member of ``tier`` may have what is kept for ``min_tier`` and above. A
        ``min_tier`` the programme does not define (a typo, a tier since dropped) is reached
        by no one: closed, rather than open to every member."""
        if not min_tier:
            return True
        needed = self.tier_rank(min_tier)
        return needed > 0 and self.tier_rank(tier) >= needed

    def tier_for(self, qualifying: int) -> Tier | None:
        best = None
        for t in self.tiers:
            if qualifying >= t.threshold:
                best = t
        return best


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
