"""The order of one session's commands: the one owner of it.

Commands are read in order and each runs as its own task, so a POS can pipeline. Three kinds
of command keep an order, declared where each command is registered (``Router.add``):

- ``SEQUENCED``, a command that changes points (it carries an ``op``): it reaches the ledger
  after every sequenced command read before it did, or ended without doing so, and the
  member's lane runs them in that order. A ``sale`` looks up the member, the programme and the
  tier before it reaches the ledger; without the wait a ``reserve`` pipelined behind it went
  first and was refused for points the sale was about to post. Its ``Place`` is the ledger's
  ``Ticket``: the ledger tells it when the operation is queued (``Place.queued``).
- ``AFTER_WRITES``, a command that reads what earlier commands wrote before it reaches the
  ledger (a ``return`` reads its sale, a ``void_code`` its code, an ``outcome`` its op): it
  waits until every sequenced command read before it has ended, and is sequenced itself.
  Pipelined right behind its sale, a return read no sale (``sale_not_found``) and an outcome
  no op (``operation_not_found``).
- subscription changes (``watch``): they take effect one at a time, in the order they were
  read. A subscribe waits while its member's feed opens: a pipelined unsubscribe (or a
  ``replace``) would otherwise run meanwhile, and the subscribe would then add the session to
  a feed it no longer lists (pushes after the unsubscribe, a feed that never closes, the
  subscription limit bypassed).

Every place is taken when the command's task first runs, before any await: tasks first run in
the order they were created, which is the order the frames were read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator


class Order(enum.Enum):
    #: runs at once, in parallel with the session's other commands
    FREE = "free"
    #: changes points: reaches the ledger in read order
    SEQUENCED = "sequenced"
    #: reads what earlier commands wrote: runs once they have all ended; sequenced too
    AFTER_WRITES = "after_writes"


class Place:
    """A sequenced command's place: ``wait`` for its turn, tell ``queued`` (the ledger does)
    once its operation is in the lane, ``end`` when the command ends."""

    __slots__ = ("_before", "_ended", "_order", "_turn", "_wait_for")

    def __init__(self, order: Ordering, after_writes: bool) -> None:
        loop = asyncio.get_running_loop()
        before, before_ended = order.turn, order.ended
        self._order = order
        self._wait_for = before_ended if after_writes else before
        self._before = before_ended
        self._turn: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        order.turn, order.ended = self._turn, self._ended

    async def wait(self) -> None:
        before = self._wait_for
        if before is not None and not before.done():
            await asyncio.wait((before,))  # never cancels ``before`` if this task is cancelled

    def queued(self) -> None:
        """The command's operation is queued in its ledger lane: the next may go."""
        if not self._turn.done():
            self._turn.set_result(None)

    def end(self) -> None:
        """The command ended: mark it ended once every sequenced command read before it has
        ended too (kept while an earlier one still runs: the chain goes through it)."""
        self.queued()
        order = self._order
        if order.turn is self._turn:
            order.turn = None
        ended, before = self._ended, self._before

        def done(_: object = None) -> None:
            if not ended.done():
                ended.set_result(None)

        if before is None or before.done():
            done()
        else:
            before.add_done_callback(done)
        if order.ended is ended and ended.done():
            order.ended = None


class Ordering:
    """One session's order (see the module doc)."""

    __slots__ = ("ended", "turn", "watching")

    def __init__(self) -> None:
        #: The newest sequenced command's turn: done once its operation is queued in the
        #: ledger (or it ended without one).
        self.turn: asyncio.Future[None] | None = None
        #: Done once the newest sequenced command and every one read before it have ended.
        self.ended: asyncio.Future[None] | None = None
        #: Done when the last subscription change read so far has taken effect.
        self.watching: asyncio.Future[None] | None = None

    def place(self, order: Order) -> Place | None:
        """The command's place; take it before the command's first await."""
        if order is Order.FREE:
            return None
        return Place(self, after_writes=order is Order.AFTER_WRITES)

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[None]:
        """A subscription change's turn. Enter before any await, so the turn is taken when the
        command's task first runs, which is in read order."""
        before = self.watching
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watching = mine
        try:
            if before is not None and not before.done():
                await asyncio.wait((before,))  # never cancels ``before`` if this is cancelled
            yield
        finally:
            mine.set_result(None)
            if self.watching is mine:
                self.watching = None
