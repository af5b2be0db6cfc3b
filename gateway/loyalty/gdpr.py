"""GDPR basics: a member's data exported (right of access) and erased (right to erasure),
with the ledger's amounts kept so balances and audits still add up."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from gateway.errors import StoreUnavailable
from gateway.ledger.apply import epoch_ms
from gateway.loyalty import directory
from gateway.store.db import translate_errors

if TYPE_CHECKING:
    from gateway.loyalty.service import Loyalty


class _MoreMerged(Exception):
    """A duplicate was merged into the member while an erase was locking its accounts."""


#: The member and every member merged into it, directly or through other merges.
_MERGED_INTO = """
WITH RECURSIVE m(id) AS (
    SELECT $1::text
  UNION
    SELECT a.member_id FROM accounts a JOIN m ON a.merged_into = m.id
)
SELECT array_agg(id) FROM m
"""


async def export_member(svc: Loyalty, merchant: str, member: str) -> dict[str, Any]:
    """Everything the programme holds about the member (right of access). A merged
    duplicate's id exports the member it was merged into, as its reads do; the duplicate
    is listed there under ``merged_duplicates``."""
    m = await svc.member(merchant, member, erased=True)
    member = m.member
    purchases = []
    before = None
    while True:
        page = await svc.history(merchant, member, before, 100)
        purchases.extend(page.purchases)
        if page.next is None:
            break
        before = page.next
    with translate_errors("export"):
        entries = await svc.pool.fetch(
            """SELECT version, kind, op_id, posted_delta, held_delta, posted_after,
                      held_after, channel, store_id, created_at
                 FROM ledger_entries WHERE member_id = $1 AND merchant_id = $2
                ORDER BY version""",
            member,
            merchant,
        )
        codes = await svc.pool.fetch(
            svc._CODE_SELECT + " WHERE c.merchant_id = $1 AND c.member_id = $2",
            merchant,
            member,
        )
        merged = await svc.pool.fetchval(_MERGED_INTO, member)
    duplicates = []
    for dup in sorted(set(merged) - {member}):
        prof = await directory.profile(svc.pool, merchant, dup)
        if prof is not None:
            duplicates.append(
                {
                    "member": dup,
                    "name": prof.name,
                    "phone": prof.phone,
                    "email": prof.email,
                    "card": prof.card,
                }
            )
    return {
        "member": msgspec.to_builtins(m),
        "merged_duplicates": duplicates,
        "purchases": msgspec.to_builtins(purchases),
        "codes": [msgspec.to_builtins(svc._code(r)) for r in codes],
        "ledger": [
            {
                "version": e["version"],
                "kind": e["kind"],
                "op": e["op_id"],
                "posted_delta": e["posted_delta"],
                "held_delta": e["held_delta"],
                "posted_after": e["posted_after"],
                "held_after": e["held_after"],
                "channel": e["channel"],
                "store": e["store_id"],
                "at": epoch_ms(e["created_at"]),
            }
            for e in entries
        ],
    }


async def erase_member(svc: Loyalty, merchant: str, member: str) -> str | None:
    """Right to erasure: identities and profile data are deleted, for the member and for
    every duplicate merged into it (a merge leaves the duplicate's extra identities and
    name behind); the opaque member ids, their ledger entries and sales amounts stay, so
    balances and audits still add up. Their accounts are closed: the ledger refuses every
    operation on them (``member_not_found``) but hold expiry, so an erased member can
    neither earn nor spend, nor be merged into and given personal data again.

    A merged duplicate's id erases the member it was merged into, as reads of that id
    answer with that member (the shopper's data moved there with the merge). Returns the
    member erased, or None if ``member`` is not the merchant's."""
    for attempt in range(5):
        try:
            with translate_errors("erase"):
                target = await directory.resolve(svc.pool, member)
                return target if await _erase_once(svc.pool, merchant, target) else None
        except (_MoreMerged, asyncpg.DeadlockDetectedError):
            # A merge into the member committed while the erase listed the duplicates, or
            # PostgreSQL broke a lock cycle with a merge's second step: start again.
            await asyncio.sleep(0.01 * (attempt + 1))
    raise StoreUnavailable("erase kept meeting concurrent merges; retry")


async def _erase_once(pool: asyncpg.Pool[Any], merchant: str, member: str) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        # NO KEY UPDATE: it still serialises with a merge (FOR UPDATE) but not with a
        # ledger batch's foreign-key checks on this row (KEY SHARE).
        owner = await conn.fetchval(
            "SELECT merchant_id FROM members WHERE id = $1 FOR NO KEY UPDATE", member
        )
        if owner != merchant:
            return False
        # The accounts of the member and of its merged duplicates, locked as a ledger
        # batch locks them (by key, in order), then listed again: a merge into the member
        # in flight has committed by then (its duplicate was not locked: start over), and
        # one after this erase finds the account closed and is refused.
        listed = sorted(await conn.fetchval(_MERGED_INTO, member))
        await conn.execute(
            """SELECT 1 FROM accounts WHERE member_id = ANY($1::text[])
                ORDER BY member_id FOR UPDATE""",
            listed,
        )
        ids = sorted(await conn.fetchval(_MERGED_INTO, member))
        if ids != listed:
            raise _MoreMerged
        if await conn.fetchval(
            "SELECT merged_into FROM accounts WHERE member_id = $1", member
        ):  # merged since it was resolved (read under the lock): erase the survivor
            raise _MoreMerged
        await conn.execute(
            """UPDATE accounts SET closed_at = COALESCE(closed_at, now())
                WHERE member_id = ANY($1::text[])""",
            ids,
        )
        await conn.execute("DELETE FROM member_identities WHERE member_id = ANY($1::text[])", ids)
        await conn.execute(
            """INSERT INTO member_profiles (member_id, merchant_id, erased_at)
               SELECT id, $2, now() FROM unnest($1::text[]) AS id
               ON CONFLICT (member_id) DO UPDATE
                  SET name = '', enrolled_store = '', erased_at = now()""",
            ids,
            merchant,
        )
        await conn.execute(
            """UPDATE sales SET lines = (
                   SELECT COALESCE(jsonb_agg(l - 'name'), '[]'::jsonb)
                     FROM jsonb_array_elements(lines) AS l)
                WHERE member_id = ANY($1::text[])""",
            ids,
        )
    return True


__all__ = ["erase_member", "export_member"]
