"""GDPR basics: a member's data exported (right of access) and erased (right to erasure),
with the ledger's amounts kept so balances and audits still add up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from gateway.errors import StoreUnavailable
from gateway.events import WebhookEventSink
from gateway.ledger import (
    close_accounts,
    lock_accounts,
    member_entries,
    merged_into,
    merged_into_it,
)
from gateway.members import directory
from gateway.members.enrolment import Members
from gateway.members.profiles import Profiles
from gateway.members.rows import MemberRows
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms


class _MoreMerged(Exception):
    """A duplicate was merged into the member while an erase was locking its accounts."""


class Privacy:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        members: Members,
        profiles: Profiles,
        rows: Sequence[MemberRows],
        hooks: WebhookEventSink | None = None,
    ) -> None:
        self._pool = pool
        self._members = members
        self._profiles = profiles
        self._rows = tuple(rows)
        self._hooks = hooks

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        """Everything the programme holds about the member (right of access). A merged
        duplicate's id exports the member it was merged into, as its reads do; the duplicate
        is listed there under ``merged_duplicates``."""
        m = await self._members.member(merchant, member, erased=True)
        member = m.member
        with translate_errors("export"):
            merged = await merged_into_it(self._pool, member)
        duplicates = []
        for dup in sorted(set(merged) - {member}):
            prof = await directory.profile(self._pool, merchant, dup)
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
        out: dict[str, Any] = {
            "member": msgspec.to_builtins(m),
            "profile": msgspec.to_builtins(
                await self._profiles.view(merchant, member, erased=True)
            ),
            "merged_duplicates": duplicates,
        }
        for rows in self._rows:
            out.update(await rows.export(merchant, member))
        with translate_errors("export"):
            entries = await member_entries(self._pool, merchant, member)
        out["ledger"] = [
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
        ]
        return out

    async def erase(self, merchant: str, member: str) -> str | None:
        """Right to erasure: identities and profile data are deleted, for the member and for
        every duplicate merged into it (a merge leaves the duplicate's extra identities and
        name behind), and the personal data other packages' rows hold (``MemberRows.scrub``);
        the opaque member ids, their ledger entries and sales amounts stay, so balances and
        audits still add up. Their accounts are closed: the ledger refuses every operation
        on them (``member_not_found``) but hold expiry, so an erased member can neither earn
        nor spend, nor be merged into and given personal data again.

        A merged duplicate's id erases the member it was merged into, as reads of that id
        answer with that member (the shopper's data moved there with the merge). Returns the
        member erased, or None if ``member`` is not the merchant's."""
        for attempt in range(5):
            try:
                with translate_errors("erase"):
                    target = await directory.resolve(self._pool, member)
                    return target if await self._erase_once(merchant, target) else None
            except (_MoreMerged, asyncpg.DeadlockDetectedError):
                # A merge into the member committed while the erase listed the duplicates, or
                # PostgreSQL broke a lock cycle with a merge's second step: start again.
                await asyncio.sleep(0.01 * (attempt + 1))
        raise StoreUnavailable("erase kept meeting concurrent merges; retry")

    async def _erase_once(self, merchant: str, member: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
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
            listed = sorted(await merged_into_it(conn, member))
            await lock_accounts(conn, listed)
            ids = sorted(await merged_into_it(conn, member))
            if ids != listed:
                raise _MoreMerged
            if await merged_into(conn, member):
                # merged since it was resolved (read under the lock): erase the survivor
                raise _MoreMerged
            await close_accounts(conn, ids)
            await conn.execute(
                "DELETE FROM member_identities WHERE member_id = ANY($1::text[])", ids
            )
            await conn.execute(
                """INSERT INTO member_profiles (member_id, merchant_id, erased_at)
                   SELECT id, $2, now() FROM unnest($1::text[]) AS id
                   ON CONFLICT (member_id) DO UPDATE
                      SET name = '', enrolled_store = '', erased_at = now(),
                          birth_month = NULL, birth_day = NULL, birth_year = NULL,
                          consent_email = NULL, consent_email_at = NULL,
                          consent_email_source = NULL, consent_sms = NULL,
                          consent_sms_at = NULL, consent_sms_source = NULL,
                          preferred_store = NULL, time_zone = NULL""",
                ids,
                merchant,
            )
            await conn.execute(
                "DELETE FROM contact_verifications WHERE member_id = ANY($1::text[])", ids
            )
            for rows in self._rows:
                await rows.scrub(conn, ids)
            if self._hooks is not None:
                await self._hooks.record(
                    conn, merchant, member, "member.erased", {"member": member, "members": ids}
                )
        return True


__all__ = ["Privacy"]
