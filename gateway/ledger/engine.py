"""Group commit: operations queue per lane, each lane runs one transaction at a time holding
every operation that arrived while the previous one was in flight.

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
import logging
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec
import orjson

from gateway.errors import GatewayError, OutcomeUnknown, StoreUnavailable
from gateway.ledger import faults
from gateway.ledger import queries as q
from gateway.ledger.apply import apply, refuse
from gateway.ledger.model import (
    Account,
    BatchState,
    Commit,
    Earn,
    Entry,
    Expire,
    Hold,
    Merge,
    Op,
    Release,
    fingerprint,
)
from gateway.settings import LedgerSettings
from gateway.store.db import CONNECTION_ERRORS, RETRY_ERRORS, connect
from protocol.codes import ErrorCode
from protocol.messages import Balance, Outcome

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where committed changes go (the Redis publisher)."""

    def cache_epoch(self) -> str:
        """The cache epoch known now; read before each transaction and handed back with its
        changes, so the sink can tell a cache that lost its data since (see ``keys.py``)."""
        ...

    async def publish(self, entries: Sequence[Entry], epoch: str) -> None: ...

    def mark_stale(self, entries: Sequence[Entry]) -> None:
        """These changes may have committed unannounced (the reply to COMMIT was lost): the
        cached balances must not be trusted below them until a publish covers them."""
        ...


#: The caller's place in an ordering of its own (a session's mutating commands, see
#: ``gateway.sessions.handler``): set once the caller's first operation is queued in its lane,
#: so the next caller in that order may proceed.
QUEUED: ContextVar[asyncio.Future[None] | None] = ContextVar("ledger_queued", default=None)

_outcome_encoder = msgspec.json.Encoder()
_outcome_decoder = msgspec.json.Decoder(Outcome)
_MAX_ATTEMPTS = 5
_LATEST_MAX = 200_000


class _Race(Exception):
    """A concurrent transaction committed one of this batch's operation ids first."""


_RERUN: tuple[type[BaseException], ...] = (_Race, *RETRY_ERRORS)
#: What makes a lane drop its connection. asyncpg's InternalClientError ("another operation
#: is in progress") was met on a connection the server had closed while the lane idled; the
#: lane reconnects either way, so any such client error ends the connection, not the node.
_LOST: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.InternalClientError)


def decode_outcome(raw: bytes) -> Outcome:
    return _outcome_decoder.decode(raw)


def op_kind(op: Op) -> str:
    if isinstance(op, Earn):
        return op.kind
    return type(op).__name__.lower()


