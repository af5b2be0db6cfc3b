"""Releases expired holds in batches.

A hold counts as expired from its expiry instant whether or not this has run (the engine
expires overdue holds lazily under the member's lock before any other operation). The sweeper
only makes that visible for idle members: it finds members with overdue holds and submits an
internal ``Expire`` through the ledger, which re-checks expiry against the database clock under
the row lock, so no hold is ever released early and several nodes sweeping at once is safe.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from gateway.background import stop
from gateway.ledger import queries as q
from gateway.ledger.engine import Ledger
from gateway.ledger.model import Expire, Origin
from gateway.store.db import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self, pool: asyncpg.Pool[Any], ledger: Ledger, interval: float, batch: int = 500
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self.expired_members = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-sweeper")

    async def close(self) -> None:
        await stop(self._task)

    async def sweep_once(self) -> int:
        rows = await self._pool.fetch(q.OVERDUE_MEMBERS, self._batch)
        if not rows:
            return 0
        futures = [
            self._ledger.submit(Expire(member=r["member_id"], origin=Origin(r["merchant_id"])))
            for r in rows
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        done = sum(1 for r in results if not isinstance(r, BaseException))
        self.expired_members += done
        # A failed expiry (a lane shedding load, PostgreSQL away) ends this pass: the next one
        # comes after ``interval``, not at once (a failing pass looping back to back hammered
        # an overloaded PostgreSQL with its query).
        return done if done == len(rows) else 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                while await self.sweep_once() == self._batch:
                    pass
            except TRANSIENT_ERRORS:
                log.warning("hold sweep failed; will retry", exc_info=True)
            except Exception:
                log.exception("hold sweep failed")
