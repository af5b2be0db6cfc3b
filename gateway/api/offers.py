"""Admin routes of targeted offers (``gateway.offers``), under the admin API's prefix and
behind its authentication (``admin.auth_middleware``): ``GET /offers``, ``GET``, ``PUT`` and
``DELETE /offers/{offer}``, ``PUT /offers/{offer}/members``. Another merchant's token, or an
unknown merchant, answers 404 ``not_found`` as on every admin route."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.offers import MAX_LISTED, Offer, Offers, OfferSpec
from protocol.limits import ID_PATTERN, MAX_POINTS, Id, Text

#: Every route: method, path under the admin prefix, and the ``OfferApi`` method serving it.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/offers", "list_offers"),
    ("GET", "/offers/{offer}", "get_offer"),
    ("PUT", "/offers/{offer}", "put_offer"),
    ("DELETE", "/offers/{offer}", "delete_offer"),
    ("PUT", "/offers/{offer}/members", "put_members"),
]

Kind = Literal["bonus_sku", "bonus_category", "fixed_bonus", "multiplier"]
Channel = Literal["store", "online"]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class OfferIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A targeted offer. ``bonus_sku`` takes ``sku`` and ``points``; ``bonus_category``
    ``category`` and ``points``; ``fixed_bonus`` ``points``; ``multiplier`` ``multiplier``
    (above 1, at most 10, 4 decimals; the extra over the sale's base points). Targets the
    members of ``segments`` and the ``members`` listed (at least one of them)."""

    kind: Kind
    starts_at: datetime
    """ISO 8601 with its offset."""
    ends_at: datetime
    """After ``starts_at`` and not already past (else 400 invalid_field)."""
    name: Text = ""
    description: Text = ""
    sku: Id | None = None
    category: Id | None = None
    points: Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)] | None = None
    multiplier: str | None = None
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["store", "online"]
    )
    """``store``: the register (POS sessions); ``online``: the web shop and the app."""
    segments: Annotated[list[Id], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    """Segment ids of the merchant (an unknown one is 400 invalid_field)."""
    members: Annotated[list[Id], msgspec.Meta(max_length=MAX_LISTED)] | None = None
    """Member ids listed (replacing those listed before; absent: keep them). A member that
    is not the merchant's is 404 member_not_found."""
    per_member_limit: Limit | None = None
    total_limit: Limit | None = None
    active: bool = True


class OfferOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    merchant: str
    offer: str
    name: str
    description: str
    kind: Kind
    sku: str | None
    category: str | None
    points: int | None
    multiplier: str | None
    starts_at: str
    ends_at: str
    channels: list[str]
    segments: list[str]
    members: list[str]
    per_member_limit: int | None
    total_limit: int | None
    used: int
    """Uses so far (reserved by a sale and not given back)."""
    active: bool
    updated_at: str


class OfferList(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    offers: list[OfferOut]


class OfferMembersIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    members: Annotated[list[Id], msgspec.Meta(max_length=MAX_LISTED)]


class OfferDeleted(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deleted: str
    """The offer's id: withdrawn (it applies to no later sale; GET shows it inactive)."""


def offer_out(o: Offer, members: list[str]) -> OfferOut:
    return OfferOut(
        merchant=o.merchant,
        offer=o.id,
        name=o.name,
        description=o.description,
        kind=o.kind,
        sku=o.sku,
        category=o.category,
        points=o.points,
        multiplier=None if o.multiplier is None else str(o.multiplier.normalize()),
        starts_at=o.starts_at.isoformat(),
        ends_at=o.ends_at.isoformat(),
        channels=list(o.channels),
        segments=list(o.segments),
        members=members,
        per_member_limit=o.per_member_limit,
        total_limit=o.total_limit,
        used=o.used,
        active=o.active,
        updated_at=o.updated_at.isoformat(),
    )


def _bad(message: str) -> web.Response:
    return _json({"error": "invalid_field", "message": message}, 400)


def _not_found() -> web.Response:
    return _json({"error": "not_found", "message": "no such offer"}, 404)


def spec_of(b: OfferIn) -> OfferSpec | str:
    """The offer's spec, or why the body cannot be one."""
    multiplier = None
    if b.multiplier is not None:
        try:
            multiplier = Decimal(b.multiplier)
        except ArithmeticError:
            return "multiplier must be a decimal number"
        if not multiplier.is_finite():
            return "multiplier must be a decimal number"
    if not b.segments and not b.members:
        return "an offer targets segments or listed members (or both)"
    return OfferSpec(
        kind=b.kind,
        starts_at=b.starts_at,
        ends_at=b.ends_at,
        name=b.name,
        description=b.description,
        sku=b.sku,
        category=b.category,
        points=b.points,
        multiplier=multiplier,
        channels=tuple(b.channels),
        segments=tuple(b.segments),
        members=None if b.members is None else tuple(b.members),
        per_member_limit=b.per_member_limit,
        total_limit=b.total_limit,
        active=b.active,
    )


class OfferApi:
    """The routes over ``offers``; ``merchant`` is the admin API's check of the path's
    merchant (it raises when the merchant does not exist)."""

    def __init__(self, offers: Offers, merchant: Callable[[web.Request], Awaitable[str]]) -> None:
        self._offers = offers
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def _out(self, merchant: str, o: Offer) -> OfferOut:
        return offer_out(o, await self._offers.listed(merchant, o.id))

    async def list_offers(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        offers = await self._offers.all(merchant)
        return _json(OfferList(offers=[await self._out(merchant, o) for o in offers]))

    async def get_offer(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        o = await self._offers.get(merchant, request.match_info["offer"])
        return _not_found() if o is None else _json(await self._out(merchant, o))

    async def put_offer(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        offer_id = request.match_info["offer"]
        if re.fullmatch(ID_PATTERN, offer_id) is None:
            return _not_found()
        try:
            b = msgspec.json.decode(await request.read() or b"{}", type=OfferIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _bad(str(exc))
        spec = spec_of(b)
        if isinstance(spec, str):
            return _bad(spec)
        o = await self._offers.put(merchant, offer_id, spec)
        return _json(await self._out(merchant, o))

    async def delete_offer(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        offer_id = request.match_info["offer"]
        if not await self._offers.end(merchant, offer_id):
            return _not_found()
        return _json(OfferDeleted(deleted=offer_id))

    async def put_members(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        offer_id = request.match_info["offer"]
        try:
            b = msgspec.json.decode(await request.read() or b"{}", type=OfferMembersIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _bad(str(exc))
        if not await self._offers.set_members(merchant, offer_id, b.members):
            return _not_found()
        o = await self._offers.get(merchant, offer_id)
        assert o is not None
        return _json(await self._out(merchant, o))


__all__ = ["ROUTES", "OfferApi", "OfferDeleted", "OfferIn", "OfferList", "OfferOut"]
