"""What feeds the webhooks: the events, written in the transaction of the change they announce.

A points change is any ledger entry (an earn, a redemption, a hold or its release, a return,
an expiry, a birthday grant, a merge's two sides): ``POINTS_TAP`` is a statement of this package
the ledger runs over every batch's entries in the batch's one write statement, so the event of
every committed change exists, and the event of a rolled-back one does not. The trigger of
migration 0120 writes each event's deliveries in the same statement. The domain packages
write theirs in the transactions of their changes through ``EventRecorder`` (passed in by the
node as their ``events.WebhookEventSink``).

The endpoint lookup is a subplan per entry (``OFFSET 0`` keeps the planner from turning it
into a join): under the lanes' plan settings the join it made walked the whole index of
endpoints for each entry (tests/ledger/test_plans.py checks it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.ledger import EntryTap

#: The event types an endpoint may subscribe to now (docs/webhooks.md); the order types and
#: the segment and reminder types come with the packages that make those changes.
EVENT_TYPES = (
    "points.changed",
    "tier.changed",
    "member.enrolled",
    "member.merged",
    "member.erased",
    "code.used",
    "reward.redeemed",
)

POINTS_TAP = EntryTap(
    "webhook_points",
    """INSERT INTO webhook_events (merchant_id, member_id, type, data, created_at)
SELECT e.merchant, e.member, 'points.changed',
       json_build_object('member', e.member, 'version', e.version, 'kind', e.kind,
                         'op', e.op, 'posted_delta', e.posted_delta,
                         'held_delta', e.held_delta, 'posted', e.posted_after,
                         'held', e.held_after, 'available', e.posted_after - e.held_after,
                         'channel', e.channel, 'store', e.store, 'terminal', e.terminal),
       {at}
  FROM e
 WHERE EXISTS (SELECT 1 FROM webhook_endpoints w
                WHERE w.merchant_id = e.merchant AND w.events @> ARRAY['points.changed']
               OFFSET 0)
 ORDER BY e.member, e.version
RETURNING 1""",
)


_RECORD = """
INSERT INTO webhook_events (merchant_id, member_id, type, data)
SELECT $1, $2, $3, $4::jsonb
 WHERE EXISTS (SELECT 1 FROM webhook_endpoints w
                WHERE w.merchant_id = $1 AND w.events @> ARRAY[$3::text])
"""


class EventRecorder:
    """The domain packages' ``events.WebhookEventSink``: an event written in the caller's
    transaction, when an endpoint of the merchant is subscribed to its type (the trigger
    writes its deliveries)."""

    async def record(
        self, conn: Any, merchant: str, member: str, type: str, data: Mapping[str, Any]
    ) -> None:
        assert type in EVENT_TYPES, type
        await conn.execute(_RECORD, merchant, member, type, orjson.dumps(dict(data)).decode())
