"""Points expiry: the available points of members inactive for their programme's
``expiry_days`` are expired, each by a ledger operation (see ``Loyalty.run_expiry``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.ledger.model import Earn, Origin
from gateway.store.db import translate_errors
from protocol.messages import Outcome, PointsLine

if TYPE_CHECKING:
    from gateway.loyalty.service import Loyalty

#: Advisory lock key of the points-expiry job (one runner at a time across nodes).
EXPIRY_LOCK = 0x6C6F79616C7478  # "loyaltx"
#: Members one expiry pass reads (with ``drain``, a full pass is followed by another).
EXPIRY_BATCH = 5000
#: Expiries queued in the ledger at a time: a pass waits for each chunk, so the lanes serve the
#: tills in between (5,000 at once queued every till behind them for about a second).
EXPIRY_CHUNK = 200


def _expiry(r: Any) -> Earn:
    """The expiry of an inactive account as read (member, merchant, version, available)."""
    return Earn(
        # '~' and '/' are outside the client id charset: no client can take this id first
        op=f"~expiry/{r['member_id']}/{r['version']}",
        member=r["member_id"],
        points=-r["av"],
        origin=Origin(merchant=r["merchant_id"], channel="system"),
        kind="points_expiry",
        contra="expiry",
        clamp=True,
        breakdown=(PointsLine(rule="expiry", points=-r["av"]),),
        # a sale, reserve, commit or release since the read is activity: checked under the
        # row lock, the expiry then posts nothing
        if_version=r["version"],
    )


async def run_expiry(
    svc: Loyalty, now: datetime | None = None, merchant: str | None = None, drain: bool = False
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
        done, full = await _expiry_pass(svc, now, merchant)
        expired += done
        if not (drain and full and done):  # a pass that expired nothing ends it too
            return expired


async def _expiry_pass(
    svc: Loyalty, now: datetime | None, merchant: str | None
) -> tuple[int, bool]:
    """One pass: (members expired, whether it read a full batch)."""
    outcomes: list[Outcome | BaseException] = []
    rows: list[Any] = []
    with translate_errors("points expiry"):
        async with svc.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", EXPIRY_LOCK):
                return 0, False
            try:
                rows = await conn.fetch(
                    """SELECT a.member_id, a.merchant_id, a.version, a.posted - a.held AS av
                         FROM accounts a
                         JOIN programmes p ON p.merchant_id = a.merchant_id
                        WHERE p.expiry_days IS NOT NULL AND a.posted - a.held > 0
                          AND a.closed_at IS NULL
                          AND ($3::text IS NULL OR a.merchant_id = $3)
                          AND a.updated_at < LEAST(COALESCE($1, now()), now())
                                             - make_interval(days => p.expiry_days)
                        LIMIT $2""",
                    now,
                    EXPIRY_BATCH,
                    merchant,
                )
                for i in range(0, len(rows), EXPIRY_CHUNK):
                    chunk = rows[i : i + EXPIRY_CHUNK]
                    outcomes += await asyncio.gather(
                        *(svc.ledger.submit(_expiry(r)) for r in chunk),
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


__all__ = ["EXPIRY_BATCH", "EXPIRY_CHUNK", "EXPIRY_LOCK", "run_expiry"]
