"""Segments: definitions per merchant, live membership and full recomputes.

Both paths run ``_apply`` on a set of members under their segment locks: read each member's
facts (profile, points available, the aggregates' figures the definitions read), evaluate
every definition with ``conditions.matches``, compare with the stored membership and write the
difference. The live path does it for one member after its sale, return, redemption, tier
change, profile edit or merge; a full pass for every member of the merchant, a batch at a
time (each batch its own short transaction, so a live update waits for one batch at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.aggregates import Feature, day_of, features, quintiles
from gateway.background import stop
from gateway.errors import GatewayError
from gateway.ledger import available_points
from gateway.members import MemberFacts, member_facts, member_ids_page
from gateway.segments import store
from gateway.segments.conditions import (
    RFM_WINDOW,
    All,
    Any_,
    Condition,
    Cuts,
    Facts,
    Not,
    Points,
    compiled,
    features_of,
    uses_rfm,
)
from gateway.segments.events import Cause, MembershipChange, MembershipSink
from gateway.segments.store import Segment
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms

log = logging.getLogger(__name__)

#: How old a node's copy of a merchant's definitions may be; a pass after a change starts
#: later than that, so no node's live update uses the old definition after it.
DEFINITIONS_TTL = 1.0
#: Merchants whose live refreshes run at once on a node, members refreshed together, and
#: members waiting at most.
LIVE_SLOTS = 4
LIVE_BATCH = 500
#: How long a live refresh waits for more members to refresh with it (seconds).
LIVE_DELAY = 0.05
MAX_QUEUED = 10_000
#: Members per batch of a full pass, and batches in flight at once.
BATCH = 1_000
PARALLEL = 2


@dataclass(slots=True)
class _Defs:
    segments: list[Segment]
    cuts: Cuts
    points: bool
    #: what ``store.version`` read with them
    version: tuple[Any, ...] = ()
    read_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Recomputed:
    members: int
    entered: int
    left: int
    seconds: float


def _points(c: Condition) -> bool:
    if isinstance(c, All | Any_):
        return any(_points(s) for s in c.conditions)
    if isinstance(c, Not):
        return _points(c.condition)
    return isinstance(c, Points)


class Segments:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        sinks: Sequence[MembershipSink] = (),
        clock: Callable[[], datetime] | None = None,
        ttl: float = DEFINITIONS_TTL,
        delay: float = LIVE_DELAY,
    ) -> None:
        self._delay = delay
        self._pool = pool
        self._sinks = tuple(sinks)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ttl = ttl
        self._defs: dict[str, _Defs] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, dict[str, Cause]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._queued = 0
        self._live: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(LIVE_SLOTS)
        #: live refreshes dropped because too many members were waiting
        self.dropped = 0

    def add_sink(self, sink: MembershipSink) -> None:
        """Also tell ``sink`` of every change (one built after segments: offers)."""
        self._sinks += (sink,)

    # ------------------------------------------------------------------ definitions
    async def definitions(self, merchant: str) -> list[Segment]:
        return (await self._cached(merchant)).segments

    async def _cached(self, merchant: str) -> _Defs:
        d = self._defs.get(merchant)
        if d is None or time.monotonic() - d.read_at > self._ttl:
            async with self._pool.acquire() as conn:
                d = await self._load(conn, merchant)
        return d

    async def _load(self, conn: Any, merchant: str) -> _Defs:
        with translate_errors("segments read"):
            version = await store.version(conn, merchant)
            segments = await store.definitions(conn, merchant)
            cuts = await store.cuts(conn, merchant)
        d = _Defs(segments, cuts or Cuts(), any(_points(s.condition) for s in segments), version)
        self._defs[merchant] = d
        return d

    def invalidate(self, merchant: str) -> None:
        self._defs.pop(merchant, None)

    async def put(
        self, merchant: str, segment: str, name: str, cond: Condition, recompute: bool = True
    ) -> Segment:
        """Store the (validated) definition, then (unless told not to: a caller that runs
        its own pass) recompute it in the background."""
        s = await store.put(self._pool, merchant, segment, name, cond)
        self.invalidate(merchant)
        if recompute:
            self._schedule(merchant)
        return s

    async def delete(self, merchant: str, segment: str) -> bool:
        gone = await store.delete(self._pool, merchant, segment)
        self.invalidate(merchant)
        return gone

    async def merchants(self) -> list[str]:
        """Merchants with at least one segment."""
        with translate_errors("segments read"):
            async with self._pool.acquire() as conn:
                return await store.merchants(conn)

    async def definitions_now(self, merchant: str) -> list[Segment]:
        """The stored definitions (not the node's copy)."""
        async with self._pool.acquire() as conn:
            return await store.definitions(conn, merchant)

    async def get(self, merchant: str, segment: str) -> Segment | None:
        async with self._pool.acquire() as conn:
            for s in await store.definitions(conn, merchant):
                if s.id == segment:
                    return s
        return None

    async def sizes(self, merchant: str) -> dict[str, int]:
        return await store.sizes(self._pool, merchant)

    async def size(self, merchant: str, segment: str) -> int:
        return await store.size(self._pool, merchant, segment)

    async def members(
        self, merchant: str, segment: str, after: str | None, limit: int
    ) -> list[tuple[str, datetime]]:
        return await store.members_page(self._pool, merchant, segment, after, limit)

    # ------------------------------------------------------------------ live
    async def refresh(
        self, merchant: str, members: Sequence[str], cause: Cause | Mapping[str, Cause]
    ) -> list[MembershipChange]:
        """Re-evaluate ``members``' segments now (after their sale, return, tier change...)."""
        defs = await self._cached(merchant)
        if not defs.segments:
            return []
        ids = sorted(set(members))
        with translate_errors("segments refresh"):
            async with self._pool.acquire() as conn, conn.transaction():
                await store.lock_members(conn, ids)
                # the definitions as they are now (a change on another node since this copy
                # was read: read again), and only their memberships touched
                if await store.version(conn, merchant) != defs.version:
                    defs = await self._load(conn, merchant)
                changes = await self._apply(
                    conn,
                    merchant,
                    ids,
                    defs.segments,
                    defs.cuts,
                    defs.points,
                    [s.id for s in defs.segments],
                    cause,
                )
        await self._announce(changes)
        return changes

    def soon(self, merchant: str, members: Sequence[str], cause: Cause) -> None:
        """``refresh`` right after the caller's reply, on this node: the reply does not wait
        for it. The members waiting are refreshed together, up to ``LIVE_BATCH`` at a time, by
        one task per merchant (at most ``LIVE_SLOTS`` merchants at once), so under load one
        transaction serves many sales (as the ledger's group commit does); a member already
        waiting is not queued twice (the refresh that runs reads the facts as they are then).
        Past ``MAX_QUEUED`` waiting members a refresh is dropped and counted (``dropped``):
        the member's next event, or the nightly pass, brings it up to date."""
        waiting = self._waiting.setdefault(merchant, {})
        for m in members:
            if m in waiting:
                continue
            if self._queued >= MAX_QUEUED:
                self.dropped += 1
                continue
            waiting[m] = cause
            self._queued += 1
        if waiting and merchant not in self._drainers:
            task = asyncio.get_running_loop().create_task(self._drain(merchant))
            self._drainers[merchant] = task
            self._tasks.add(task)
            self._live.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(self._live.discard)

    async def _drain(self, merchant: str) -> None:
        try:
            async with self._slots:
                # gather what the next moments bring: one transaction for all of it
                await asyncio.sleep(self._delay)
                while waiting := self._waiting.get(merchant):
                    batch = dict(itertools.islice(waiting.items(), LIVE_BATCH))
                    for m in batch:
                        del waiting[m]
                    self._queued -= len(batch)
                    await self.refresh_quietly(merchant, list(batch), batch)
        finally:
            self._drainers.pop(merchant, None)
            if not self._waiting.get(merchant):
                self._waiting.pop(merchant, None)

    async def refresh_quietly(
        self, merchant: str, members: Sequence[str], cause: Cause | Mapping[str, Cause]
    ) -> None:
        """``refresh``, logging a failure (the next event or full pass catches up)."""
        try:
            await self.refresh(merchant, members, cause)
        except GatewayError:
            log.warning(
                "segments of %s after %s: not refreshed", list(members), cause, exc_info=True
            )

    # ------------------------------------------------------------------ full pass
    async def recompute(
        self,
        merchant: str,
        only: Sequence[str] | None = None,
        rfm: bool = True,
        batch: int = BATCH,
        parallel: int = PARALLEL,
    ) -> Recomputed:
        """Every member of the merchant, against ``only`` these segments (None: all); with
        ``rfm``, the RFM quintiles are computed afresh first (else the stored ones hold)."""
        t0 = time.perf_counter()
        now = self._clock()
        async with self._pool.acquire() as conn:
            with translate_errors("segments read"):
                started = await conn.fetchval("SELECT now()")
                segments = await store.definitions(conn, merchant)
                if only is not None:
                    segments = [s for s in segments if s.id in set(only)]
                cuts = await store.cuts(conn, merchant)
                if rfm and any(uses_rfm(s.condition) for s in segments):
                    r, f, m = await quintiles(conn, merchant, day_of(now), RFM_WINDOW)
                    cuts = Cuts(tuple(r), tuple(f), tuple(m))
                    await store.put_cuts(conn, merchant, cuts)
                    self.invalidate(merchant)
        cuts = cuts or Cuts()
        # only these segments' memberships are touched (one created meanwhile has its own pass)
        ids_only = [s.id for s in segments]
        points = any(_points(s.condition) for s in segments)
        counts = [0, 0, 0]  # members, entered, left

        async def one(after: str | None, hi: str | None, ids: list[str]) -> None:
            changes = await self._pass_batch(
                merchant, after, hi, ids, segments, cuts, points, ids_only, now
            )
            counts[1] += sum(len(c.entered) for c in changes)
            counts[2] += sum(len(c.left) for c in changes)

        # Batches of disjoint id ranges, ``parallel`` at a time: one's reads in PostgreSQL
        # overlap another's evaluation here.
        slots = asyncio.Semaphore(parallel)
        running: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def done(t: asyncio.Task[None]) -> None:
            running.discard(t)
            slots.release()
            if not t.cancelled() and t.exception() is not None:
                failed.append(t.exception())  # type: ignore[arg-type]

        after: str | None = None
        with translate_errors("segments recompute"):
            try:
                while not failed:
                    async with self._pool.acquire() as conn:
                        ids = await member_ids_page(conn, merchant, after, batch)
                    hi = ids[-1] if ids else None
                    counts[0] += len(ids)
                    await slots.acquire()
                    t = asyncio.get_running_loop().create_task(one(after, hi, ids))
                    running.add(t)
                    t.add_done_callback(done)
                    if hi is None:
                        break
                    after = hi
                while running:
                    await asyncio.gather(*list(running), return_exceptions=True)
            finally:
                for t in list(running):
                    t.cancel()
            if failed:
                raise failed[0]
            async with self._pool.acquire() as conn:
                await store.mark_computed(conn, merchant, [s.id for s in segments], started)
        total, entered, left = counts
        return Recomputed(total, entered, left, time.perf_counter() - t0)

    async def _pass_batch(
        self,
        merchant: str,
        after: str | None,
        hi: str | None,
        ids: list[str],
        segments: list[Segment],
        cuts: Cuts,
        points: bool,
        only: list[str],
        now: datetime,
    ) -> list[MembershipChange]:
        """One batch of a full pass: the members with ids in (``after``, ``hi``]."""
        async with self._pool.acquire() as conn, conn.transaction():
            # the members' locks first: their memberships are read under them
            await store.lock_members(conn, ids)
            old = await store.memberships_between(conn, merchant, after, hi, only)
            if set(old) - set(ids):  # members no longer eligible: locked too
                ids = sorted(set(ids) | set(old))
                await store.lock_members(conn, ids)
                old = await store.memberships_between(conn, merchant, after, hi, only)
            changes = await self._apply(
                conn, merchant, ids, segments, cuts, points, only, "recompute", now, old
            )
        await self._announce(changes)
        return changes

    # ------------------------------------------------------------------ the one evaluation
    async def _apply(
        self,
        conn: Any,
        merchant: str,
        ids: list[str],
        segments: list[Segment],
        cuts: Cuts,
        points: bool,
        only: list[str] | None,
        cause: Cause | Mapping[str, Cause],
        now: datetime | None = None,
        old: dict[str, set[str]] | None = None,
    ) -> list[MembershipChange]:
        """Evaluate ``segments`` for ``ids`` (locked by the caller) and write the difference
        with their stored membership (of ``only`` those segments, when given)."""
        if not ids:
            return []
        now = now or self._clock()
        today = day_of(now)
        people = await member_facts(conn, merchant, ids) if segments else []
        new = await evaluate(conn, merchant, people, segments, cuts, points, today, now.month)
        if old is None:
            old = await store.memberships(conn, merchant, ids, only)
        ins: list[tuple[str, str]] = []
        out: list[tuple[str, str]] = []
        changes = []
        at = epoch_ms(now)
        for m in ids:
            now_in = new.get(m, set())
            was_in = old.get(m, set())
            came, went = sorted(now_in - was_in), sorted(was_in - now_in)
            if came or went:
                ins += [(m, s) for s in came]
                out += [(m, s) for s in went]
                changes.append(
                    MembershipChange(
                        merchant=merchant,
                        member=m,
                        entered=came,
                        left=went,
                        at=at,
                        cause=cause if isinstance(cause, str) else cause.get(m, "recompute"),
                    )
                )
        await store.write(conn, merchant, ins, out)
        return changes

    async def _announce(self, changes: list[MembershipChange]) -> None:
        if not changes:
            return
        for sink in self._sinks:
            try:
                await sink.changed(changes)
            except Exception:  # a consumer's failure must not fail the sale that moved them
                log.warning("segment events: a sink failed", exc_info=True)

    # ------------------------------------------------------------------ background passes
    def _schedule(self, merchant: str) -> None:
        """A full pass of the merchant's segments, once every node's copy of the old
        definitions has expired; a change while one waits is covered by it."""
        if merchant in self._pending and not self._pending[merchant].done():
            return

        async def run() -> None:
            await asyncio.sleep(self._ttl)
            self._pending.pop(merchant, None)
            try:
                await self.recompute(merchant)
            except GatewayError:
                log.warning("segments of %s: recompute failed", merchant, exc_info=True)

        task = asyncio.get_running_loop().create_task(run(), name=f"segments-{merchant}")
        self._pending[merchant] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait for the refreshes and passes scheduled so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Let the live refreshes under way finish (briefly), stop the rest."""
        if self._live:
            await asyncio.wait(list(self._live), timeout=2.0)
        for t in list(self._tasks):
            with contextlib.suppress(Exception):
                await stop(t)


async def evaluate(
    conn: Any,
    merchant: str,
    people: list[MemberFacts],
    segments: list[Segment],
    cuts: Cuts,
    points: bool,
    today: int,
    month: int,
) -> dict[str, set[str]]:
    """Each member's segments: the facts of ``people`` read once for every definition."""
    if not people or not segments:
        return {}
    ids = [p.member for p in people]
    wanted: dict[Feature, None] = {}
    for s in segments:
        wanted.update(dict.fromkeys(features_of(s.condition, today)))
    specs = list(wanted)
    figures = await features(conn, merchant, ids, specs)
    avail = await available_points(conn, ids) if points else {}
    tests = [(s.id, compiled(s.condition, today)) for s in segments]
    out: dict[str, set[str]] = {}
    for p in people:
        facts = Facts(
            member=p,
            available=avail.get(p.member, 0),
            figures=dict(zip(specs, figures[p.member], strict=True)),
            today=today,
            month=month,
            cuts=cuts,
        )
        out[p.member] = {sid for sid, test in tests if test(facts)}
    return out
