"""A merchant's reorder loops (table reorder_loops): which products, how long before the
predicted date the first message goes, the messages (up to ``MAX_MESSAGES``, each a
subject, text and HTML template and the days after the previous one), the incentive (bonus
points or a coupon on a reorder within the attribution window), the channels, quiet hours,
the frequency cap per member across the merchant's loops and the control-group share.

The spec is a msgspec Struct the admin API decodes its body into (the same type: one
definition of the field limits, which openapi.json shows); what the types cannot say is
checked by ``check`` against the catalogue, the rewards and the templates before anything is
stored, so a refusal changes nothing."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import asyncpg
import msgspec

from gateway.catalogue import Catalogue
from gateway.errors import Refused
from gateway.members import check_time_zone
from gateway.programme import find_reward
from gateway.reorder.templates import SAMPLE, TemplateError, render
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.limits import MAX_POINTS, Id

#: Messages of one loop at most.
MAX_MESSAGES = 3
#: Products of one loop at most.
MAX_PRODUCTS = 50
#: Longest rendering of a template (its sample), in characters.
MAX_RENDERED = 100_000

Channel = Literal["email", "sms"]
Clock = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Days = Annotated[int, msgspec.Meta(ge=0, le=365)]


class _Spec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class Message(_Spec, kw_only=True, frozen=True):
    """One message of the sequence: Jinja2 templates (variables ``name``, ``product``,
    ``incentive``, ``link``), sent ``spacing_days`` after the previous one (the first: on
    the reminder's day)."""

    spacing_days: Days = 0
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    """The email's subject (an SMS has none)."""
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    """The plain text: the email's text part, and the SMS."""
    html: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | None = None
    """The email's HTML part (values autoescaped); none: text only."""


class Incentive(_Spec, kw_only=True, frozen=True):
    """What a reorder within ``attribution_days`` of the first message earns: ``points``
    (bonus points) or ``reward`` (a reward of the programme, as a code)."""

    kind: Literal["points", "reward"]
    points: Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)] | None = None
    reward: Id | None = None
    attribution_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 14


class QuietHours(_Spec, kw_only=True, frozen=True):
    """No message between ``start`` and ``end`` (local time, HH:MM; a span past midnight
    when ``end`` < ``start``): one due then waits for ``end``."""

    start: Clock
    end: Clock


class Cap(_Spec, kw_only=True, frozen=True):
    """At most ``messages`` reorder messages per member in any ``days`` days, across all the
    merchant's loops."""

    messages: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 7


class LoopSpec(_Spec, kw_only=True, frozen=True):
    """A loop as the merchant sets it (``PUT .../reorder-loops/{loop}``)."""

    products: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_PRODUCTS)]
    """SKUs of the catalogue, each replenishable and active (else 400 invalid_field)."""
    lead_days: Days = 3
    """Days before the predicted date the first message goes."""
    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    incentive: Incentive | None = None
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["email"]
    )
    """In order of preference: each message goes by the first the member consents to and has
    an address for."""
    quiet_hours: QuietHours | None = None
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    """The merchant's IANA zone, for members with no zone of their own (quiet hours)."""
    cap: Cap = msgspec.field(default_factory=Cap)
    cart_url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000)] | None = None
    """The shop's pre-filled cart the reorder page hands off to: an http(s) URL template with
    ``{sku}``, ``{qty}`` (the units bought last time), ``{member}``, ``{reminder}``; none:
    the page shows the product and the incentive only."""
    control_share: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.1
    """The share of members (by a hash of loop and member, stable) who get no message but are
    tracked the same: the control group of the uplift report."""
    active: bool = True


class Loop(msgspec.Struct, kw_only=True, frozen=True):
    merchant: str
    loop: str
    spec: LoopSpec
    created_at: datetime
    updated_at: datetime


async def incentive_text(pool: Any, loop: Loop) -> str:
    """The ``incentive`` of the templates and the reorder page: "200 bonus points", the
    reward's name, or "" with none."""
    i = loop.spec.incentive
    if i is None:
        return ""
    if i.kind == "points":
        return f"{i.points} bonus points"
    assert i.reward is not None
    found = await find_reward(pool, loop.merchant, i.reward)
    return (found.name or i.reward) if found is not None else ""


CART_FIELDS = ("sku", "qty", "member", "reminder")


def fill(template: str, *, sku: str, qty: int, member: str, reminder: int) -> str:
    """The cart URL of a reminder: the values URL-quoted."""
    return template.format(
        sku=quote(sku, safe=""), qty=qty, member=quote(member, safe=""), reminder=reminder
    )


