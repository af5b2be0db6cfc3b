"""Rebuild the Redis balance cache from PostgreSQL (after a Redis loss, or to warm a new one).

Streams accounts with a server-side cursor and writes them in pipelined chunks through the same
version-guarded script as read-through fills, so it can run while the gateway serves traffic:
a live change that lands first is never overwritten by an older snapshot. If Redis loses its
data while the rebuild runs, its writes are refused (the epoch changed) and it fails: run it
again.
"""

from __future__ import annotations

import asyncio
import time

from gateway.errors import StoreUnavailable
from gateway.store.db import connect
from gateway.store.keys import CACHE_EPOCH, FILL_BALANCE, SLOTS, Keys
from gateway.store.redis import CacheEpoch, Redis

CHUNK = 5000
#: Members per script call.
PER_CALL = 250
#: Script calls in flight at once on a cluster (below the client's 64 connections per node).
IN_FLIGHT = 48


async def rebuild_cache(dsn: str, redis: Redis, keys: Keys) -> tuple[int, float]:
    if keys.cluster:
        return await _rebuild_cluster(dsn, redis, keys)
    started = time.perf_counter()
    script = redis.register_script(FILL_BALANCE)
    epoch_key = keys.epoch()
    # The epoch is read before the snapshot is taken (see keys.CACHE_EPOCH).
    epoch = CacheEpoch().learn(await redis.register_script(CACHE_EPOCH)(keys=[epoch_key]))
    await script(keys=[epoch_key, keys.balance("__warmup__")], args=[epoch, -1, 0, 0])
    sha = script.sha
    conn = await connect(dsn)
    n = 0
    try:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor("SELECT member_id, posted, held, version FROM accounts")
            while True:
                rows = await cursor.fetch(CHUNK)
                if not rows:
                    break
                pipe = redis.pipeline(transaction=False)
                for i in range(0, len(rows), PER_CALL):
                    names: list[str] = [epoch_key]
                    args: list[str | int] = [epoch]
                    for member, posted, held, version in rows[i : i + PER_CALL]:
                        names.append(keys.balance(member))
                        args += (version, posted, held)
                    pipe.evalsha(sha, len(names), *names, *args)
                if any(r.decode() != epoch for r in await pipe.execute()):
                    raise StoreUnavailable("Redis lost its data during the rebuild: run it again")
                n += len(rows)
    finally:
        await conn.close()
    return n, time.perf_counter() - started


async def _rebuild_cluster(dsn: str, redis: Redis, keys: Keys) -> tuple[int, float]:
    """``rebuild_cache`` on a Redis Cluster: every slot's epoch is read before the snapshot,
    then each chunk is written one call per slot (a script's keys share one slot), the calls
    concurrent. A slot whose shard lost its data meanwhile refuses its writes: run it again."""
    started = time.perf_counter()
    script = redis.register_script(FILL_BALANCE)
    current = redis.register_script(CACHE_EPOCH)
    epochs: list[str] = []
    for lo in range(0, SLOTS, IN_FLIGHT):
        got = await asyncio.gather(
            *(current(keys=[keys.epoch(s)]) for s in range(lo, min(lo + IN_FLIGHT, SLOTS)))
        )
        epochs += [CacheEpoch().learn(e) for e in got]
    conn = await connect(dsn)
    n = 0

    async def fill(slot: int, rows: list[tuple[str, int, int, int]]) -> None:
        names: list[str] = [keys.epoch(slot)]
        args: list[str | int] = [epochs[slot]]
        for member, posted, held, version in rows:
            names.append(keys.balance(member))
            args += (version, posted, held)
        reply = await script(keys=keys.single_slot(names), args=args)
        if reply.decode() != epochs[slot]:
            raise StoreUnavailable("a Redis shard lost its data during the rebuild: run it again")

    try:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor("SELECT member_id, posted, held, version FROM accounts")
            while True:
                rows = await cursor.fetch(CHUNK)
                if not rows:
                    break
                by_slot: dict[int, list[tuple[str, int, int, int]]] = {}
                for member, posted, held, version in rows:
                    by_slot.setdefault(keys.slot(member), []).append(
                        (member, posted, held, version)
                    )
                groups = list(by_slot.items())
                for i in range(0, len(groups), IN_FLIGHT):
                    await asyncio.gather(*(fill(s, r) for s, r in groups[i : i + IN_FLIGHT]))
                n += len(rows)
    finally:
        await conn.close()
    return n, time.perf_counter() - started
