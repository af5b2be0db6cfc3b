"""Publishes committed changes (their ``balance_changed`` frames, encoded once by the ledger)
to Redis: the ledger's ``EventSink``.

One round trip per batch: one Lua call (EVALSHA) per chunk of changes updates each cached
balance (only if newer, and only when the changes were committed under the cache's current
epoch; else it raises the balance's floor) and publishes each encoded frame on its member's
channel, so the cache and the stream of events never disagree about order. The ledger tells
its outbox what a publish delivered, so those rows can be deleted.

On a Redis Cluster a script's keys must share one slot: the batch is split by the members'
slots, one call per slot (with that slot's epoch key and the epoch known for it), the calls of
different slots concurrent (they go to different shards); a member's changes stay in order
inside its slot's call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.ledger import Change, Entry
from gateway.store.keys import APPLY_EVENTS, RAISE_FLOORS, Keys
from gateway.store.redis import Breaker, CacheEpoch, Redis, repair_topology, translate_errors

#: Seconds a publish may take before it is given up: the breaker trips and the outbox relay
#: republishes. (Replies never wait for a publish: the lane releases them first.)
PUBLISH_TIMEOUT = 0.5
#: Changes per Lua call (one call per chunk keeps the per-command overhead off each change).
CHUNK = 128


class Publisher:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        epoch: CacheEpoch | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(keys.lua(APPLY_EVENTS))
        self._floors = redis.register_script(RAISE_FLOORS)
        self.epoch = epoch if epoch is not None else CacheEpoch()
        self.breaker = Breaker()
        # Newest version per member whose publish failed: the cached balance may be behind
        # PostgreSQL, so its floor is raised (reads fall through) at the next Redis contact.
        self._stale: dict[str, int] = {}

    def cache_epoch(self) -> str:
        return self.epoch.token()

    async def publish(self, changes: Sequence[Change], epoch: str = "") -> None:
        """Publish ``changes``. ``epoch`` is the cache epoch known before they were read or
        committed: under any other (the outbox relay passes none) only floors are raised."""
        if not changes and not self._stale:
            return
        if self.breaker.is_open:
            self.mark_stale([c.entry for c in changes])
            raise StoreUnavailable("Redis marked down; the outbox relay will publish")
        keys = self._keys
        stale = dict(self._stale)
        try:
            with translate_errors("publish"):
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    # One EVALSHA per call, awaited in order: almost every batch is one call,
                    # one round trip. (A redis-py pipeline holding scripts first asks the
                    # server whether they exist: a second round trip on every publish.)
                    reply = None
                    single = changes
                    if keys.cluster:
                        await self._publish_by_slot(changes, epoch, stale)
                        single = ()
                    elif stale:
                        await self._floors(
                            keys=[keys.balance(m) for m in stale], args=list(stale.values())
                        )
                    for i in range(0, len(single), CHUNK):
                        names: list[str] = [keys.epoch()]
                        args: list[bytes | int | str] = [epoch]
                        for c in single[i : i + CHUNK]:
                            e = c.entry
                            names += (keys.balance(e.member), keys.member_channel(e.member))
                            args += (e.version, e.posted_after, e.held_after, c.data)
                        reply = await self._script(keys=names, args=args)
        except (StoreUnavailable, TimeoutError):
            repair_topology(self._redis)
            self.breaker.trip()
            self.mark_stale([c.entry for c in changes])
            raise
        self.breaker.reset()
        if reply is not None:
            self.epoch.learn(reply)
        for m, v in stale.items():
            if self._stale.get(m) == v:
                del self._stale[m]

    async def _publish_by_slot(
        self, changes: Sequence[Change], token: str, stale: dict[str, int]
    ) -> None:
        """The cluster's publish: one call per slot (and chunk), slots concurrently."""
        keys = self._keys
        floors: dict[int, list[tuple[str, int]]] = {}
        for m, v in stale.items():
            floors.setdefault(keys.slot(m), []).append((m, v))
        by_slot: dict[int, list[Change]] = {}
        for c in changes:
            by_slot.setdefault(keys.slot(c.entry.member), []).append(c)

        async def one_slot(slot: int) -> None:
            if slot in floors:
                pairs = floors[slot]
                await self._floors(
                    keys=keys.single_slot([keys.balance(m) for m, _ in pairs]),
                    args=[v for _, v in pairs],
                )
            group = by_slot.get(slot, ())
            epoch = self.epoch.at(token, slot)
            for i in range(0, len(group), CHUNK):
                names: list[str] = [keys.epoch(slot)]
                args: list[bytes | int | str] = [epoch]
                for c in group[i : i + CHUNK]:
                    e = c.entry
                    names += (keys.balance(e.member), keys.member_channel(e.member))
                    args += (e.version, e.posted_after, e.held_after, c.data)
                reply: Any = await self._script(keys=keys.single_slot(names), args=args)
                self.epoch.learn(reply, slot)

        slots = by_slot.keys() | floors.keys()
        results = await asyncio.gather(*(one_slot(s) for s in slots), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def mark_stale(self, entries: Sequence[Entry]) -> None:
        """Raise these members' cache floors at the next Redis contact (see ``publish``)."""
        stale = self._stale
        for e in entries:
            if e.version > stale.get(e.member, -1):
                stale[e.member] = e.version
