"""Every frame of protocol v1, as msgspec Structs in two tagged unions.

Frames are JSON objects whose ``type`` field selects the Struct. Client commands carry an ``id``
(request id) that the server echoes in the matching ``result`` or ``error`` frame; mutating
commands also carry ``op``, a client-generated operation id that makes retries safe (the POS
makes it before the first send and reuses it on every retry).
"""

from typing import Annotated, Any, Literal

import msgspec

from protocol.limits import (
    HOLD_TTL_DEFAULT_MS,
    MAX_LINES,
    MAX_PRESENTED_OFFERS,
    Id,
    MinorUnits,
    Points,
    Quantity,
    RequestId,
    Text,
    Token,
    TtlMs,
    Version,
)
from protocol.loyalty import (
    LoyaltyCommand,
    LoyaltyPush,
    LoyaltyResult,
    ReturnReceipt,
    RewardCode,
)
from protocol.wallet import WalletCommand, WalletPush, WalletResult


class _Client(
    msgspec.Struct, kw_only=True, frozen=True, tag_field="type", forbid_unknown_fields=True
):
    """A field a command does not define is refused (``invalid_field``): a client must never
    believe it sent something (a sale time, a channel) that the server ignored."""


class _Server(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", omit_defaults=True):
    pass


class _Data(msgspec.Struct, kw_only=True, frozen=True, tag_field="kind", omit_defaults=True):
    pass


# --------------------------------------------------------------------------- client -> server


class Hello(_Client, tag="hello", frozen=True):
    """First frame of every session: protocol versions the client speaks, and its token."""

    id: RequestId
    versions: list[Version]
    token: Token
    client: Text = ""


class Ping(_Client, tag="ping", frozen=True):
    """Application-level ping for clients that cannot send websocket pings (browsers)."""

    id: RequestId


class Refresh(_Client, tag="refresh", frozen=True):
    """A new token for this session before its own expires (same scope: kind, merchant, store,
    terminal, member, channel). A session whose token expired is closed with 3501."""

    id: RequestId
    token: Token


class Subscribe(_Client, tag="subscribe", frozen=True):
    """Watch a member's balance. ``since`` is the last version the client saw, if any: the
    reply then carries the changes missed since, or ``recovered=false`` and the current state."""

    id: RequestId
    member: Id
    since: Version | None = None
    replace: bool = False
    """Drop every other subscription of this session first (a POS moving on to the next
    customer): the session then watches only ``member``."""
    presence: bool = False
    """Also report which of the member's own app/web sessions are connected (``presence`` in
    the reply, then a ``presence`` push whenever that changes)."""


class Unsubscribe(_Client, tag="unsubscribe", frozen=True):
    id: RequestId
    member: Id


class GetBalance(_Client, tag="balance", frozen=True):
    id: RequestId
    member: Id


class SaleLine(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    sku: Id
    qty: Quantity
    price: MinorUnits
    """Unit price in minor currency units."""
    category: Id | None = None
    brand: Id | None = None
    """The line's brand (purchase aggregates and segments: bought brand)."""
    name: Text = ""


class Sale(_Client, tag="sale", frozen=True):
    """A completed purchase (POS level 0 and up): the gateway computes and posts the points."""

    id: RequestId
    op: Id
    member: Id
    total: MinorUnits
    """Amount paid in minor currency units, after discounts."""
    lines: Annotated[list[SaleLine], msgspec.Meta(max_length=MAX_LINES)] = msgspec.field(
        default_factory=list
    )
    offers: Annotated[list[Id], msgspec.Meta(max_length=MAX_PRESENTED_OFFERS)] = msgspec.field(
        default_factory=list
    )
    """Targeted offers the cashier presents (ids from the view's ``targeted``): each applies
    once, as an ``offer:<id>`` line of the breakdown; one that does not apply refuses the sale
    (``offer_not_eligible``, nothing applied)."""


class Reserve(_Client, tag="reserve", frozen=True):
    """Place a hold of ``points``; the hold id is the operation id ``op``."""

    id: RequestId
    op: Id
    member: Id
    points: Points
    ttl_ms: TtlMs = HOLD_TTL_DEFAULT_MS


class Commit(_Client, tag="commit", frozen=True):
    """Post a hold: all of it, or ``points`` of it (the rest is released)."""

    id: RequestId
    op: Id
    member: Id
    hold: Id
    points: Points | None = None


class Release(_Client, tag="release", frozen=True):
    """Void a hold."""

    id: RequestId
    op: Id
    member: Id
    hold: Id


class GetOutcome(_Client, tag="outcome", frozen=True):
    """Ask what became of operation ``op`` (e.g. after a timeout)."""

    id: RequestId
    op: Id


ClientFrame = (
    Hello
    | Ping
    | Refresh
    | Subscribe
    | Unsubscribe
    | GetBalance
    | Sale
    | Reserve
    | Commit
    | Release
    | GetOutcome
    | LoyaltyCommand
    | WalletCommand
)


# --------------------------------------------------------------------------- server -> client


class Scope(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    kind: Literal["pos", "app"]
    merchant: str
    store: str | None = None
    terminal: str | None = None
    member: str | None = None
    channel: str = "pos"


class Welcome(_Server, tag="welcome", frozen=True):
    id: str
    version: int
    session: str
    node: str
    heartbeat_ms: int
    scope: Scope


class Balance(_Data, tag="balance", frozen=True):
    member: str
    posted: int
    held: int
    available: int
    version: int


class Cause(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    kind: str
    """earn, hold, release, redeem, expire, return, adjustment, ..."""
    op: str
    channel: str = ""
    store: str = ""


class BalanceChanged(_Server, tag="balance_changed", frozen=True):
    """Pushed to every session watching ``member`` after a change commits. ``version`` grows
    by exactly one per change: a client that sees a jump knows it missed something."""

    member: str
    posted: int
    held: int
    available: int
    version: int
    cause: Cause
    at: int
    """Commit time, milliseconds since the Unix epoch."""


class Subscribed(_Data, tag="subscribed", frozen=True):
    member: str
    balance: Balance
    missed: list[BalanceChanged] = msgspec.field(default_factory=list)
    recovered: bool = True
    """False when the changes since ``since`` are no longer kept: treat ``balance`` as truth."""
    presence: "list[Peer] | None" = None
    """The member's connected app/web sessions, when the subscribe asked for ``presence``."""
    presence_seq: int | None = None
    """With ``presence``: the ``seq`` of that list, as in a ``presence`` push (lower than one
    already seen: the list is older than that push; -1: presence could not be read)."""


class Unsubscribed(_Data, tag="unsubscribed", frozen=True):
    member: str


class PointsLine(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    rule: str
    points: int
    sku: str | None = None


class SaleReceipt(_Data, tag="sale", frozen=True):
    op: str
    member: str
    points: int
    breakdown: list[PointsLine]
    balance: Balance


class HoldState(_Data, tag="hold", frozen=True):
    op: str
    hold: str
    member: str
    status: Literal["active", "committed", "released", "expired"]
    points: int
    """Points held when placed."""
    committed: int = 0
    expires_at: int = 0
    """Milliseconds since the Unix epoch."""
    balance: Balance | None = None


class ErrorInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    code: str
    message: str
    retryable: bool = False


class Outcome(_Data, tag="outcome", frozen=True):
    op: str
    ok: bool
    data: "Balance | SaleReceipt | HoldState | ReturnReceipt | RewardCode | None" = None
    """What the command's own reply carried: a ``sale``'s receipt, a hold's state, a
    ``return``'s receipt, the code of a ``redeem_reward`` or a ``void_code``."""
    error: ErrorInfo | None = None


class Pong(_Data, tag="pong", frozen=True):
    pass


class Refreshed(_Data, tag="refreshed", frozen=True):
    expires_at: int
    """When the session ends unless refreshed again: the new token's ``exp`` plus the node's
    leeway (ms since the Unix epoch)."""


ResultData = (
    Balance
    | Subscribed
    | Unsubscribed
    | SaleReceipt
    | HoldState
    | Outcome
    | Pong
    | Refreshed
    | LoyaltyResult
    | WalletResult
)


class Result(_Server, tag="result", frozen=True):
    id: str
    data: ResultData


class Error(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", tag="error"):
    """Every field is always sent: ``id`` is null when the frame it answers had none that
    could be read, ``retryable`` says whether the same command (same ``op``) may be sent
    again. ``code`` is stable; ``message`` is for people and may change."""

    code: str
    message: str
    id: str | None = None
    retryable: bool = False


class Resync(_Server, tag="resync", frozen=True):
    """The server could not deliver every change for ``member`` in order (a gap it could not
    fill): ``balance`` is the current truth; refetch anything derived from history."""

    member: str
    balance: Balance
    reason: str


class Peer(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One connected app/web session of a member."""

    session: str
    channel: str
    """``app`` or ``web``."""
    node: str


class Presence(_Server, tag="presence", frozen=True):
    """Pushed to sessions that subscribed to ``member`` with ``presence``: the member's connected
    app/web sessions, in full, after every change (eventually consistent across nodes)."""

    member: str
    online: list[Peer] = msgspec.field(default_factory=list)
    seq: int = 0
    """Grows with every change of the member's presence; a lower one than already seen is
    stale and may be ignored."""


class Notice(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", tag="notice"):
    """A merchant-wide message (e.g. a new offer) pushed to every session of ``merchant``."""

    notice: str
    """Notice id (unique per broadcast)."""
    merchant: str
    kind: str
    """What the payload is, e.g. ``offer``."""
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    at: int = 0
    """Publish time, milliseconds since the Unix epoch."""


ServerFrame = (
    Welcome
    | Result
    | Error
    | BalanceChanged
    | Resync
    | Presence
    | Notice
    | LoyaltyPush
    | WalletPush
)
