"""What the node's HTTP routes answer, as msgspec types: ``gateway/api/openapi.py`` derives the
OpenAPI document's response schemas from them, and the test suite holds every response a test
node sends to that document. Where a route answers a type the code already has (a protocol
frame's data, the reward catalogue's ``Reward``, a merge's ``MergeResult``), that type is used;
the others are spelled here, field for field as the handlers build them."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.members import MergeResult
from gateway.programme import Reward
from protocol.loyalty import Bought, History, Member, Purchase, RewardCode
from protocol.wallet import Profile


class _Out(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class ErrorBody(_Out, frozen=True):
    """Every refusal: a stable ``error`` code and a message for people (it may change)."""

    error: str
    message: str
    retryable: bool = False
    """Whether the same request (the same ``op``) may succeed later: true for 503 only."""


class Programme(_Out, frozen=True):
    merchant: str
    name: str
    currency: str
    points_per_unit: str
    region: str
    rounding: Literal["line", "sale"]
    max_points_per_sale: int | None
    tier_window_days: int
    expiry_days: int | None
    code_valid_days: int


class Rule(_Out, frozen=True):
    id: str
    kind: Literal["product", "category", "promotion"]
    name: str
    sku: str | None
    category: str | None
    multiplier: str
    bonus: int
    min_total: int
    tier: str | None
    starts_at: str | None
    """ISO 8601, with its offset."""
    ends_at: str | None


class Rules(_Out, frozen=True):
    rules: list[Rule]


class RuleDeleted(_Out, frozen=True):
    deleted: str


class Tier(_Out, frozen=True):
    id: str
    name: str
    threshold: int
    multiplier: str


class Tiers(_Out, frozen=True):
    tiers: list[Tier]
    """By threshold, lowest first."""


class Evaluated(_Out, frozen=True):
    """Members moved up, down, or left in their tier by the evaluation."""

    up: int
    down: int
    same: int


class Rewards(_Out, frozen=True):
    rewards: list[Reward]


class Withdrawn(_Out, frozen=True):
    withdrawn: str


class Erased(_Out, frozen=True):
    member: str
    """The member erased: the survivor when the id was a merged duplicate's."""
    erased: bool


class Expired(_Out, frozen=True):
    expired: int
    """Points-expiry operations applied."""


class Duplicate(_Out, frozen=True):
    member: str
    name: str
    phone: str | None
    email: str | None
    card: str | None


class LedgerLine(_Out, frozen=True):
    version: int
    kind: str
    op: str
    posted_delta: int
    held_delta: int
    posted_after: int
    held_after: int
    channel: str | None
    store: str | None
    at: int


class BirthdayGrant(_Out, frozen=True):
    """A year's birthday reward as it was granted (``gateway.birthdays``)."""

    year: int
    grant: Literal["points", "reward"]
    points: int
    reward: str | None
    code: str | None
    """The coupon a reward grant issued."""
    at: int
    """Grant time, milliseconds since the Unix epoch."""


class ReorderPrediction(_Out, frozen=True):
    """When the member is predicted to run out of a replenishable product
    (``gateway.reorder``, docs/reorder.md)."""

    sku: str
    last_purchase: int
    """The last purchase, milliseconds since the Unix epoch."""
    units: int
    """Units bought then."""
    predicted: int
    """The predicted date, milliseconds since the Unix epoch."""
    method: Literal["member", "population", "catalogue"]


class AdjustmentLine(_Out, frozen=True):
    """A manual adjustment (``gateway.adjustments``)."""

    op: str
    points: int
    reason: str
    actor: str
    at: int


class PurchaseAggregates(_Out, frozen=True):
    """The member's purchase aggregates (docs/loyalty.md, Purchase aggregates): lifetime
    spend net of returns, visits, units, first and latest purchase days (ISO dates, UTC),
    visits by channel, and every category, brand and SKU bought."""

    spend: int
    visits: int
    units: int
    first: str | None
    last: str | None
    channels: dict[str, int]
    categories: list[Bought]
    brands: list[Bought]
    skus: list[Bought]


class SegmentMembership(_Out, frozen=True):
    segment: str
    since: str
    """When the member entered it (ISO 8601)."""


class OfferUse(_Out, frozen=True):
    offer: str
    op: str
    """The sale that used it."""
    points: int
    applied: bool
    """False: reserved by a sale whose outcome is not known yet."""
    at: str


class Export(_Out, frozen=True):
    """Everything the programme holds about a member (GDPR right of access)."""

    member: Member
    profile: Profile
    merged_duplicates: list[Duplicate]
    purchases: list[Purchase]
    codes: list[RewardCode]
    ledger: list[LedgerLine]
    birthday_grants: list[BirthdayGrant]
    reorder_predictions: list[ReorderPrediction]
    adjustments: list[AdjustmentLine]
    purchase_aggregates: PurchaseAggregates
    segments: list[SegmentMembership]
    offers_listed: list[str]
    """The targeted offers that list the member."""
    offer_uses: list[OfferUse]


class Broadcast(_Out, frozen=True):
    notice: str
    """The notice's id (the one given, or one made)."""
    at: int
    """Publish time, milliseconds since the Unix epoch."""
    nodes: int
    """Gateway nodes that received it (each delivers it to its sessions of the merchant)."""


class Health(_Out, frozen=True):
    status: Literal["ok"]
    node: str
    sessions: int


class Readiness(_Out, frozen=True):
    ready: bool
    postgres: str
    """``ok``, or ``down: <why>``."""
    redis: str
    node: Literal["draining"] | None = None
    """Present while the node drains (then ``ready`` is false)."""


__all__ = [
    "AdjustmentLine",
    "BirthdayGrant",
    "Broadcast",
    "Duplicate",
    "Erased",
    "ErrorBody",
    "Evaluated",
    "Expired",
    "Export",
    "Health",
    "History",
    "LedgerLine",
    "Member",
    "MergeResult",
    "Programme",
    "Readiness",
    "ReorderPrediction",
    "Reward",
    "RewardCode",
    "Rewards",
    "Rule",
    "RuleDeleted",
    "Rules",
    "Tier",
    "Tiers",
    "Withdrawn",
]
