"""Sharded pub/sub on a Redis Cluster: the member channels of this node's feeds, over a bounded
number of connections (see the package README, "Redis Cluster").

The 16384 hash slots are split into ``shards`` equal ranges, as Centrifugo partitions its
sharded pub/sub; each range has its own redis-py ``ClusterPubSub``, which keeps one connection
per master owning slots of that range, so a node holds at most shards x masters connections
whatever the number of members it watches. Each range is read by its own task and every message
(``smessage``, ``ssubscribe``, ``sunsubscribe``) goes to the feeds' dispatcher. redis-py moves a
channel to its slot's new owner itself (a ``MOVED`` reply, a failed poll, a slot map refresh);
the feeds take each repeated ``SSUBSCRIBE`` confirmation as "moved: check what was missed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.store.keys import SLOTS
from gateway.store.redis import REDIS_ERRORS, Redis

log = logging.getLogger(__name__)

#: Seconds one read waits at most, split over the range's masters when idle: a message waits
#: at most its slice. 0.02 gave a cross-node push p99 of 11.2 ms against 4.7 on a single Redis;
#: 0.006, 4.2 against 3.7 (``tests/cluster/bench_push.py``, 2026-12-08).
SHARD_POLL = 0.006


class ShardedPubSub:
    def __init__(
        self,
        redis: Redis,
        shards: int,
        dispatch: Callable[[dict[str, Any]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._pubsubs: list[Any] = [redis.pubsub() for _ in range(shards)]
        self._dispatch = dispatch
        self._on_lost = on_lost
        self._readers: list[asyncio.Task[None]] = []

    def _of(self, slot: int) -> Any:
        return self._pubsubs[slot * len(self._pubsubs) // SLOTS]

    async def subscribe(self, slot: int, channel: str) -> None:
        await self._of(slot).ssubscribe(channel)

    async def unsubscribe(self, slot: int, channel: str) -> None:
        await self._of(slot).sunsubscribe(channel)

    def start(self) -> None:
        self._readers = [
            asyncio.create_task(self._read(ps), name=f"fanout-shard-{i}")
            for i, ps in enumerate(self._pubsubs)
        ]

    async def close(self) -> None:
        for t in self._readers:
            t.cancel()
        for t in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for ps in self._pubsubs:
            with contextlib.suppress(*REDIS_ERRORS):
                await ps.aclose()

    async def _read(self, pubsub: Any) -> None:
        """redis-py polls the range's per-master connections in turn and re-routes channels
        itself; a pass in which every master failed raises, and then every feed is checked as
        after an outage (``on_lost``)."""
        backoff = 0.05
        while True:
            try:
                if not pubsub.shard_channels:
                    await asyncio.sleep(SHARD_POLL)
                    continue
                msg = await pubsub.get_sharded_message(timeout=SHARD_POLL)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("sharded fan-out connection lost; resubscribing", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._on_lost()
                continue
            if msg is not None:
                self._dispatch(msg)
