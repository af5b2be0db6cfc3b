"""Every conversion of a balance, in one place: an account, a committed entry, a ledger row or
a cached hash becomes the protocol's ``Balance`` (or the ``balance_changed`` frame of a change)
here and nowhere else, and every consumer (replies, pushes, feeds, the loyalty frames) takes
that one type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.ledger.model import Account, Change, Entry
from gateway.wire import epoch_ms
from protocol.codec import encode
from protocol.loyalty import MemberBalance
from protocol.messages import Balance, BalanceChanged, Cause


def make_balance(member: str, posted: int, held: int, version: int) -> Balance:
    return Balance(
        member=member, posted=posted, held=held, available=posted - held, version=version
    )


def account_balance(acct: Account) -> Balance:
    return make_balance(acct.member, acct.posted, acct.held, acct.version)


def balance_after(frame: BalanceChanged) -> Balance:
    """The balance a ``balance_changed`` frame leaves the member with."""
    return make_balance(frame.member, frame.posted, frame.held, frame.version)


def entry_frame(e: Entry) -> BalanceChanged:
    return BalanceChanged(
        member=e.member,
        posted=e.posted_after,
        held=e.held_after,
        available=e.posted_after - e.held_after,
        version=e.version,
        cause=Cause(kind=e.kind, op=e.op, channel=e.channel, store=e.store),
        at=epoch_ms(e.at),
    )


def entry_change(e: Entry) -> Change:
    """A committed entry as its frame, encoded once."""
    frame = entry_frame(e)
    return Change(e, frame, encode(frame))


def row_change(member: str, r: Mapping[str, Any]) -> BalanceChanged:
    """A ``ledger_entries`` row (``queries.HISTORY``) as the change it announced."""
    return BalanceChanged(
        member=member,
        posted=r["posted_after"],
        held=r["held_after"],
        available=r["posted_after"] - r["held_after"],
        version=r["version"],
        cause=Cause(kind=r["kind"], op=r["op_id"], channel=r["channel"], store=r["store_id"]),
        at=epoch_ms(r["created_at"]),
    )


def member_balance(b: Balance) -> MemberBalance:
    """The balance as the loyalty frames carry it (the member is the frame's)."""
    return MemberBalance(posted=b.posted, held=b.held, available=b.available, version=b.version)
