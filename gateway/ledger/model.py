"""Ledger operations, the changes they commit and the in-memory state a batch works on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from protocol.messages import BalanceChanged, Outcome, PointsLine

_outcome_decoder = msgspec.json.Decoder(Outcome)


def decode_outcome(raw: bytes) -> Outcome:
    """An outcome as the ledger records it (``operations.result``)."""
    return _outcome_decoder.decode(raw)


class EventSink(Protocol):
    """Where committed changes go (the Redis publisher, ``gateway.fanout``)."""

    def cache_epoch(self) -> str:
        """The cache epoch known now; read before each transaction and handed back with its
        changes, so the sink can tell a cache that lost its data since (see ``keys.py``)."""
        ...

    async def publish(self, changes: Sequence[Change], epoch: str) -> None: ...

    def mark_stale(self, entries: Sequence[Entry]) -> None:
        """These changes may have committed unannounced (the reply to COMMIT was lost): the
        cached balances must not be trusted below them until a publish covers them."""
        ...


class Ticket(Protocol):
    """A caller's place in an order of its own (a session's mutating commands, see
    ``gateway.sessions.ordering``): the ledger tells it once the caller's operation is queued
    in its lane, so the caller's next operation may be submitted behind it."""

    def queued(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an operation came from; recorded on every entry it makes."""

    merchant: str
    channel: str = ""
    store: str = ""
    terminal: str = ""
    #: Told when the operation is queued (see ``Ticket``); not part of the operation.
    ticket: Ticket | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AttachmentKind:
    """Rows another package writes in the transaction of the ledger operations they ride on
    (the purchase history of a sale, the state of a return), so its rows and the points can
    never disagree, at no extra round trip: the ledger adds ``sql`` to the one statement that
    writes a batch. ``sql`` is one data-modifying statement of the owning package that reads its
    rows from ``json_to_recordset({rows}::json)`` and may stamp them with ``{at}``, the batch's
    clock reading; it ends with ``RETURNING 1``."""

    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class EntryTap:
    """A statement of another package run on every batch's entries, in the batch's one write
    statement (the webhooks' events: every committed change, whoever made it, at no extra
    round trip). ``sql`` is one data-modifying statement that reads the batch's entries from
    ``e`` (columns merchant, member, version, kind, op, contra, posted_delta, held_delta,
    posted_after, held_after, channel, store, terminal) and may stamp its rows with ``{at}``,
    the batch's clock reading; it ends with ``RETURNING 1``."""

    name: str
    sql: str


class Attached(Protocol):
    """One operation's rows of an ``AttachmentKind``, built once its outcome is known."""

    @property
    def kind(self) -> AttachmentKind: ...

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        """The row to write for this outcome (keyed by the ``json_to_recordset`` columns of
        the kind's statement), or None to write nothing (a refused sale has no history)."""
        ...


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
    #: Rows of other packages written in the operation's transaction (see ``Attached``):
    #: a sale's purchase history, a return's state.
    attached: tuple[Attached, ...] = ()
    #: A sale's earn: identified for idempotency by what was bought (``detail``), not by the
    #: points the rules derived from it (a retry after a rule change replays the receipt).
    sale: bool = False
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
    if isinstance(op, Earn) and op.sale:
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


@dataclass(frozen=True, slots=True)
class Change:
    """A committed entry as the ``balance_changed`` frame every watcher is sent, built and
    encoded once on the committing node: the same bytes go to its own watchers and to Redis."""

    entry: Entry
    frame: BalanceChanged
    data: bytes


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
