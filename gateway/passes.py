"""One pass of a node's periodic jobs outside a node, for cron (``python -m gateway birthdays |
segments``): each builds only what its job needs (a pool, ledger lanes, a publisher), so it
can run beside the nodes; what it does is the same as a node's pass, and as safe to repeat."""

from __future__ import annotations

import contextlib

from gateway.app import ATTACHMENTS, TAPS
from gateway.birthdays import BirthdayPass, Birthdays
from gateway.fanout import MemberEvents, Publisher
from gateway.ledger import Ledger
from gateway.programme import Programmes
from gateway.segments import Recomputed, Segments, SegmentStream
from gateway.settings import Settings
from gateway.store.db import new_pool, open_pool
from gateway.store.keys import Keys
from gateway.store.redis import CacheEpoch, create_client


async def birthdays_once(settings: Settings) -> BirthdayPass:
    """One birthday pass outside a node (``python -m gateway birthdays``, for cron): its own
    pool, ledger lanes and publisher, so the grants' pushes reach every node's watchers (a
    publish that fails is the nodes' outbox relays' to repeat)."""
    s = settings
    pool = new_pool(s.store.database_url, 2, s.store.command_timeout)
    redis = create_client(s.store.redis_url, cluster=s.store.redis_cluster)
    keys = Keys(s.store.redis_prefix, cluster=s.store.redis_cluster)
    publisher = Publisher(redis, keys, epoch=CacheEpoch(per_slot=s.store.redis_cluster))
    ledger = Ledger(s.store.database_url, s.ledger, publisher, attachments=ATTACHMENTS, taps=TAPS)
    events = MemberEvents(redis, keys, lambda: ())
    job = Birthdays(pool, ledger, Programmes(pool), events, interval=0)
    await open_pool(pool)
    try:
        await ledger.start()
        try:
            done = await job.run()
            await ledger.published()
        finally:
            await ledger.close()
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
        await pool.close()
    return done


async def segments_once(
    settings: Settings, merchant: str | None = None
) -> list[tuple[str, Recomputed]]:
    """A full pass of every merchant's segments (or ``merchant``'s) outside a node (``python
    -m gateway segments``, nightly from cron): its own pool; changes go to the stream."""
    s = settings
    pool = new_pool(s.store.database_url, 3, s.store.command_timeout)
    redis = create_client(s.store.redis_url, cluster=s.store.redis_cluster)
    keys = Keys(s.store.redis_prefix, cluster=s.store.redis_cluster)
    segments = Segments(pool, (SegmentStream(redis, keys),))
    await open_pool(pool)
    try:
        out = []
        for m in await segments.merchants() if merchant is None else [merchant]:
            out.append((m, await segments.recompute(m)))
        return out
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
        await pool.close()


__all__ = ["birthdays_once", "segments_once"]
