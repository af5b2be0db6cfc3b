"""Read paths: balances through the Redis cache (falling back to PostgreSQL), history for
resume, operation outcomes.

The cache only ever moves forward (version-guarded Lua), so a read-through fill racing a newer
change can never store an older balance; a fill carries the cache epoch known before its
PostgreSQL read, so one racing a Redis restart is dropped; a cached balance below its floor is
not served. When Redis is down or empty, reads go to PostgreSQL: slower, never wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from gateway.errors import StoreUnavailable
from gateway.ledger import balances
from gateway.ledger import queries as q
from gateway.ledger.model import decode_outcome
from gateway.ledger.versions import Versions
from gateway.store.db import translate_errors as pg_errors
from gateway.store.keys import FILL_BALANCE, READ_BALANCE, Keys
from gateway.store.redis import REDIS_ERRORS, Breaker, CacheEpoch, Redis
from protocol.messages import Balance, BalanceChanged, Outcome

log = logging.getLogger(__name__)

#: Seconds a cached read may take before it is given up for PostgreSQL.
READ_TIMEOUT = 0.5
#: Redis refusing writes (and so the cached-read script): an outage, not a fault to log.
#: redis-py turns some codes into classes (and drops the code from the message), the others
#: stay plain ResponseErrors that start with their code.
_REFUSED = (OutOfMemoryError, ReadOnlyError, MasterDownError, BusyLoadingError)
_REFUSAL_CODES = ("MISCONF", "NOREPLICAS", "BUSY")


def _refusal(exc: ResponseError) -> bool:
    return isinstance(exc, _REFUSED) or str(exc).startswith(_REFUSAL_CODES)


class Reads:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        redis: Redis,
        keys: Keys,
        epoch: CacheEpoch | None = None,
        versions: Versions | None = None,
    ) -> None:
        self._pool = pool
        self.epoch = epoch if epoch is not None else CacheEpoch()
        self._redis = redis
        self._keys = keys
        self._fill = redis.register_script(FILL_BALANCE)
        self._read = redis.register_script(READ_BALANCE)
        self.breaker = Breaker()
        #: Newest version this node committed or told per member (its ledger's): a cached
        #: balance older than that is not served.
        self.versions = versions if versions is not None else Versions()

    def version_floor(self, member: str) -> int:
        return self.versions.known(member)

    async def balance_from_db(self, member: str) -> Balance | None:
        with pg_errors("balance read"):
            row = await self._pool.fetchrow(q.ACCOUNT, member)
        if row is None:
            return None
        return balances.make_balance(member, row["posted"], row["held"], row["version"])

    async def balance(self, member: str) -> Balance | None:
        """Cached balance, read through to PostgreSQL on a miss or when Redis is down."""
        key = self._keys.balance(member)
        if self.breaker.is_open:
            return await self.balance_from_db(member)
        try:
            # Bounded below the client's 2 s socket timeout: Redis holds such scripts (not
            # plain reads) while a failover pauses writes (CLIENT PAUSE WRITE).
            async with asyncio.timeout(READ_TIMEOUT):
                p, h, v, f = await self._read(keys=[key])
        except REDIS_ERRORS as exc:
            if isinstance(exc, ResponseError) and not _refusal(exc):
                log.warning("cached read of %s failed: %s", member, exc)  # a bad key, a bug
            self.breaker.trip()
            return await self.balance_from_db(member)
        if (
            v is not None
            and p is not None
            and h is not None
            and int(v) >= max(self.versions.known(member), -1 if f is None else int(f))
        ):
            return balances.make_balance(member, int(p), int(h), int(v))
        token = self.epoch.token()  # known before the read: see keys.CACHE_EPOCH
        bal = await self.balance_from_db(member)
        if bal is not None:
            slot = self._keys.slot(member)
            with contextlib.suppress(*REDIS_ERRORS):
                self.epoch.learn(
                    await self._fill(
                        keys=[self._keys.epoch(slot), key],
                        args=[self.epoch.at(token, slot), bal.version, bal.posted, bal.held],
                    ),
                    slot,
                )
        return bal

    async def history(self, member: str, since: int, limit: int) -> list[BalanceChanged]:
        """Changes with version > ``since``, oldest first, at most ``limit``."""
        with pg_errors("history read"):
            rows = await self._pool.fetch(q.HISTORY, member, since, limit)
        return [balances.row_change(member, r) for r in rows]

    async def outcome(self, merchant: str, op_id: str) -> Outcome | None:
        """The recorded outcome of ``op_id``; None when none is recorded yet. An operation
        whose transaction is committing (a till told ``timeout`` while its COMMIT waited on the
        disk) is waited for, not reported missing: a probe insert of the same key waits for that
        transaction to end, and is rolled back whatever happens."""
        with pg_errors("outcome read"):
            async with self._pool.acquire() as conn:
                raw = await conn.fetchval(q.OPERATION_RESULT, merchant, op_id)
                if raw is None:
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        await conn.execute(q.PROBE_OPERATION, merchant, op_id)
                    finally:
                        await tx.rollback()
                    raw = await conn.fetchval(q.OPERATION_RESULT, merchant, op_id)
        return None if raw is None else decode_outcome(raw)


__all__ = ["Reads", "StoreUnavailable"]
