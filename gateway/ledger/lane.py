"""One group-commit lane: a queue of operations and one connection that runs them, one
transaction at a time, each holding every operation that arrived while the previous one was
in flight (see ``engine.py`` for how lanes are chosen and ``queries.py`` for the statements).

A batch is three round trips: the locks and reads, the writes, and ``COMMIT; BEGIN``. Its
replies are released only after COMMIT returns; its changes are built into frames once, handed
to this node's watchers first, then to the event sink (Redis), in commit order per lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec
import orjson

from gateway.errors import GatewayError, OutcomeUnknown, StoreUnavailable
from gateway.ledger import faults
from gateway.ledger import queries as q
from gateway.ledger.apply import apply, refuse
from gateway.ledger.balances import entry_change
from gateway.ledger.model import (
    Account,
    AttachmentKind,
    BatchState,
    Change,
    Commit,
    Earn,
    Entry,
    EventSink,
    Expire,
    Hold,
    Merge,
    Op,
    Release,
    decode_outcome,
    fingerprint,
)
from gateway.ledger.versions import Versions
from gateway.settings import LedgerSettings
from gateway.store.db import CONNECTION_ERRORS, RETRY_ERRORS, connect
from protocol.codes import ErrorCode
from protocol.messages import Outcome

log = logging.getLogger(__name__)

_outcome_encoder = msgspec.json.Encoder()
_MAX_ATTEMPTS = 5


class _Race(Exception):
    """A concurrent transaction committed one of this batch's operation ids first."""


_RERUN: tuple[type[BaseException], ...] = (_Race, *RETRY_ERRORS)
#: What makes a lane drop its connection. asyncpg's InternalClientError ("another operation
#: is in progress") was met on a connection the server had closed while the lane idled; the
#: lane reconnects either way, so any such client error ends the connection, not the node.
_LOST: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.InternalClientError)


class Published(Protocol):
    """Told the keys of the changes a publish delivered (the outbox relay deletes their rows)."""

    def mark_published(self, keys: Sequence[tuple[str, int]]) -> None: ...


def op_kind(op: Op) -> str:
    if isinstance(op, Earn):
        return op.kind
    return type(op).__name__.lower()


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


