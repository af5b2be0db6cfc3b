"""Loyalty programme frames: identity (enrol, lookup, pass tokens), purchase history, rewards
and codes, returns, and the level-2 cashier view.

These Structs join the ``ClientFrame``, ``ResultData`` and ``ServerFrame`` unions of
``protocol.messages``. They do not import ``protocol.messages`` (which imports this module), so
they carry their own small base classes with the same tag fields and options.
"""

from typing import Annotated, Literal

import msgspec

from protocol.limits import Id, MinorUnits, Quantity, RequestId, Text

#: Largest page of the purchase history.
HISTORY_MAX_PAGE = 100
HISTORY_DEFAULT_PAGE = 20
#: Lines one return may name.
RETURN_MAX_LINES = 200

Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=32)]
"""A phone number as typed; normalised to E.164 with the merchant's default region."""
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
"""An email address; normalised by trimming and lower-casing."""
PassToken = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
"""A signed, short-lived member pass (the QR code the app displays)."""
#: A purchase-history page cursor: at most 18 digits, always within a 64-bit integer.
Cursor = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,18}$(?!\n)")]
"""An opaque keyset cursor taken from a previous page's ``next``."""
PageSize = Annotated[int, msgspec.Meta(ge=1, le=HISTORY_MAX_PAGE)]


class _Command(
    msgspec.Struct, kw_only=True, frozen=True, tag_field="type", forbid_unknown_fields=True
):
    """A field the command does not define is refused (``invalid_field``)."""


