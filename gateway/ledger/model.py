"""Ledger operations and the in-memory state a batch works on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from protocol.messages import PointsLine


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an operation came from; recorded on every entry it makes."""

    merchant: str
    channel: str = ""
    store: str = ""
    terminal: str = ""


@dataclass(frozen=True, slots=True)
class SaleRecord:
    """The purchase behind an earn: written to the purchase history (``sales``) in the same
    transaction as the earn's entry, so history and points can never disagree."""

    total: int
    lines: bytes
    """JSON list of {sku, qty, price, category, name}."""
    breakdown: bytes
    """JSON list of the receipt's points lines."""
    fingerprint: bytes
    line_points: bytes | None = None
    """JSON list of each line's exact points (decimal strings; None for a sale without
    lines): a return of some lines claws back their share of the sale's points."""


@dataclass(frozen=True, slots=True)
class Earn:
    """Post points to a member (a sale's earning, a return's reversal, an adjustment).

    ``points`` may be negative for reversals; ``clamp`` then caps the debit at what is
    available instead of refusing (the documented clawback policy for returns).
    """

    op: str
    member: str
    points: int
    origin: Origin
    kind: str = "earn"
    contra: str = "issuance"
    clamp: bool = False
    #: With ``clamp``: what could not be taken is owed (a return's clawback), and taken from
    #: the next points that become available; without it, the rest is dropped (points expiry).
    owe: bool = False
    breakdown: tuple[PointsLine, ...] = ()
    #: Extra content that identifies the request for idempotency (e.g. the sale's lines).
    detail: bytes = b""
    #: Set for a sale's earn: recorded in the purchase history with the entry.
    sale: SaleRecord | None = None
    #: Apply only while the account is still at this version, else post nothing (points
    #: expiry: a change committed since the account was read is activity, which postpones
    #: it). Checked under the batch's row lock; the op id carries the version.
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Reserve:
    op: str
    member: str
    points: int
    ttl_ms: int
    origin: Origin


@dataclass(frozen=True, slots=True)
class Commit:
    op: str
    member: str
    hold: str
    points: int | None
    origin: Origin
    kind: str = "redeem"


@dataclass(frozen=True, slots=True)
class Release:
    op: str
    member: str
    hold: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class Merge:
    """Merge the duplicate member ``source`` into ``member`` (the survivor), both of the
    origin's merchant: the source's posted points and active holds move to the survivor
    (``merge_out`` / ``merge_in`` entries) and the source is marked merged, so every later
    operation naming it is refused with ``member_merged``."""

    op: str
    member: str
    source: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class Expire:
    """Internal: expire a member's overdue holds (from the sweeper); not idempotency-tracked."""

    member: str
    origin: Origin


Op = Earn | Reserve | Commit | Release | Merge | Expire


def fingerprint(op: Op) -> bytes:
    """Digest of everything that defines the request (not the request id)."""
    o = op.origin
    if isinstance(op, Earn) and op.sale is not None:
        # A sale is identified by what was bought, not by the points the rules derived from
        # it: a retry after a rule change still replays the original receipt.
        parts: tuple[object, ...] = ("sale", op.member, op.kind, op.detail)
    elif isinstance(op, Earn):
        parts = ("earn", op.member, op.points, op.kind, op.clamp, op.detail)
    elif isinstance(op, Reserve):
        parts = ("reserve", op.member, op.points, op.ttl_ms)
    elif isinstance(op, Commit):
        parts = ("commit", op.member, op.hold, op.points, op.kind)
    elif isinstance(op, Release):
        parts = ("release", op.member, op.hold)
    elif isinstance(op, Merge):
        parts = ("merge", op.member, op.source)
    else:
        parts = ("expire", op.member)
    return hashlib.blake2b(msgspec.json.encode((o.merchant, *parts)), digest_size=16).digest()


@dataclass(slots=True)
class Account:
    member: str
    merchant: str
    posted: int
    held: int
    version: int
    #: The surviving member if this one was merged into it (then posted = held = 0).
    merged_into: str | None = None
    #: Erased (GDPR): no operation but hold expiry applies to it any more.
    closed: bool = False
    #: Points a return could not take back; while any are owed nothing is available.
    owed: int = 0
    dirty: bool = False

    @property
    def available(self) -> int:
        return self.posted - self.held


@dataclass(slots=True)
class Hold:
    merchant: str
    id: str
    member: str
    amount: int
    committed: int
    status: str
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None = None
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    merchant: str
    member: str
    version: int
    kind: str
    op: str
    contra: str
    posted_delta: int
    held_delta: int
    posted_after: int
    held_after: int
    channel: str
    store: str
    terminal: str
    at: datetime


@dataclass(slots=True)
class BatchState:
    """Everything a batch read under its account locks; mutated by ``apply``."""

    now: datetime
    accounts: dict[str, Account] = field(default_factory=dict)
    holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    #: Members that may have active holds past expiry (all of them are loaded in ``holds``);
    #: a merge's source has all its active holds loaded.
    overdue: set[str] = field(default_factory=set)
    #: For a hold named by a commit or release whose member is not locked here (another
    #: member's hold, or one left on a merged duplicate): the member its owner was merged
    #: into, followed to the end of the chain, if any.
    survivors: dict[str, str] = field(default_factory=dict)
