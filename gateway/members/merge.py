"""Merging a duplicate member (``source``) into the member that survives.

Two steps, keyed by the merge's operation id, so a re-run (same ``op``) completes whatever a
crash left undone and otherwise changes nothing:

1. the ledger operation ``Merge`` (one transaction, both accounts locked): the source's posted
   points and active holds move to the survivor, the source is marked merged, both changes are
   published; from then on every ledger operation naming the source is refused
   (``member_merged``). A retry replays its recorded outcome.
2. the member rows, in one transaction after that: identities the survivor lacks (by kind:
   one phone, email and card per member) move to it, the others stay on the source and lookups
   follow the ledger's merge to the survivor; every other package's member rows move (sales,
   returns, reward codes: each a ``MemberRows`` passed in); the survivor takes the source's
   name if it has none. The result is recorded in ``member_merges`` (the first run's counts
   are kept). Then the survivor keeps the higher of both tiers (then its qualifying points,
   which now include the source's sales, may lift it further: the ``TierKeeper``).

Then every session watching the source gets a ``merged`` push naming the survivor (sent again
by a re-run; pushes are idempotent for clients).

Why not one transaction: the ledger's group commit owns its connections and batches many
members' operations together; re-pointing loyalty rows inside it would put unrelated work in
every batch's critical path. Between the two steps the source is already refused by the
ledger, and identity lookups already resolve to the survivor, so the gap shows only as
purchase history still listed under the source until step 2 commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.events import MemberEventSink, WebhookEventSink
from gateway.ledger import Ledger, Merge, Origin
from gateway.members.rows import MemberRows, TierKeeper
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.loyalty import MemberMerged
from protocol.messages import Balance

#: Identities the survivor lacks (by kind) move to it; the others stay on the source.
_MOVE_IDENTITIES = """
UPDATE member_identities SET member_id = $3
 WHERE merchant_id = $1 AND member_id = $2
   AND kind NOT IN (SELECT kind FROM member_identities WHERE member_id = $3)
