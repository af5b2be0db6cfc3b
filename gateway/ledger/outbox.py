"""The outbox relay: what committed but was not published (a node died between COMMIT and
PUBLISH, or Redis was down) is republished by whichever node gets to it first.

Rows are written in the batch's own transaction. After a successful publish the lane reports
the keys here (``mark_published``) and they are deleted in bulk; rows older than ``min_age`` are claimed with
``FOR UPDATE SKIP LOCKED`` (so several nodes never fight over one) and republished. Subscribers
drop versions they have already seen, so a republished change is harmless. The relay holds
entries, not the account's latest state, so in the cache it only raises floors (see
``gateway/store/keys.py``): a republished old entry never hides a newer balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from gateway.background import stop
from gateway.ledger.balances import entry_change
from gateway.ledger.model import Entry, EventSink
from gateway.store.db import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

_DELETE = """
DELETE FROM outbox o USING unnest($1::text[], $2::int8[]) AS k(member_id, version)
 WHERE o.member_id = k.member_id AND o.version = k.version
"""

#: Rows older than ``min_age``: committed and still not published, the backlog. (Counting
#: every row also counted the second of changes published but not yet deleted: some 4,000 at
#: 4,000 changes/s, past the backlog alert's 1,000 under a normal load.)
_BACKLOG = """
SELECT count(*) FROM outbox WHERE created_at < clock_timestamp() - $1::interval
"""

_CLAIM = """
SELECT e.merchant_id, e.member_id, e.version, e.kind, e.op_id, e.contra, e.posted_delta,
       e.held_delta, e.posted_after, e.held_after, e.channel, e.store_id, e.terminal_id,
       e.created_at
  FROM (SELECT member_id, version FROM outbox
         WHERE created_at < clock_timestamp() - $1::interval
         ORDER BY created_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED) o
  JOIN ledger_entries e ON e.member_id = o.member_id AND e.version = o.version
 ORDER BY e.member_id, e.version
"""


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        sink: EventSink,
        interval: float,
        min_age: float,
        batch: int = 1000,
    ) -> None:
        self._pool = pool
        self._sink = sink
        self._interval = interval
        self._min_age = timedelta(seconds=min_age)
        self._batch = batch
        self._published: list[tuple[str, int]] = []
        self._task: asyncio.Task[None] | None = None
        self.republished = 0
        self.pending = 0

    def mark_published(self, keys: Sequence[tuple[str, int]]) -> None:
        self._published.extend(keys)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def close(self) -> None:
        await stop(self._task)
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        """Delete the rows of changes already published."""
        while self._published:
            keys, self._published = self._published[:10_000], self._published[10_000:]
            try:
                await self._pool.execute(_DELETE, [k[0] for k in keys], [k[1] for k in keys])
            except BaseException:
                self._published[:0] = keys
                raise

    async def relay_once(self) -> int:
        """Republish rows older than ``min_age``; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._min_age, self._batch)
            if not rows:
                return 0
            entries = [Entry(*r.values()) for r in rows]
            await self._sink.publish([entry_change(e) for e in entries], epoch="")  # floors only
            await conn.execute(_DELETE, [e.member for e in entries], [e.version for e in entries])
        self.republished += len(rows)
        return len(rows)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # Counted first: during a Redis outage the rest fails, and that is exactly
                # when the backlog grows (gateway_outbox_pending).
                await self.flush()  # published rows first: they are no backlog
                self.pending = await self._pool.fetchval(_BACKLOG, self._min_age)
                await self._sink.publish((), epoch="")  # raises floors left by failed publishes
                while await self.relay_once() == self._batch:
                    pass
            except TRANSIENT_ERRORS:
                log.warning("outbox relay pass failed; will retry", exc_info=True)
            except Exception:
                log.exception("outbox relay pass failed")