def check_cart_url(template: str) -> None:
    """Refuse a cart URL template that is not an http(s) URL or holds other placeholders (or
    a conversion or format spec: ``{sku!r}``, ``{qty:>9}``)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _bad(f"cart_url: {exc}") from None
    for _, name, spec, conversion in parts:
        if name is not None and (name not in CART_FIELDS or spec or conversion):
            raise _bad(f"cart_url: {{{name}}} is not one of {', '.join(CART_FIELDS)}")
    u = urlsplit(fill(template, sku="x", qty=1, member="m", reminder=1))
    if u.scheme not in ("http", "https") or not u.netloc:
        raise _bad("cart_url: not an http(s) URL")


def _bad(message: str) -> Refused:
    return Refused(message, ErrorCode.INVALID_FIELD)


async def check(pool: Any, catalogue: Catalogue, merchant: str, spec: LoopSpec) -> None:
    """Refuse what the types cannot: unknown or durable products, an incentive without its
    amount or with a reward not in the programme, a time zone the node does not know,
    quiet hours of no length, a template that does not render."""
    if len(set(spec.products)) != len(spec.products):
        raise _bad("products: a SKU is listed twice")
    if len(set(spec.channels)) != len(spec.channels):
        raise _bad("channels: a channel is listed twice")
    for sku in spec.products:
        p = await catalogue.product(merchant, sku)
        if p is None:
            raise _bad(f"products: no SKU {sku!r} in the catalogue")
        if not p.replenishable or not p.active:
            raise _bad(f"products: {sku!r} is not an active replenishable product")
    i = spec.incentive
    if i is not None:
        if i.kind == "points" and (i.points is None or i.reward is not None):
            raise _bad("incentive: a points incentive takes points (and no reward)")
        if i.kind == "reward":
            if i.reward is None or i.points is not None:
                raise _bad("incentive: a reward incentive takes reward (and no points)")
            found = await find_reward(pool, merchant, i.reward)
            if found is None or not found.active:
                raise Refused(f"no reward {i.reward!r}", ErrorCode.REWARD_NOT_FOUND)
    if spec.cart_url is not None:
        check_cart_url(spec.cart_url)
    q = spec.quiet_hours
    if q is not None and q.start == q.end:
        raise _bad("quiet_hours: start and end are the same")
    check_time_zone(spec.time_zone)
    if spec.messages[0].spacing_days != 0:
        raise _bad("messages[0].spacing_days: the first message goes on the reminder's day (0)")
    for n, m in enumerate(spec.messages):
        if n and m.spacing_days < 1:
            raise _bad(f"messages[{n}].spacing_days: at least a day after the previous one")
        try:
            out = render(m.subject, m.text, m.html, SAMPLE)
        except TemplateError as exc:
            raise _bad(f"messages[{n}]: the template is refused: {exc}") from None
        if max(len(out.subject), len(out.text), len(out.html or "")) > MAX_RENDERED:
            raise _bad(f"messages[{n}]: renders longer than {MAX_RENDERED} characters")


_spec_decoder = msgspec.json.Decoder(LoopSpec)


def _loop(r: Any) -> Loop:
    return Loop(
        merchant=r["merchant_id"],
        loop=r["loop_id"],
        spec=_spec_decoder.decode(r["spec"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


_COLUMNS = "merchant_id, loop_id, spec::text AS spec, created_at, updated_at"


async def put_loop(
    pool: asyncpg.Pool[Any], catalogue: Catalogue, merchant: str, loop: str, spec: LoopSpec
) -> Loop:
    """Create or replace the loop (checked first: a refusal stores nothing)."""
    await check(pool, catalogue, merchant, spec)
    with translate_errors("reorder loop write"):
        r = await pool.fetchrow(
            f"""INSERT INTO reorder_loops (merchant_id, loop_id, spec)
                VALUES ($1, $2, $3::jsonb)
                ON CONFLICT (merchant_id, loop_id) DO UPDATE
                   SET spec = EXCLUDED.spec, updated_at = now()
                RETURNING {_COLUMNS}""",
            merchant,
            loop,
            msgspec.json.encode(spec).decode(),
        )
    assert r is not None
    return _loop(r)


async def get_loop(pool: asyncpg.Pool[Any], merchant: str, loop: str) -> Loop | None:
    with translate_errors("reorder loop read"):
        r = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM reorder_loops WHERE merchant_id = $1 AND loop_id = $2",
            merchant,
            loop,
        )
    return None if r is None else _loop(r)


async def all_loops(pool: asyncpg.Pool[Any], merchant: str | None = None) -> list[Loop]:
    """Every merchant's loops (the scheduler), or ``merchant``'s, in id order."""
    with translate_errors("reorder loops read"):
        rows = await pool.fetch(
            f"""SELECT {_COLUMNS} FROM reorder_loops
                 WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY merchant_id, loop_id""",
            merchant,
        )
    return [_loop(r) for r in rows]


async def delete_loop(pool: asyncpg.Pool[Any], merchant: str, loop: str) -> bool:
    with translate_errors("reorder loop write"):
        n = await pool.fetchval(
            "DELETE FROM reorder_loops WHERE merchant_id = $1 AND loop_id = $2 RETURNING 1",
            merchant,
            loop,
        )
    return bool(n)


class ReorderLoops:
    """The merchants' loops, over their table and the catalogue (products are checked)."""

    def __init__(self, pool: asyncpg.Pool[Any], catalogue: Catalogue) -> None:
        self._pool = pool
        self._catalogue = catalogue

    async def put(self, merchant: str, loop: str, spec: LoopSpec) -> Loop:
        """Create or replace; refused (nothing stored) with ``invalid_field``,
        ``reward_not_found`` or ``time_zone_unknown``."""
        return await put_loop(self._pool, self._catalogue, merchant, loop, spec)

    async def get(self, merchant: str, loop: str) -> Loop | None:
        return await get_loop(self._pool, merchant, loop)

    async def delete(self, merchant: str, loop: str) -> bool:
        return await delete_loop(self._pool, merchant, loop)


__all__ = [
    "CART_FIELDS",
    "MAX_MESSAGES",
    "MAX_PRODUCTS",
    "Cap",
    "Channel",
    "Incentive",
    "Loop",
    "LoopSpec",
    "Message",
    "QuietHours",
    "ReorderLoops",
    "all_loops",
    "check",
    "check_cart_url",
    "delete_loop",
    "fill",
    "get_loop",
    "incentive_text",
    "put_loop",
]
