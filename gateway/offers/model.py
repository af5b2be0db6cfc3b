"""A merchant's targeted offers (tables offers, offer_members): what an offer gives (bonus
points for a SKU or a category bought, a fixed bonus for buying at all, a multiplier of the
sale's base points), to whom (members it lists, members of its segments), when (its window),
where (its channels: ``store`` is the register, ``online`` the web shop and the app) and how
often (per member, in total)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from gateway.errors import Refused
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.limits import MAX_POINTS

Kind = Literal["bonus_sku", "bonus_category", "fixed_bonus", "multiplier"]
Channel = Literal["store", "online"]
KINDS: tuple[Kind, ...] = ("bonus_sku", "bonus_category", "fixed_bonus", "multiplier")
MAX_MULTIPLIER = Decimal(10)
#: The most members one offer lists (beyond, target a segment).
MAX_LISTED = 10_000


def channel_of(origin_channel: str) -> Channel:
    """A session's channel as offers name it: ``pos`` is the store, anything else online."""
    return "store" if origin_channel == "pos" else "online"


@dataclass(frozen=True, slots=True)
class OfferSpec:
    kind: Kind
    starts_at: datetime
    ends_at: datetime
    name: str = ""
    description: str = ""
    sku: str | None = None
    category: str | None = None
    points: int | None = None
    multiplier: Decimal | None = None
    channels: tuple[Channel, ...] = ("store", "online")
    segments: tuple[str, ...] = ()
    members: tuple[str, ...] | None = None
    """The members listed (None on an update: keep the listed ones)."""
    per_member_limit: int | None = None
    total_limit: int | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Offer:
    merchant: str
    id: str
    name: str
    description: str
    kind: Kind
    sku: str | None
    category: str | None
    points: int | None
    multiplier: Decimal | None
    starts_at: datetime
    ends_at: datetime
    channels: tuple[str, ...]
    segments: tuple[str, ...]
    per_member_limit: int | None
    total_limit: int | None
    used: int
    active: bool
    updated_at: datetime

    def live(self, at: datetime) -> bool:
        return self.active and self.starts_at <= at < self.ends_at


COLUMNS = (
    "merchant_id, id, name, description, kind, sku, category, points, multiplier, starts_at,"
    " ends_at, channels, segments, per_member_limit, total_limit, used, active, updated_at"
)


def offer(r: Any) -> Offer:
    return Offer(
        merchant=r["merchant_id"],
        id=r["id"],
        name=r["name"],
        description=r["description"],
        kind=r["kind"],
        sku=r["sku"],
        category=r["category"],
        points=r["points"],
        multiplier=r["multiplier"],
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
        channels=tuple(r["channels"]),
        segments=tuple(r["segments"]),
        per_member_limit=r["per_member_limit"],
        total_limit=r["total_limit"],
        used=r["used"],
        active=r["active"],
        updated_at=r["updated_at"],
    )


def check_shape(spec: OfferSpec, now: datetime | None = None) -> None:
    """Refuse an offer that could never apply: a window that ends before it starts or has
    already ended, a kind without its SKU/category/points/multiplier (or with another kind's),
    points or a multiplier out of bounds, no channel."""
    now = now or datetime.now(UTC)
    bad = ErrorCode.INVALID_FIELD
    if spec.starts_at.tzinfo is None or spec.ends_at.tzinfo is None:
        raise Refused("starts_at and ends_at need a UTC offset", bad)
    if spec.ends_at <= spec.starts_at:
        raise Refused("ends_at must be after starts_at", bad)
    if spec.ends_at <= now:
        raise Refused("the offer's window has already ended", bad)
    if (spec.kind == "bonus_sku") != (spec.sku is not None):
        raise Refused("sku is for (and required by) a bonus_sku offer", bad)
    if (spec.kind == "bonus_category") != (spec.category is not None):
        raise Refused("category is for (and required by) a bonus_category offer", bad)
    if spec.kind == "multiplier":
        if spec.multiplier is None or spec.points is not None:
            raise Refused("a multiplier offer takes multiplier, not points", bad)
        if not Decimal(1) < spec.multiplier <= MAX_MULTIPLIER:
            raise Refused(f"multiplier must be above 1 and at most {MAX_MULTIPLIER}", bad)
        if spec.multiplier.as_tuple().exponent < -4:  # type: ignore[operator]
            raise Refused("multiplier has at most 4 decimals", bad)
    else:
        if spec.points is None or spec.multiplier is not None:
            raise Refused(f"a {spec.kind} offer takes points, not multiplier", bad)
        if not 1 <= spec.points <= MAX_POINTS:
            raise Refused(f"points must be 1..{MAX_POINTS}", bad)
    if not spec.channels:
        raise Refused("channels: at least one of store, online", bad)
    if spec.members is not None and len(spec.members) > MAX_LISTED:
        raise Refused(f"at most {MAX_LISTED} listed members (target a segment)", bad)