"""

# The survivor keeps its own date of birth and preferred store, or takes the duplicate's when it
# has none; per channel, the consent set last (by either) holds.
_MERGE_PROFILE = """
INSERT INTO member_profiles (member_id, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
_MERGE_PROFILE_FIELDS = """
UPDATE member_profiles s SET
    birth_month = CASE WHEN s.birth_month IS NULL THEN d.birth_month ELSE s.birth_month END,
    birth_day = CASE WHEN s.birth_month IS NULL THEN d.birth_day ELSE s.birth_day END,
    birth_year = CASE WHEN s.birth_month IS NULL THEN d.birth_year ELSE s.birth_year END,
    preferred_store = COALESCE(s.preferred_store, d.preferred_store),
    consent_email = CASE WHEN d.consent_email_at > COALESCE(s.consent_email_at, '-infinity')
                         THEN d.consent_email ELSE s.consent_email END,
    consent_email_source = CASE WHEN d.consent_email_at > COALESCE(s.consent_email_at, '-infinity')
                                THEN d.consent_email_source ELSE s.consent_email_source END,
    consent_email_at = GREATEST(s.consent_email_at, d.consent_email_at),
    consent_sms = CASE WHEN d.consent_sms_at > COALESCE(s.consent_sms_at, '-infinity')
                       THEN d.consent_sms ELSE s.consent_sms END,
    consent_sms_source = CASE WHEN d.consent_sms_at > COALESCE(s.consent_sms_at, '-infinity')
                              THEN d.consent_sms_source ELSE s.consent_sms_source END,
    consent_sms_at = GREATEST(s.consent_sms_at, d.consent_sms_at)
  FROM member_profiles d
 WHERE s.member_id = $1 AND d.member_id = $2
"""

_RECORD = """
INSERT INTO member_merges (merchant_id, op_id, source_id, survivor_id, moved, completed_at)
VALUES ($1, $2, $3, $4, $5::jsonb, now())
ON CONFLICT (merchant_id, op_id) DO UPDATE
   SET moved = COALESCE(member_merges.moved, EXCLUDED.moved),
       completed_at = COALESCE(member_merges.completed_at, EXCLUDED.completed_at)
RETURNING moved
"""


class MergeResult(msgspec.Struct, kw_only=True, frozen=True):
    op: str
    member: str
    source: str
    balance: Balance
    #: member rows re-pointed to the survivor (identities, sales, returns, codes)
    moved: dict[str, int]


class Merger:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        rows: Sequence[MemberRows],
        tiers: TierKeeper,
        events: MemberEventSink,
        hooks: WebhookEventSink | None = None,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._rows = tuple(rows)
        self._tiers = tiers
        self._events = events
        self._hooks = hooks

    async def merge(self, origin: Origin, survivor: str, source: str, op: str) -> MergeResult:
        """Merge ``source`` into ``survivor`` (both of ``origin.merchant``); see the module
        doc."""
        merchant = origin.merchant
        if survivor == source:
            raise Refused("a member cannot be merged into itself", ErrorCode.INVALID_FIELD)
        outcome = await self._ledger.execute(
            Merge(op=op, member=survivor, source=source, origin=origin)
        )
        if not outcome.ok:
            err = outcome.error
            assert err is not None
            raise Refused(err.message, ErrorCode(err.code))
        balance = outcome.data
        assert isinstance(balance, Balance)

        with translate_errors("member merge"):
            async with self._pool.acquire() as conn, conn.transaction():
                # Serialise with erasure and other merges of these members (id order: no
                # deadlock).
                await conn.execute(
                    "SELECT 1 FROM members WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                    [survivor, source],
                )
                moved = {
                    "identities": _count(
                        await conn.execute(_MOVE_IDENTITIES, merchant, source, survivor)
                    )
                }
                for rows in self._rows:
                    moved.update(await rows.move(conn, merchant, source, survivor))
                profiles = {
                    r["member_id"]: r
                    for r in await conn.fetch(
                        """SELECT member_id, name, tier FROM member_profiles
                            WHERE member_id = ANY($1::text[])""",
                        [survivor, source],
                    )
                }
                mine, theirs = profiles.get(survivor), profiles.get(source)
                name = mine["name"] if mine is not None else ""
                if theirs is not None and not name and theirs["name"]:
                    await conn.execute(
                        """INSERT INTO member_profiles (member_id, merchant_id, name)
                           VALUES ($1, $2, $3)
                           ON CONFLICT (member_id) DO UPDATE SET name = $3
                            WHERE member_profiles.name = ''""",
                        survivor,
                        merchant,
                        theirs["name"],
                    )
                await conn.execute(_MERGE_PROFILE, survivor, merchant)
                await conn.execute(_MERGE_PROFILE_FIELDS, survivor, source)
                recorded = await conn.fetchval(
                    _RECORD, merchant, op, source, survivor, msgspec.json.encode(moved).decode()
                )
                if self._hooks is not None:
                    await _announce(conn, self._hooks, merchant, op, survivor, source)
        if recorded is not None:
            moved = msgspec.json.decode(recorded, type=dict[str, int])

        await self._tiers.after_merge(
            merchant,
            survivor,
            mine["tier"] if mine is not None else "",
            theirs["tier"] if theirs is not None else "",
        )
        await self._events.publish(
            merchant,
            source,
            MemberMerged(member=source, into=survivor, at=epoch_ms(datetime.now(UTC))),
        )
        return MergeResult(op=op, member=survivor, source=source, balance=balance, moved=moved)


async def _announce(
    conn: Any, hooks: WebhookEventSink, merchant: str, op: str, survivor: str, source: str
) -> None:
    """The merge's webhook event, in its transaction, once: a retried merge (the same op)
    completed in an earlier transaction (its ``completed_at`` is not this one's ``now()``)
    announces nothing again."""
    first = await conn.fetchval(
        """SELECT completed_at = now() FROM member_merges
            WHERE merchant_id = $1 AND op_id = $2""",
        merchant,
        op,
    )
    if first:
        await hooks.record(
            conn,
            merchant,
            survivor,
            "member.merged",
            {"member": survivor, "source": source, "op": op},
        )


def _count(status: str) -> int:
    """The row count of a command's status (``UPDATE 3``)."""
    return int(status.rsplit(" ", 1)[-1])


__all__ = ["MergeResult", "Merger"]
