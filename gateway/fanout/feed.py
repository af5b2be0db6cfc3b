"""One member's feed on this node: the sessions watching the member, the balance they were
last sent, and the changes waiting for a missing predecessor (see ``feeds.py``)."""

from __future__ import annotations

import asyncio
from typing import NamedTuple, Protocol

from gateway.wire import text_frame
from protocol.messages import Balance, BalanceChanged, Peer


class Subscriber(Protocol):
    def send_framed(self, framed: bytes) -> None: ...


class Joined(NamedTuple):
    """What a session joining a member's feed is told."""

    #: the current balance
    balance: Balance
    #: the changes after the join's ``since`` (if given and still kept), in version order
    missed: list[BalanceChanged]
    #: whether ``missed`` is every change after ``since``
    recovered: bool
    #: with ``presence``, the member's connected app/web sessions
    presence: list[Peer] | None
    #: the presence ``seq`` that list corresponds to (-1: not known, Redis was unavailable)
    presence_seq: int


class Feed:
    __slots__ = (
        "balance",
        "checker",
        "confirmed",
        "filler",
        "joining",
        "linger",
        "member",
        "peers",
        "pending",
        "presence",
        "presence_seq",
        "ready",
        "rechecking",
        "sessions",
    )

    def __init__(self, member: str) -> None:
        self.member = member
        self.balance: Balance | None = None
        self.sessions: set[Subscriber] = set()
        #: Sessions that also want ``presence`` pushes (a subset of ``sessions``).
        self.presence: set[Subscriber] | None = None
        #: Latest known presence of the member (None until read or announced) and its seq.
        self.peers: list[Peer] | None = None
        self.presence_seq = -1
        self.pending: dict[int, tuple[BalanceChanged, bytes]] = {}
        self.confirmed = asyncio.Event()
        self.ready = asyncio.Event()
        self.filler: asyncio.Task[None] | None = None
        #: The check after a fan-out reconnect (``Feeds._start_check``), while it runs.
        self.checker: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        #: Joins in progress: the feed must not close under them (their reads can outlast
        #: ``LINGER``), or the session would join a feed whose channel was unsubscribed.
        self.joining = 0
        #: Re-subscribed after Redis dropped the channel: fill the gap once confirmed.
        self.rechecking = False

    @property
    def version(self) -> int:
        return -1 if self.balance is None else self.balance.version

    def deliver(self, data: bytes) -> None:
        """Frame once, then the same bytes to every local session (never awaits one)."""
        framed = text_frame(data)
        for s in tuple(self.sessions):
            s.send_framed(framed)