class _Push(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", omit_defaults=True):
    pass


class _Data(msgspec.Struct, kw_only=True, frozen=True, tag_field="kind", omit_defaults=True):
    pass


class _Item(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    pass


# --------------------------------------------------------------------------- client -> server


class Enrol(_Command, tag="enrol", frozen=True):
    """Find or create the member with this phone and/or email (one round trip at the register).
    Enrolling an identity that exists returns that member (``created=false``), never a
    duplicate."""

    id: RequestId
    phone: Phone | None = None
    email: Email | None = None
    card: Id | None = None
    """A loyalty card number to attach."""
    name: Text = ""


class Lookup(_Command, tag="lookup", frozen=True):
    """Find a member by exactly one of phone, email, card number or pass token (QR)."""

    id: RequestId
    phone: Phone | None = None
    email: Email | None = None
    card: Id | None = None
    qr: PassToken | None = None


class IssuePass(_Command, tag="pass", frozen=True):
    """Mint a short-lived signed pass (QR) for ``member``, for the app to display."""

    id: RequestId
    member: Id


class GetHistory(_Command, tag="history", frozen=True):
    """A member's purchases, newest first, every channel. Pass ``before`` = the previous page's
    ``next`` to read on."""

    id: RequestId
    member: Id
    before: Cursor | None = None
    limit: PageSize = HISTORY_DEFAULT_PAGE


class RedeemReward(_Command, tag="redeem_reward", frozen=True):
    """Turn points into a single-use code for a catalogue reward."""

    id: RequestId
    op: Id
    member: Id
    reward: Id


class UseCode(_Command, tag="use_code", frozen=True):
    """Redeem a reward code at a register or in the web shop: exactly once, ever."""

    id: RequestId
    op: Id
    code: Id


class VoidCode(_Command, tag="void_code", frozen=True):
    """Void an unredeemed code; its points go back to the member."""

    id: RequestId
    op: Id
    code: Id


class ReturnLine(_Item, frozen=True):
    sku: Id
    qty: Quantity


class Return(_Command, tag="return", frozen=True):
    """Return goods of sale ``sale`` (its ``op``): all of it (no ``lines``, no ``amount``), the
    quantities in ``lines``, or, for a sale posted without lines, ``amount`` minor units.
    ``redemption`` names the commit (its ``op``) that paid part of the sale with points, so
    those points are restored in proportion."""

    id: RequestId
    op: Id
    member: Id
    sale: Id
    lines: Annotated[list[ReturnLine], msgspec.Meta(max_length=RETURN_MAX_LINES)] = msgspec.field(
        default_factory=list
    )
    amount: MinorUnits | None = None
    redemption: Id | None = None


class CashierView(_Command, tag="cashier_view", frozen=True):
    """Everything the cashier shows for a member (level 2); the session is then subscribed to
    the member, so later changes arrive as pushes."""

    id: RequestId
    member: Id
    replace: bool = False
    """Drop the session's other subscriptions first (the register moves to the next customer),
    as ``subscribe`` with ``replace``."""


# --------------------------------------------------------------------------- server -> client


class MemberBalance(_Item, frozen=True):
    posted: int
    held: int
    available: int
    version: int


class Member(_Data, tag="member", frozen=True):
    member: str
    created: bool = False
    """True when this request enrolled the member."""
    name: str = ""
    phone: str | None = None
    """E.164."""
    email: str | None = None
    card: str | None = None
    tier: str = ""
    balance: MemberBalance | None = None


class Pass(_Data, tag="pass", frozen=True):
    member: str
    token: str
    expires_at: int
    """Milliseconds since the Unix epoch."""


class PurchaseLine(_Item, frozen=True):
    sku: str
    qty: int
    price: int
    category: str | None = None
    brand: str | None = None
    name: str = ""
    returned: int = 0
    """Quantity returned so far."""


class Purchase(_Item, frozen=True):
    op: str
    at: int
    channel: str
    total: int
    points: int
    store: str = ""
    returned_points: int = 0
    lines: list[PurchaseLine] = msgspec.field(default_factory=list)


class History(_Data, tag="history", frozen=True):
    member: str
    purchases: list[Purchase]
    next: str | None = None
    """Cursor of the next (older) page; absent on the last page."""


class RewardCode(_Data, tag="code", frozen=True):
    code: str
    reward: str
    member: str
    status: Literal["issued", "redeemed", "voided", "expired"]
    points: int
    """Points the code cost."""
    expires_at: int
    name: str = ""
    reward_kind: str = ""
    """amount_off (value in minor units), percent_off (value in percent) or free_item (sku)."""
    value: int = 0
    sku: str | None = None
    balance: MemberBalance | None = None


class PointsItem(_Item, frozen=True):
    rule: str
    points: int


class ReturnReceipt(_Data, tag="return", frozen=True):
    op: str
    sale: str
    member: str
    clawback: int
    """Earned points the return reverses."""
    restored: int
    """Spent points the return gives back."""
    applied: int
    """Net change actually posted (restored - clawback, capped at what was available)."""
    uncollected: int
    """Clawback that could not be collected because the member had too few points."""
    breakdown: list[PointsItem]
    balance: MemberBalance


class TierInfo(_Item, frozen=True):
    tier: str
    """Current tier id ("" when the programme has no tier for the member)."""
    name: str = ""
    multiplier: str = "1"
    qualifying: int = 0
    """Qualifying points within the rolling window."""
    window_days: int = 0
    next: str | None = None
    next_name: str = ""
    """The next tier's name, as the programme calls it."""
    next_threshold: int = 0
    to_next: int = 0
    """Qualifying points still needed for the next tier."""
    rank: int = 0
    """1 for the programme's lowest tier, 2 for the next, ...; 0 when the member has none."""
    tiers: int = 0
    """How many tiers the programme has (``rank == tiers``: the top one)."""


class RewardOption(_Item, frozen=True):
    reward: str
    name: str
    cost: int
    reward_kind: str
    value: int = 0
    sku: str | None = None
    min_tier: str | None = None
    affordable: bool = False


class Offer(_Item, frozen=True):
    offer: str
    name: str
    multiplier: str = "1"
    bonus: int = 0
    min_total: int = 0
    sku: str | None = None
    category: str | None = None
    ends_at: int = 0


class TargetedOffer(_Item, frozen=True):
    """An offer targeted at the member (a listed member, or by a segment it is in), live now
    on the session's channel, with uses left. ``kind``: ``bonus_sku`` (``points`` for a sale
    with ``sku``), ``bonus_category`` (``points`` for a sale with a line in ``category``),
    ``fixed_bonus`` (``points`` for any sale), ``multiplier`` (the sale's base points times
    ``multiplier``, the extra as the offer's line). The cashier presents it in ``sale.offers``."""

    offer: str
    name: str
    kind: Literal["bonus_sku", "bonus_category", "fixed_bonus", "multiplier"]
    description: str = ""
    points: int = 0
    multiplier: str = "1"
    sku: str | None = None
    category: str | None = None
    channels: list[Literal["store", "online"]] = msgspec.field(default_factory=list)
    ends_at: int = 0
    """Epoch milliseconds."""


class Bought(_Item, frozen=True):
    """A category, brand or SKU the member bought: units and spend net of returns, visits
    (sales that included it) and the day of the latest (ISO date, UTC)."""

    key: str
    units: int
    spend: int
    visits: int
    last: str | None = None


class PurchaseProfile(_Item, frozen=True):
    """The member's purchase aggregates, over its whole history: what it paid (net of
    returns), its visits (sales) and units, the first and latest purchase days (ISO dates,
    UTC), visits by channel (``pos`` in store, ``web`` online) and its most bought categories
    and brands (by units)."""

    spend: int = 0
    visits: int = 0
    units: int = 0
    first: str | None = None
    last: str | None = None
    channels: dict[str, int] = msgspec.field(default_factory=dict)
    categories: list[Bought] = msgspec.field(default_factory=list)
    brands: list[Bought] = msgspec.field(default_factory=list)


class CashierState(_Data, tag="cashier_view", frozen=True):
    member: Member
    balance: MemberBalance
    tier: TierInfo
    rewards: list[RewardOption]
    codes: list[RewardCode]
    recent: list[Purchase]
    offers: list[Offer]
    subscribed: bool = True
    purchases: PurchaseProfile | None = None
    """The member's purchase aggregates (absent from a node that keeps none)."""
    targeted: list[TargetedOffer] = msgspec.field(default_factory=list)
    """The member's targeted offers at this register (``gateway.offers``)."""


class TierChanged(_Push, tag="tier_changed", frozen=True):
    """Pushed to every session watching ``member`` when its tier changes (an upgrade as soon as
    the threshold is crossed, a downgrade at the evaluation date)."""

    member: str
    tier: str
    previous: str
    direction: Literal["up", "down"]
    at: int
    seq: int = 0
    """The member's event sequence (see ``protocol.wallet``)."""


class MemberMerged(_Push, tag="merged", frozen=True):
    """Pushed to every session watching ``member`` once it was merged into ``into`` (a
    duplicate profile): its balance, holds and history now belong to ``into``, and commands
    naming ``member`` are refused with ``member_merged``. Watch ``into`` instead (an app
    signed in as ``member`` signs in again as ``into``)."""

    member: str
    into: str
    at: int
    seq: int = 0
    """The member's event sequence (see ``protocol.wallet``)."""


LoyaltyCommand = (
    Enrol
    | Lookup
    | IssuePass
    | GetHistory
    | RedeemReward
    | UseCode
    | VoidCode
    | Return
    | CashierView
)
LoyaltyResult = Member | Pass | History | RewardCode | ReturnReceipt | CashierState
LoyaltyPush = TierChanged | MemberMerged


#: Example frames per message (Struct class name), merged into the AsyncAPI document.
EXAMPLES: dict[str, list[tuple[str, msgspec.Struct]]] = {
    "Enrol": [("enrol", Enrol(id="20", phone="(415) 555-2671", email="ada@example.com"))],
    "Lookup": [
        ("by phone", Lookup(id="21", phone="+14155552671")),
        ("by pass", Lookup(id="22", qr="eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJwYXNzIn0.sig")),
    ],
    "IssuePass": [("pass", IssuePass(id="23", member="m-42"))],
    "GetHistory": [("next page", GetHistory(id="24", member="m-42", before="1187", limit=20))],
    "RedeemReward": [
        ("redeem", RedeemReward(id="25", op="app-0007", member="m-42", reward="ten-off"))
    ],
    "UseCode": [("use", UseCode(id="26", op="pos7-000130", code="RW-7KQ2M9XTAB"))],
    "VoidCode": [("void", VoidCode(id="27", op="pos7-000131", code="RW-7KQ2M9XTAB"))],
    "Return": [
        (
            "partial",
            Return(
                id="28",
                op="pos7-000132",
                member="m-42",
                sale="pos7-000123",
                lines=[ReturnLine(sku="latte", qty=1)],
            ),
        )
    ],
    "CashierView": [("view", CashierView(id="29", member="m-42", replace=True))],
    "TierChanged": [
        (
            "upgrade",
            TierChanged(
                member="m-42", tier="gold", previous="silver", direction="up", at=1_735_689_600_000
            ),
        )
    ],
    "MemberMerged": [
        ("merged", MemberMerged(member="m-77", into="m-42", at=1_735_689_600_000)),
    ],
}
