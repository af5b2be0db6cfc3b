"""The scheduler: every node, every few seconds, turns the predictions coming due into
reminders (table reorder_reminders), each exactly once. A reminder is created when its due
date (the predicted date less the loop's lead days) is at most ``LOOKAHEAD`` away, for a
prediction no older than ``STALE`` (a member who lapsed long ago is not chased); the unique
key (merchant, loop, member, sku, cycle), the cycle being the member's purchase count of the
product, makes every node's concurrent INSERT ... ON CONFLICT DO NOTHING create it once, and a
restarted node finds it there.

A member is in the loop's control group when ``control_point(merchant, loop, member)`` <
the loop's share: the first 60 bits of an MD5 of the three, as a fraction of 2^60 (stable
across restarts, nodes and releases, independent between loops). Its reminder is created
and tracked the same, marked ``control``: the outbox sends it nothing.

A reminder is cancelled (no message made yet) or ended (``done``) when the member buys the
product again in any channel: the predictor's recomputation of that member ends it in the
same transaction; each pass also ends those a race left behind, and those of loops deleted
or switched off."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.reorder.loops import Loop, all_loops
from gateway.store.db import translate_errors

#: How far ahead of its due date a reminder is created.
LOOKAHEAD = timedelta(days=1)
#: Predictions older than this are not turned into reminders.
STALE = timedelta(days=7)

_SCALE = float(1 << 60)


def control_point(merchant: str, loop: str, member: str) -> float:
    """Where the member falls in [0, 1) for the loop (in the control group below its share):
    the SQL of ``_CREATE`` computes the same."""
    digest = hashlib.md5(f"{merchant}/{loop}/{member}".encode(), usedforsecurity=False)
    return int(digest.hexdigest()[:15], 16) / _SCALE


_CREATE = """
INSERT INTO reorder_reminders (merchant_id, loop_id, member_id, sku, cycle, last_purchase_at,
                               predicted_at, due_at, control, next_at)
SELECT p.merchant_id, $2, p.member_id, p.sku, p.purchases, p.last_purchase_at, p.predicted_at,
       d.due, c.point < $5, d.due
  FROM reorder_predictions p
 CROSS JOIN LATERAL (SELECT p.predicted_at - make_interval(days => $4) AS due) d
 CROSS JOIN LATERAL (SELECT ('x' || substr(md5(p.merchant_id || '/' || $2 || '/' || p.member_id),
                                           1, 15))::bit(60)::bigint::float8
                            / 1152921504606846976.0 AS point) c
 WHERE p.merchant_id = $1 AND p.sku = ANY($3::text[])
   AND p.predicted_at <= $6::timestamptz + make_interval(days => $4) + $7::interval
   AND p.predicted_at >= $6::timestamptz - $8::interval
ON CONFLICT DO NOTHING
"""

#: The reminders a purchase overtook: the product bought again since (a later cycle). One
#: still scheduled ends (cancelled before any message, else done); one done records the
#: reorder (the latest purchase, when several came since).
ENDED_BY_PURCHASE = """
UPDATE reorder_reminders r
   SET state = CASE WHEN r.state <> 'scheduled' THEN r.state
                    WHEN r.step = 0 THEN 'cancelled' ELSE 'done' END,
       next_at = NULL, reordered_at = p.last_purchase_at, ended_at = COALESCE(r.ended_at, now())
  FROM reorder_predictions p
 WHERE r.reordered_at IS NULL AND r.state IN ('scheduled', 'done')
   AND ($1::text IS NULL OR r.merchant_id = $1)
   AND ($2::text[] IS NULL OR r.member_id = ANY($2::text[]))
   AND p.merchant_id = r.merchant_id AND p.member_id = r.member_id AND p.sku = r.sku
   AND p.purchases > r.cycle
RETURNING r.id
"""

#: The messages still to send of reminders a purchase ended: the member reordered first.
OVERTAKEN = """
UPDATE reorder_messages SET state = 'skipped', last_error = 'the member reordered first'
 WHERE reminder_id = ANY($1::bigint[]) AND state = 'pending'
"""

_ORPHANS = """
UPDATE reorder_reminders r
   SET state = CASE WHEN r.step = 0 THEN 'cancelled' ELSE 'done' END, next_at = NULL,
       ended_at = now()
 WHERE r.state = 'scheduled' AND ($1::text IS NULL OR r.merchant_id = $1)
   AND NOT EXISTS (SELECT 1 FROM reorder_loops l
                    WHERE l.merchant_id = r.merchant_id AND l.loop_id = r.loop_id
                      AND (l.spec ->> 'active')::boolean IS DISTINCT FROM false)
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True, slots=True)
class SchedulePass:
    """Reminders this pass created (another node's are not counted) and ended."""

    created: int = 0
    ended: int = 0


class Scheduler:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def create(self, loop: Loop, now: datetime) -> int:
        s = loop.spec
        with translate_errors("reorder reminders write"):
            status = await self._pool.execute(
                _CREATE,
                loop.merchant,
                loop.loop,
                s.products,
                s.lead_days,
                s.control_share,
                now,
                LOOKAHEAD,
                STALE,
            )
        return _count(status)

    async def run(self, now: datetime | None = None, merchant: str | None = None) -> SchedulePass:
        """One pass as of ``now`` (default: this node's clock), over every merchant's loops or
        ``merchant``'s."""
        now = datetime.now(UTC) if now is None else now
        with translate_errors("reorder reminders write"):
            overtaken = [r["id"] for r in await self._pool.fetch(ENDED_BY_PURCHASE, merchant, None)]
            await self._pool.execute(OVERTAKEN, overtaken)
            ended = len(overtaken) + _count(await self._pool.execute(_ORPHANS, merchant))
        created = 0
        for loop in await all_loops(self._pool, merchant):
            if loop.spec.active:
                created += await self.create(loop, now)
        return SchedulePass(created, ended)


__all__ = [
    "ENDED_BY_PURCHASE",
    "LOOKAHEAD",
    "OVERTAKEN",
    "STALE",
    "SchedulePass",
    "Scheduler",
    "control_point",
]