class Item:
    __slots__ = ("at", "fp", "future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Outcome], at: float = 0.0) -> None:
        self.op = op
        self.future = future
        self.fp = b"" if isinstance(op, Expire) else fingerprint(op)
        #: When it was queued (``time.perf_counter``).
        self.at = at


@dataclass(frozen=True, slots=True)
class LaneContext:
    """What every lane of a ledger shares: where its connections go and whom it tells."""

    dsn: str
    settings: LedgerSettings
    stats: BatchStats
    versions: Versions
    sink: EventSink | None
    #: This node's own watchers, handed each batch's changes before its replies are released
    #: (``Feeds.deliver_committed``): not after their round trip through Redis.
    deliver: Callable[[Sequence[Change]], None] | None
    #: Told what each publish delivered (the outbox relay).
    published: Published | None
    #: Each batch's phases, in seconds: its oldest operation's wait in the lane, its
    #: statements, its COMMIT (the WAL flush every durable reply waits on).
    on_batch: Callable[[float, float, float], None] | None
    attachments: tuple[AttachmentKind, ...]
    #: The batch statement, with the attachments' statements (``queries.write_batch``).
    write_batch: str


class Lane:
    def __init__(self, ctx: LaneContext, index: int) -> None:
        self.ctx = ctx
        self.index = index
        self.queue: deque[Item | None] = deque()
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
        self.queue.append(None)
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

    def _publish(self, sink: EventSink, changes: list[Change], epoch: str) -> None:
        """Hand the batch's changes to the fan-out after the replies were released; publishes
        of one lane stay in commit order. A failed publish is left to the outbox relay."""
        previous = self.publishing
        published = self.ctx.published

        async def publish() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await sink.publish(changes, epoch)
            except Exception:
                log.warning(
                    "publishing %d changes failed; the outbox relay will retry",
                    len(changes),
                    exc_info=True,
                )
                return
            if published is not None:
                published.mark_published([(c.entry.member, c.entry.version) for c in changes])

        self.publishing = asyncio.create_task(publish())

    def put(self, item: Item) -> None:
        self.queue.append(item)
        self.wakeup.set()

    async def _run(self) -> None:
        max_batch = self.ctx.settings.max_batch
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch: list[Item] = []
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
            timeout = self.ctx.settings.command_timeout
            conn = await connect(self.ctx.dsn, command_timeout=timeout)
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

    async def _execute(self, batch: list[Item]) -> None:
        ctx = self.ctx
        sink = ctx.sink
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
                    outcomes, entries = await _transact(conn, batch, ctx)
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
                ctx.stats.retries += 1
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
                    ctx.versions.committed(entries)
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
            self._committed(batch, outcomes, entries, epoch, (started, written, committed))
            return
        _fail(batch, GatewayError("contention: retry the same id", ErrorCode.UNAVAILABLE))

    def _committed(
        self,
        batch: list[Item],
        outcomes: list[Outcome],
        entries: list[Entry],
        epoch: str,
        times: tuple[float, float, float],
    ) -> None:
        """A committed batch: watchers here first, then the replies, then the publish."""
        ctx = self.ctx
        ctx.stats.batches += 1
        ctx.stats.ops += len(batch)
        ctx.versions.committed(entries)
        ctx.versions.replied(outcomes)
        if ctx.on_batch is not None:
            started, written, committed = times
            with contextlib.suppress(Exception):  # a metric never fails a committed batch
                ctx.on_batch(started - batch[0].at, written - started, committed - written)
        changes = [entry_change(e) for e in entries]
        if changes and ctx.deliver is not None:
            try:
                ctx.deliver(changes)
            except Exception:  # the replies and the publish must go out regardless
                log.exception("local delivery of %d changes failed", len(changes))
        for item, outcome in zip(batch, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)
        if changes and ctx.sink is not None:
            self._publish(ctx.sink, changes, epoch)


def _fail(batch: Sequence[Item | None], exc: BaseException) -> None:
    for item in batch:
        if item is not None and not item.future.done():
            item.future.set_exception(exc)


async def _transact(
    conn: asyncpg.Connection[Any], batch: list[Item], ctx: LaneContext
) -> tuple[list[Outcome], list[Entry]]:
    state, existing = await _read(conn, batch, ctx.stats)
    outcomes: list[Outcome] = []
    new_ops: list[tuple[Item, Outcome, bytes]] = []
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
            ctx.write_batch,
            *_write_args(new_ops, dirty_accounts, state.entries, dirty_holds, state.now, ctx),
        )
        assert counts is not None
        if counts["ops"] != len(new_ops):
            raise _Race()
    return outcomes, state.entries


async def _read(
    conn: asyncpg.Connection[Any], batch: list[Item], stats: BatchStats
) -> tuple[BatchState, dict[tuple[str, str], tuple[bytes, bytes]]]:
    """Lock the batch's members and read everything it works on: the state, and the recorded
    (fingerprint, outcome) of its operation ids that exist already."""
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
    return state, existing


def _write_args(
    new_ops: list[tuple[Item, Outcome, bytes]],
    accounts: list[Account],
    entries: list[Entry],
    holds: list[Hold],
    now: datetime,
    ctx: LaneContext,
) -> list[Any]:
    """The batch statement's parameters: one JSON document per table (see queries)."""
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
    args: list[Any] = [
        now,
        dumps(ops).decode(),
        dumps(
            {a.member: (a.posted, a.held, a.version, a.merged_into, a.owed) for a in accounts}
        ).decode(),
        [a.member for a in accounts],
        dumps(entries).decode(),  # the dataclasses, by field name
        dumps(holds).decode(),
    ]
    if ctx.attachments:
        rows: dict[str, list[Any]] = {k.name: [] for k in ctx.attachments}
        for i, out, _ in new_ops:
            op = i.op
            if isinstance(op, Earn):
                for a in op.attached:
                    row = a.row(op, out)
                    if row is not None:
                        rows[a.kind.name].append(row)
        args += [dumps(rows[k.name]).decode() for k in ctx.attachments]
    return args
