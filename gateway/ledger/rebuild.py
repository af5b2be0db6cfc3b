"""Rebuild the Redis balance cache from PostgreSQL (after a Redis loss, or to warm a new one).

Streams accounts with a server-side cursor and writes them in pipelined chunks through the same
version-guarded script as read-through fills, so it can run while the gateway serves traffic:
a live change that lands first is never overwritten by an older snapshot.
"""

from __future__ import annotations

import time

from gateway.store.db import connect
from gateway.store.keys import FILL_BALANCE, Keys
from gateway.store.redis import Redis

CHUNK = 5000


async def rebuild_cache(dsn: str, redis: Redis, keys: Keys) -> tuple[int, float]:
    started = time.perf_counter()
    script = redis.register_script(FILL_BALANCE)
    await script(keys=[keys.balance("__warmup__")], args=[-1, 0, 0])  # loads the script
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
                for member, posted, held, version in rows:
                    pipe.evalsha(sha, 1, keys.balance(member), version, posted, held)
                await pipe.execute()
                n += len(rows)
    finally:
        await conn.close()
    return n, time.perf_counter() - started