class _Item:
    __slots__ = ("at", "fp", "future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Outcome], at: float = 0.0) -> None:
        self.op = op
        self.future = future
        self.fp = b"" if isinstance(op, Expire) else fingerprint(op)
        #: When it was queued (``time.perf_counter``).
        self.at = at


class BatchStats:
    """Counters a benchmark or /metrics can read."""

    __slots__ = ("batches", "ops", "rereads", "retries", "shed")

    def __init__(self) -> None:
        self.batches = 0
        self.ops = 0
        self.retries = 0
        #: Operations refused at once because their lane's queue had waited too long.
        self.shed = 0
        #: Batches whose reads were stale after a lock wait and were read again.
        self.rereads = 0


class Ledger:
    def __init__(self, dsn: str, settings: LedgerSettings, sink: EventSink | None = None) -> None:
        self._dsn = dsn
        self._settings = settings
        self._sink = sink
        self._lanes = [_Lane(self, i) for i in range(settings.lanes)]
        self.stats = BatchStats()
        #: Called with each batch's committed changes before its replies are released: this
        #: node's own watchers get them at once (``Feeds.deliver_committed``), not after
        #: their round trip through Redis.
        self.on_committed: Callable[[Sequence[Entry]], None] | None = None
        #: Called once per committed batch with its phases, in seconds: how long its oldest
        #: operation waited in the lane, its statements, its COMMIT (the WAL flush every
        #: durable reply waits on). ``gateway_ledger_batch_seconds`` (see ``gateway.metrics``).
        self.on_batch_timed: Callable[[float, float, float], None] | None = None
        self._closed = False
        # Latest version committed through this node per member (bounded): reads on this node
        # never show a cached balance older than a change this node already replied to.
        self._latest: OrderedDict[str, int] = OrderedDict()

    async def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(lane.close() for lane in self._lanes))

    def known_version(self, member: str) -> int:
        """The newest version of ``member`` committed through this node, or -1."""
        return self._latest.get(member, -1)

    def _committed(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            self._saw(e.member, e.version)

    def replied(self, outcomes: Sequence[Outcome]) -> None:
        """A replayed outcome, or one asked for by id, tells the client a version this node may
        never have committed itself (the first attempt committed and lost its reply, maybe on
        another node): its reads must not serve that member below it."""
        for o in outcomes:
            data = o.data
            balance = getattr(data, "balance", data)
            if isinstance(balance, Balance):
                self._saw(balance.member, balance.version)

    def _saw(self, member: str, version: int) -> None:
        latest = self._latest
        if version > latest.get(member, -1):
            latest[member] = version
            latest.move_to_end(member)
            while len(latest) > _LATEST_MAX:
                latest.popitem(last=False)

    async def published(self) -> None:
        """Wait until every change committed so far was handed to the sink (or failed)."""
        for lane in self._lanes:
            task = lane.publishing
            if task is not None:
                with contextlib.suppress(Exception):
                    await task

    def submit(self, op: Op) -> asyncio.Future[Outcome]:
        """Queue ``op``; the future resolves to its outcome after COMMIT, or raises a
        retryable ``GatewayError`` (nothing applied, or outcome unknown: retry the same id)."""
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(GatewayError("ledger is shutting down", ErrorCode.DRAINING))
            return fut
        lane = self._lanes[zlib.crc32(op.member.encode()) % len(self._lanes)]
        now = time.perf_counter()
        queue = lane.queue
        if queue and queue[0] is not None and now - queue[0].at > self._settings.max_queue_wait:
            # Past the lane's capacity: a fast, retryable refusal (nothing applied) rather
            # than a wait that only grows. What is queued already still runs, in order.
            self.stats.shed += 1
            fut.set_exception(StoreUnavailable("the ledger is overloaded: retry the same id"))
            return fut
        lane.put(_Item(op, fut, now))
        queued = QUEUED.get()
        if queued is not None and not queued.done():
            queued.set_result(None)
        return fut

    async def execute(self, op: Op) -> Outcome:
        return await self.submit(op)


class _Lane:
    def __init__(self, ledger: Ledger, index: int) -> None:
        self.ledger = ledger
        self.index = index
        self.queue: deque[_Item] = deque()
        self.wakeup = asyncio.Event()
        self.conn: asyncpg.Connection[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self.publishing: asyncio.Task[None] | None = None
        #: The connection holds an empty transaction, begun with the last COMMIT.
        self.begun = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"ledger-lane-{self.index}")

    async def close(self) -> None:
        # Finish what is queued, then stop.
        self.queue.append(None)  # type: ignore[arg-type]
        self.wakeup.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.publishing is not None:
            with contextlib.suppress(Exception):
                await self.publishing
        if self.conn is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.conn.close(timeout=2)

    def _publish(self, sink: EventSink, entries: list[Entry], epoch: str) -> None:
        """Hand the batch's changes to the fan-out after the replies were released; publishes
        of one lane stay in commit order. A failed publish is left to the outbox relay."""
        previous = self.publishing

        async def publish() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await sink.publish(entries, epoch)
            except Exception:
                log.warning(
                    "publishing %d changes failed; the outbox relay will retry",
                    len(entries),
                    exc_info=True,
                )

        self.publishing = asyncio.create_task(publish())

    def put(self, item: _Item) -> None:
        self.queue.append(item)
        self.wakeup.set()

    async def _run(self) -> None:
        max_batch = self.ledger._settings.max_batch
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch: list[_Item] = []
            stop = False
            while self.queue and len(batch) < max_batch:
                item = self.queue.popleft()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                try:
                    await self._execute(batch)
                except Exception as exc:  # a bug: fail the batch, keep the lane alive
                    log.exception("ledger lane %d: unexpected error", self.index)
                    _fail(batch, GatewayError(f"internal error: {type(exc).__name__}"))
            if stop:
                _fail(list(self.queue), GatewayError("ledger is shutting down", ErrorCode.DRAINING))
                self.queue.clear()
                return

    async def _connection(self) -> asyncpg.Connection[Any]:
        if self.conn is None or self.conn.is_closed():
            timeout = self.ledger._settings.command_timeout
            conn = await connect(self.ledger._dsn, command_timeout=timeout)
            await conn.execute(q.LANE_SETTINGS)  # generic plans of index lookups only
            # The server ends a statement itself a second after this node gave up on it (and
            # dropped the connection): a lock wait must not outlive the client by long.
            await conn.execute(f"SET statement_timeout = {int(timeout * 1000) + 1000}")
            self.conn = conn
            self.begun = False
        return self.conn

    async def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        self.begun = False
        if conn is not None:
            conn.terminate()

    async def _execute(self, batch: list[_Item]) -> None:
        ledger = self.ledger
        sink = ledger._sink
        for attempt in range(_MAX_ATTEMPTS):
            committing = False
            epoch = "" if sink is None else sink.cache_epoch()
            try:
                conn = await self._connection()
                started = time.perf_counter()
                if not self.begun:
                    await conn.execute("BEGIN")
                self.begun = False
                try:
                    outcomes, entries = await _transact(conn, batch, ledger.stats)
                except BaseException as exc:
                    # A timed-out server would not answer a ROLLBACK either: the connection is
                    # dropped below, which rolls the transaction back.
                    if not conn.is_closed() and not isinstance(exc, TimeoutError):
                        with contextlib.suppress(*CONNECTION_ERRORS):
                            await conn.execute("ROLLBACK")
                    raise
                committing = True
                written = time.perf_counter()
                # The next batch's BEGIN rides on this COMMIT: one round trip less per batch.
                # An empty transaction takes no snapshot and no xid until its first statement,
                # so the lane idles "in transaction" without holding back vacuum. Every
                # timestamp a batch writes is the clock_timestamp() its first statement read,
                # never now(), which would be this BEGIN's time.
                await conn.execute("COMMIT; BEGIN")
                self.begun = True
                committed = time.perf_counter()
            except _RERUN:
                ledger.stats.retries += 1
                await asyncio.sleep(0.001 * (attempt + 1))
                continue
            except StoreUnavailable as exc:
                await self._drop_connection()
                _fail(batch, exc)
                return
            except _LOST as exc:
                await self._drop_connection()
                if committing:
                    # The batch may have committed: until a publish covers these versions,
                    # neither this node nor the cache serves these members below them.
                    ledger._committed(entries)
                    if sink is not None:
                        sink.mark_stale(entries)
                    _fail(
                        batch,
                        OutcomeUnknown(
                            f"connection lost during COMMIT ({type(exc).__name__}); "
                            "ask for the outcome or retry with the same id"
                        ),
                    )
                else:
                    _fail(
                        batch,
                        StoreUnavailable(
                            f"PostgreSQL unavailable ({type(exc).__name__}); nothing applied"
                        ),
                    )
                return
            faults.after_commit(getattr(i.op, "op", "") for i in batch)
            ledger.stats.batches += 1
            ledger.stats.ops += len(batch)
            ledger._committed(entries)
            ledger.replied(outcomes)
            if ledger.on_batch_timed is not None:
                with contextlib.suppress(Exception):  # a metric never fails a committed batch
                    ledger.on_batch_timed(
                        started - batch[0].at, written - started, committed - written
                    )
            if entries and ledger.on_committed is not None:
                try:
                    ledger.on_committed(entries)
                except Exception:  # the replies and the publish must go out regardless
                    log.exception("local delivery of %d changes failed", len(entries))
            for item, outcome in zip(batch, outcomes, strict=True):
                if not item.future.done():
                    item.future.set_result(outcome)
            if entries and sink is not None:
                self._publish(sink, entries, epoch)
            return
        _fail(batch, GatewayError("contention: retry the same id", ErrorCode.UNAVAILABLE))


def _fail(batch: Sequence[_Item], exc: BaseException) -> None:
    for item in batch:
        if item is not None and not item.future.done():
            item.future.set_exception(exc)


async def _transact(
    conn: asyncpg.Connection[Any], batch: list[_Item], stats: BatchStats
) -> tuple[list[Outcome], list[Entry]]:
    # A merge touches two members: its source is locked (in the same sorted order) too.
    sources = [item.op.source for item in batch if isinstance(item.op, Merge)]
    members = sorted({item.op.member for item in batch}.union(sources))
    tracked = [item.op for item in batch if not isinstance(item.op, Expire)]
    refs = [i.op for i in batch if isinstance(i.op, Commit | Release)]
    args = (
        [o.origin.merchant for o in tracked],
        [o.op for o in tracked],
        [o.origin.merchant for o in refs],
        [o.hold for o in refs],
    )
    rows = await conn.fetch(q.LOCK_AND_FIND, members, *args, sources)
    locked = [r for r in rows if r["src"] == "a"]
    found = [r for r in rows if r["src"] != "a"]
    now: datetime = locked[0]["now"] if locked else await conn.fetchval(q.NOW)
    state = BatchState(now=now)
    for r in locked:
        state.accounts[r["member_id"]] = Account(
            r["member_id"],
            r["merchant_id"],
            r["posted"],
            r["held"],
            r["version"],
            r["merged_into"],
            r["closed"],
            r["owed"],
        )
    if any(r["version"] != r["seen"] for r in locked):
        # A batch on one of these members committed between this statement's snapshot and
        # its lock: read again, after the locks (see queries.LOCK_AND_FIND).
        stats.rereads += 1
        found = await conn.fetch(q.FIND_OPS_AND_HOLDS, *args, list(state.accounts), now, sources)

    existing: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    for r in found:
        if r["src"] == "o":
            existing[(r["merchant_id"], r["id"])] = (r["fingerprint"], r["result"])
        else:
            state.holds[(r["merchant_id"], r["id"])] = Hold(
                r["merchant_id"],
                r["id"],
                r["member_id"],
                r["amount"],
                r["committed"],
                r["status"],
                r["expires_at"],
                r["created_at"],
                r["resolved_at"],
            )
    # A hold named by a commit or release but owned by another member than the one named: where
    # its owner was merged to, so a hold left behind on a duplicate gets its real answer
    # (see apply._find_hold). Rare: another member's hold id, or a merged duplicate's.
    named = (state.holds.get((o.origin.merchant, o.hold)) for o in refs)
    strangers = {h.member for h, o in zip(named, refs, strict=True) if h and h.member != o.member}
    if strangers:
        for r in await conn.fetch(q.SURVIVORS, list(strangers)):
            state.survivors[r["start"]] = r["survivor"]
    # Lazy expiry: members with an active hold past this batch's instant.
    state.overdue.update(
        h.member
        for h in state.holds.values()
        if h.status == "active" and h.expires_at <= now and h.member in state.accounts
    )

    outcomes: list[Outcome] = []
    new_ops: list[tuple[_Item, Outcome, bytes]] = []
    seen: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    for item in batch:
        op = item.op
        if isinstance(op, Expire):
            outcomes.append(apply(state, op))
            continue
        key = (op.origin.merchant, op.op)
        prior = existing.get(key) or seen.get(key)
        if prior is not None:
            fp, raw = prior
            if fp == item.fp:
                outcomes.append(decode_outcome(raw))
            else:
                outcomes.append(refuse(op.op, ErrorCode.IDEMPOTENCY_CONFLICT))
            continue
        outcome = apply(state, op)
        if outcome.error is not None and outcome.error.code == ErrorCode.MEMBER_MERGED:
            # Not recorded against the op id: a merged member stays merged, so the same
            # request always gets this answer, and the client may send the same op again
            # naming the survivor (e.g. to commit a hold that moved with the merge).
            outcomes.append(outcome)
            continue
        raw = _outcome_encoder.encode(outcome)
        seen[key] = (item.fp, raw)
        new_ops.append((item, outcome, raw))
        outcomes.append(outcome)

    dirty_accounts = [a for a in state.accounts.values() if a.dirty]
    dirty_holds = [h for h in state.holds.values() if h.dirty]
    if new_ops or dirty_accounts:
        counts = await conn.fetchrow(
            q.WRITE_BATCH,
            *_write_args(new_ops, dirty_accounts, state.entries, dirty_holds, now),
        )
        assert counts is not None
        if counts["ops"] != len(new_ops):
            raise _Race()
    return outcomes, state.entries


def _write_args(
    new_ops: list[tuple[_Item, Outcome, bytes]],
    accounts: list[Account],
    entries: list[Entry],
    holds: list[Hold],
    now: datetime,
) -> list[Any]:
    """WRITE_BATCH's parameters: one JSON document per table (see queries.WRITE_BATCH)."""
    dumps = orjson.dumps
    ops = [
        {
            "m": i.op.origin.merchant,
            "o": i.op.op,  # type: ignore[union-attr]
            "k": op_kind(i.op),
            "mb": i.op.member,
            "fp": i.fp.hex(),
            "ok": out.ok,
            "r": raw.hex(),
        }
        for i, out, raw in new_ops
    ]
    return [
        now,
        dumps(ops).decode(),
        dumps(
            {a.member: (a.posted, a.held, a.version, a.merged_into, a.owed) for a in accounts}
        ).decode(),
        [a.member for a in accounts],
        dumps(entries).decode(),  # the dataclasses, by field name
        dumps(holds).decode(),
        dumps(_sales(new_ops)).decode(),
    ]


def _sales(new_ops: list[tuple[_Item, Outcome, bytes]]) -> list[dict[str, Any]]:
    """The purchases behind this batch's applied sale earns."""
    rows = []
    for i, out, _ in new_ops:
        op = i.op
        if not (out.ok and isinstance(op, Earn) and op.sale is not None):
            continue
        rows.append(
            {
                "m": op.origin.merchant,
                "o": op.op,
                "mb": op.member,
                "ch": op.origin.channel,
                "st": op.origin.store,
                "te": op.origin.terminal,
                "tot": op.sale.total,
                "pts": getattr(out.data, "points", op.points),
                "bd": op.sale.breakdown.decode(),
                "ln": op.sale.lines.decode(),
                "lp": None if op.sale.line_points is None else op.sale.line_points.decode(),
                "fp": op.sale.fingerprint.hex(),
            }
        )
    return rows


__all__ = ["Ledger", "decode_outcome"]
