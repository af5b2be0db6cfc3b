"""The newest version of each member this node committed or told a client about (bounded):
its reads never show a cached balance older than a change it already replied with."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from gateway.ledger.model import Entry
from protocol.messages import Balance, Outcome

#: Members remembered; the oldest are forgotten first.
LATEST_MAX = 200_000


class Versions:
    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: OrderedDict[str, int] = OrderedDict()

    def known(self, member: str) -> int:
        """The newest version of ``member`` this node committed or told, or -1."""
        return self._latest.get(member, -1)

    def committed(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self.saw(e.member, e.version)

    def replied(self, outcomes: Sequence[Outcome]) -> None:
        """A replayed outcome, or one asked for by id, tells the client a version this node may
        never have committed itself (the first attempt committed and lost its reply, maybe on
        another node): its reads must not serve that member below it."""
        for o in outcomes:
            data = o.data
            balance = getattr(data, "balance", data)
            if isinstance(balance, Balance):
                self.saw(balance.member, balance.version)

    def saw(self, member: str, version: int) -> None:
        latest = self._latest
        if version > latest.get(member, -1):
            latest[member] = version
            latest.move_to_end(member)
            while len(latest) > LATEST_MAX:
                latest.popitem(last=False)