async def get(conn: Any, merchant: str, offer_id: str) -> Offer | None:
    with translate_errors("offer read"):
        r = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM offers WHERE merchant_id = $1 AND id = $2", merchant, offer_id
        )
    return None if r is None else offer(r)


async def listed(conn: Any, merchant: str, offer_id: str) -> list[str]:
    with translate_errors("offer read"):
        rows = await conn.fetch(
            """SELECT member_id FROM offer_members WHERE merchant_id = $1 AND offer_id = $2
                ORDER BY member_id""",
            merchant,
            offer_id,
        )
    return [r[0] for r in rows]


async def all_offers(conn: Any, merchant: str) -> list[Offer]:
    with translate_errors("offers read"):
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM offers WHERE merchant_id = $1 ORDER BY id", merchant
        )
    return [offer(r) for r in rows]


async def put(
    pool: asyncpg.Pool[Any],
    merchant: str,
    offer_id: str,
    spec: OfferSpec,
    known_segments: Sequence[str],
) -> Offer:
    """Create or replace an offer, and its listed members when given, in one transaction
    (checked first: a refusal changes nothing). Its uses so far stay counted."""
    check_shape(spec)
    unknown = sorted(set(spec.segments) - set(known_segments))
    if unknown:
        raise Refused(f"unknown segment(s): {', '.join(unknown)}", ErrorCode.INVALID_FIELD)
    with translate_errors("offer write"):
        async with pool.acquire() as conn, conn.transaction():
            r = await conn.fetchrow(
                f"""INSERT INTO offers (merchant_id, id, name, description, kind, sku, category,
                        points, multiplier, starts_at, ends_at, channels, segments,
                        per_member_limit, total_limit, active)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                            $16)
                    ON CONFLICT (merchant_id, id) DO UPDATE SET
                        name = EXCLUDED.name, description = EXCLUDED.description,
                        kind = EXCLUDED.kind, sku = EXCLUDED.sku, category = EXCLUDED.category,
                        points = EXCLUDED.points, multiplier = EXCLUDED.multiplier,
                        starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
                        channels = EXCLUDED.channels, segments = EXCLUDED.segments,
                        per_member_limit = EXCLUDED.per_member_limit,
                        total_limit = EXCLUDED.total_limit, active = EXCLUDED.active,
                        updated_at = now()
                    RETURNING {COLUMNS}""",
                merchant,
                offer_id,
                spec.name,
                spec.description,
                spec.kind,
                spec.sku,
                spec.category,
                spec.points,
                spec.multiplier,
                spec.starts_at,
                spec.ends_at,
                sorted(set(spec.channels)),
                sorted(set(spec.segments)),
                spec.per_member_limit,
                spec.total_limit,
                spec.active,
            )
            if spec.members is not None:
                await set_members(conn, merchant, offer_id, spec.members)
    assert r is not None
    return offer(r)


async def set_members(conn: Any, merchant: str, offer_id: str, members: Sequence[str]) -> None:
    """Replace the offer's listed members (in the caller's transaction); a member that is not
    the merchant's is refused (member_not_found) and nothing changes."""
    wanted = sorted(set(members))
    if wanted:
        found = await conn.fetchval(
            """SELECT count(*) FROM members WHERE merchant_id = $1 AND id = ANY($2::text[])""",
            merchant,
            wanted,
        )
        if found != len(wanted):
            raise Refused("a listed member is not this merchant's", ErrorCode.MEMBER_NOT_FOUND)
    await conn.execute(
        "DELETE FROM offer_members WHERE merchant_id = $1 AND offer_id = $2", merchant, offer_id
    )
    await conn.execute(
        """INSERT INTO offer_members (merchant_id, offer_id, member_id)
           SELECT $1, $2, unnest($3::text[])""",
        merchant,
        offer_id,
        wanted,
    )


async def end(pool: asyncpg.Pool[Any], merchant: str, offer_id: str) -> bool:
    """Withdraw an offer (``active`` false): it applies to no later sale; its row and uses stay
    (a PUT of the same id brings it back with its uses still counted). False if unknown."""
    with translate_errors("offer write"):
        n = await pool.fetchval(
            """UPDATE offers SET active = false, updated_at = now()
                WHERE merchant_id = $1 AND id = $2 RETURNING 1""",
            merchant,
            offer_id,
        )
    return bool(n)
