"""Group commit: operations queue per lane, each lane runs one transaction at a time holding
every operation that arrived while the previous one was in flight (``lane.py``).

Lanes are chosen by member, so one member's operations from this node keep their order; lanes
run in parallel on their own connections. Across nodes, row locks taken in member order keep
every interleaving serial per member and free of deadlocks. A reply is released only after
COMMIT returns; the batch's changes are then handed to the event sink (Redis fan-out) and
recorded in the outbox in the same transaction, so a crash between commit and publish is
repaired by the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable, Sequence

from gateway.errors import GatewayError, StoreUnavailable
from gateway.ledger import queries as q
from gateway.ledger.lane import BatchStats, Item, Lane, LaneContext, Published
from gateway.ledger.model import AttachmentKind, Change, Earn, EntryTap, EventSink, Op
from gateway.ledger.versions import Versions
from gateway.settings import LedgerSettings
from protocol.codes import ErrorCode
from protocol.messages import Outcome


class Ledger:
    """The ledger's engine: ``submit`` an operation, get its outcome after COMMIT.

    Everything it tells is passed in: ``sink`` publishes each batch's changes (after its
    replies), ``deliver`` hands them to this node's own watchers (before its replies),
    ``published`` learns what a publish delivered (the outbox relay), ``on_batch`` each
    batch's phases; ``attachments`` are the other packages' row kinds that may ride on an
    operation (see ``model.AttachmentKind``), ``taps`` their statements over every batch's
    entries (``model.EntryTap``)."""

    def __init__(
        self,
        dsn: str,
        settings: LedgerSettings,
        sink: EventSink | None = None,
        *,
        deliver: Callable[[Sequence[Change]], None] | None = None,
        published: Published | None = None,
        versions: Versions | None = None,
        attachments: Sequence[AttachmentKind] = (),
        taps: Sequence[EntryTap] = (),
        on_batch: Callable[[float, float, float], None] | None = None,
    ) -> None:
        self._settings = settings
        #: Where each batch's changes are published (for its readers: tests, the bench).
        self.sink = sink
        self.stats = BatchStats()
        self.versions = versions if versions is not None else Versions()
        kinds = tuple(attachments)
        self._kinds = frozenset(kinds)
        ctx = LaneContext(
            dsn=dsn,
            settings=settings,
            stats=self.stats,
            versions=self.versions,
            sink=sink,
            deliver=deliver,
            published=published,
            on_batch=on_batch,
            attachments=kinds,
            write_batch=q.write_batch(
                [(k.name, k.sql) for k in kinds], [(t.name, t.sql) for t in taps]
            ),
        )
        self._lanes = [Lane(ctx, i) for i in range(settings.lanes)]
        self._closed = False

    async def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(lane.close() for lane in self._lanes))

    def known_version(self, member: str) -> int:
        """The newest version of ``member`` committed through this node, or -1."""
        return self.versions.known(member)

    def replied(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes told to a client (see ``Versions.replied``)."""
        self.versions.replied(outcomes)

    async def published(self) -> None:
        """Wait until every change committed so far was handed to the sink (or failed)."""
        for lane in self._lanes:
            task = lane.publishing
            if task is not None:
                with contextlib.suppress(Exception):
                    await task

    def submit(self, op: Op) -> asyncio.Future[Outcome]:
        """Queue ``op``; the future resolves to its outcome after COMMIT, or raises a
        retryable ``GatewayError`` (nothing applied, or outcome unknown: retry the same id).
        The op's ``origin.ticket`` is told once it is queued (or refused at once)."""
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ticket = op.origin.ticket
        if ticket is not None:
            ticket.queued()
        if self._closed:
            fut.set_exception(GatewayError("ledger is shutting down", ErrorCode.DRAINING))
            return fut
        if isinstance(op, Earn) and any(a.kind not in self._kinds for a in op.attached):
            fut.set_exception(GatewayError("an attachment kind this ledger was not given"))
            return fut
        lane = self._lanes[zlib.crc32(op.member.encode()) % len(self._lanes)]
        now = time.perf_counter()
        queue = lane.queue
        head = queue[0] if queue else None
        if head is not None and now - head.at > self._settings.max_queue_wait:
            # Past the lane's capacity: a fast, retryable refusal (nothing applied) rather
            # than a wait that only grows. What is queued already still runs, in order.
            self.stats.shed += 1
            fut.set_exception(StoreUnavailable("the ledger is overloaded: retry the same id"))
            return fut
        lane.put(Item(op, fut, now))
        return fut

    async def execute(self, op: Op) -> Outcome:
        return await self.submit(op)
