"""Merging a duplicate member (``source``) into the member that survives.

Two steps, keyed by the merge's operation id, so a re-run (same ``op``) completes whatever a
crash left undone and otherwise changes nothing:

1. the ledger operation ``Merge`` (one transaction, both accounts locked): the source's posted
   points and active holds move to the survivor, the source is marked merged, both changes are
   published; from then on every ledger operation naming the source is refused
   (``member_merged``). A retry replays its recorded outcome.
2. the loyalty rows, in one transaction after that: identities the survivor lacks (by kind:
   one phone, email and card per member) move to it, the others stay on the source and lookups
   follow ``accounts.merged_into`` to the survivor; sales, returns and reward codes move; the
   survivor keeps the higher of both tiers (then its qualifying points, which now include the
   source's sales, may lift it further) and takes the source's name if it has none. The result
   is recorded in ``member_merges`` (the first run's counts are kept).

Then every session watching the source gets a ``merged`` push naming the survivor (sent again
by a re-run; pushes are idempotent for clients).

Why not one transaction: the ledger's group commit owns its connections and batches many
members' operations together; re-pointing loyalty rows inside it would put unrelated work in
every batch's critical path. Between the two steps the source is already refused by the
ledger, and identity lookups already resolve to the survivor, so the gap shows only as
purchase history still listed under the source until step 2 commits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import Refused
from gateway.ledger.apply import epoch_ms
from gateway.ledger.model import Merge, Origin
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.loyalty import MemberMerged
from protocol.messages import Balance

if TYPE_CHECKING:
    from gateway.loyalty.service import Loyalty

_MOVE = """
WITH
ids AS (
  UPDATE member_identities SET member_id = $3
   WHERE merchant_id = $1 AND member_id = $2
     AND kind NOT IN (SELECT kind FROM member_identities WHERE member_id = $3)
  RETURNING 1
),
sal AS (UPDATE sales SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2 RETURNING 1),
ret AS (
  UPDATE sale_returns SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2 RETURNING 1
),
cod AS (
  UPDATE reward_codes SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2 RETURNING 1
)
SELECT (SELECT count(*) FROM ids) AS identities, (SELECT count(*) FROM sal) AS sales,
       (SELECT count(*) FROM ret) AS returns, (SELECT count(*) FROM cod) AS codes
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
    #: loyalty rows re-pointed to the survivor (identities, sales, returns, codes)
    moved: dict[str, int]


async def merge_members(
    svc: Loyalty, origin: Origin, survivor: str, source: str, op: str
) -> MergeResult:
    """Merge ``source`` into ``survivor`` (both of ``origin.merchant``); see the module doc."""
    merchant = origin.merchant
    if survivor == source:
        raise Refused("a member cannot be merged into itself", ErrorCode.INVALID_FIELD)
    outcome = await svc.ledger.execute(Merge(op=op, member=survivor, source=source, origin=origin))
    if not outcome.ok:
        err = outcome.error
        assert err is not None
        raise Refused(err.message, ErrorCode(err.code))
    balance = outcome.data
    assert isinstance(balance, Balance)

    programme = await svc.programmes.get(merchant)
    with translate_errors("member merge"):
        async with svc.pool.acquire() as conn, conn.transaction():
            # Serialise with erasure and other merges of these members (id order: no deadlock).
            await conn.execute(
                "SELECT 1 FROM members WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                [survivor, source],
            )
            counts = await conn.fetchrow(_MOVE, merchant, source, survivor)
            assert counts is not None
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
            moved = {k: int(counts[k]) for k in ("identities", "sales", "returns", "codes")}
            recorded = await conn.fetchval(
                _RECORD, merchant, op, source, survivor, msgspec.json.encode(moved).decode()
            )
    if recorded is not None:
        moved = msgspec.json.decode(recorded, type=dict[str, int])

    # Tier: the survivor keeps the higher of both (an upgrade is pushed), then its window,
    # which now counts the source's sales, may lift it further.
    my_tier = mine["tier"] if mine is not None else ""
    their_tier = theirs["tier"] if theirs is not None else ""
    if programme.tier_rank(their_tier) > programme.tier_rank(my_tier):
        await svc._set_tier(merchant, survivor, my_tier, their_tier, "up")
    await svc.check_upgrade(merchant, survivor)

    await svc.events.publish(
        merchant,
        source,
        MemberMerged(member=source, into=survivor, at=epoch_ms(datetime.now(UTC))),
    )
    return MergeResult(op=op, member=survivor, source=source, balance=balance, moved=moved)


async def merged_into(conn: Any, member: str) -> str | None:
    """The member ``member`` was merged into, if any (one hop)."""
    with translate_errors("merge read"):
        found = await conn.fetchval("SELECT merged_into FROM accounts WHERE member_id = $1", member)
    return None if found is None else str(found)


__all__ = ["MergeResult", "merge_members", "merged_into"]
