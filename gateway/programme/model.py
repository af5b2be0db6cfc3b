"""A merchant's programme as the earning rules, tiers and offers read it: base rate, rounding,
cap, rules, tiers (pure; ``programmes.py`` loads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from gateway.wire import epoch_ms
from protocol.loyalty import Offer


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
    #: The reward catalogue, withdrawn rewards too, cheapest first: what the wallet and the
    #: cashier view list (a redemption reads the reward itself, never this copy).
    rewards: tuple[Reward, ...] = field(default=())

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

    def offers(self, tier: str, at: datetime | None = None) -> list[Offer]:
        """The promotions running now for a member of ``tier``, as the cashier and the app
        show them."""
        now = at or datetime.now(UTC)
        return [
            Offer(
                offer=r.id,
                name=r.name,
                multiplier=plain(r.multiplier),
                bonus=r.bonus,
                min_total=r.min_total,
                sku=r.sku,
                category=r.category,
                ends_at=0 if r.ends_at is None else epoch_ms(r.ends_at),
            )
            for r in self.rules
            if r.kind == "promotion" and r.active(now) and (r.tier is None or r.tier == tier)
        ]


@dataclass(frozen=True, slots=True)
class Reward:
    """An entry of the merchant's reward catalogue: what it costs and what its code is worth."""

    id: str
    name: str
    cost: int
    kind: str  # amount_off | percent_off | free_item
    value: int
    sku: str | None = None
    min_tier: str | None = None
    valid_days: int | None = None
    active: bool = True
