"""Points expiry: the available points of members inactive for their programme's
``expiry_days`` are expired, each by a ledger operation, by a job that runs on every node
(one runner at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime
from typing import Any

import asyncpg

from gateway.background import stop
from gateway.errors import GatewayError
from gateway.ledger import Earn, Inactive, Ledger, Origin, inactive_accounts
from gateway.programme import expiry_days
from gateway.store.db import translate_errors
from protocol.messages import Outcome, PointsLine

log = logging.getLogger(__name__)

#: Advisory lock key of the points-expiry job (one runner at a time across nodes).
EXPIRY_LOCK = 0x6C6F79616C7478  # "loyaltx"
#: Members one expiry pass reads (with ``drain``, a full pass is followed by another).
EXPIRY_BATCH = 5000
#: Expiries queued in the ledger at a time: a pass waits for each chunk, so the lanes serve the
#: tills in between (5,000 at once queued every till behind them for about a second).
EXPIRY_CHUNK = 200
#: Seconds between points-expiry passes on each node (jittered; the lock makes one run).
EXPIRY_INTERVAL = 3600.0


def _expiry(a: Inactive) -> Earn:
    """The expiry of an inactive account as read."""
    return Earn(
        # '~' and '/' are outside the client id charset: no client can take this id first
        op=f"~expiry/{a.member}/{a.version}",
        member=a.member,
        points=-a.available,
        origin=Origin(merchant=a.merchant, channel="system"),
        kind="points_expiry",
        contra="expiry",
        clamp=True,
        breakdown=(PointsLine(rule="expiry", points=-a.available),),
        # a sale, reserve, commit or release since the read is activity: checked under the
        # row lock, the expiry then posts nothing
        if_version=a.version,
    )


async def run_expiry(
    pool: asyncpg.Pool[Any],
    ledger: Ledger,
    now: datetime | None = None,
    merchant: str | None = None,
    drain: bool = False,
) -> int:
    """Expire the available points of members inactive for the programme's
    ``expiry_days``: every merchant's (the background loop), or only ``merchant``'s (its
    admin API). One runner at a time across nodes (advisory lock); each expiry is a
    ledger operation with an id derived from the account version it saw, so even two
    overlapping runs expire a balance once. A pass reads at most ``EXPIRY_BATCH`` members;
    with ``drain`` (the background loop) passes follow each other while they come back
    full, so a backlog larger than a pass does not wait an hour per pass. Returns the number
    of members expired."""
    expired = 0
    while True:
        done, full = await _expiry_pass(pool, ledger, now, merchant)
        expired += done
        if not (drain and full and done):  # a pass that expired nothing ends it too
            return expired


async def _expiry_pass(
    pool: asyncpg.Pool[Any], ledger: Ledger, now: datetime | None, merchant: str | None
) -> tuple[int, bool]:
    """One pass: (members expired, whether it read a full batch)."""
    outcomes: list[Outcome | BaseException] = []
    rows: list[Inactive] = []
    with translate_errors("points expiry"):
        async with pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", EXPIRY_LOCK):
                return 0, False
            try:
                cutoffs = await expiry_days(conn, merchant)
                if cutoffs:
                    rows = await inactive_accounts(conn, cutoffs, now, EXPIRY_BATCH)
                for i in range(0, len(rows), EXPIRY_CHUNK):
                    chunk = rows[i : i + EXPIRY_CHUNK]
                    outcomes += await asyncio.gather(
                        *(ledger.submit(_expiry(r)) for r in chunk),
                        return_exceptions=True,
                    )
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1)", EXPIRY_LOCK)
                except BaseException:
                    # never hand a connection holding the lock back to the pool (its
                    # release does not unlock, see store.db): ending it frees the lock
                    conn.terminate()
                    raise
    expired = sum(
        1 for o in outcomes if isinstance(o, Outcome) and o.ok and getattr(o.data, "points", 0) != 0
    )
    return expired, len(rows) == EXPIRY_BATCH


class PointsExpiry:
    """The job on one node: a pass every ``interval`` (jittered, so nodes do not all wake at
    once; the advisory lock lets one run), and a pass on demand (the admin API)."""

    def __init__(
        self, pool: asyncpg.Pool[Any], ledger: Ledger, interval: float = EXPIRY_INTERVAL
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run(
        self, now: datetime | None = None, merchant: str | None = None, drain: bool = False
    ) -> int:
        """Expire the points of inactive members (see ``run_expiry``); returns how many
        members were expired."""
        return await run_expiry(self._pool, self._ledger, now, merchant, drain)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="points-expiry")

    async def close(self) -> None:
        await stop(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval * random.uniform(0.5, 1.0))
            with contextlib.suppress(GatewayError):
                try:
                    n = await self.run(drain=True)
                    if n:
                        log.info("points expiry: %d members expired", n)
                except GatewayError:
                    raise
                except Exception:
                    log.exception("points expiry failed")


__all__ = ["EXPIRY_BATCH", "EXPIRY_CHUNK", "EXPIRY_LOCK", "PointsExpiry", "run_expiry"]
