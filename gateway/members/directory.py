"""Members and their identities and profiles: creation, enrolment, lookup (the programme's
directory). Owns the tables members, member_identities and member_profiles; a member's points
account is the ledger's, opened in the same transaction as the member."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.events import WebhookEventSink
from gateway.ledger import account_closing, merge_chain, open_accounts, survivor
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode


async def create_members(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], merchant: str, members: list[str]
) -> None:
    """Create members with empty accounts (idempotent)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c, c.transaction():
            await _create_members(c, merchant, members)
    else:
        async with conn.transaction():
            await _create_members(conn, merchant, members)


async def _create_members(conn: Any, merchant: str, members: list[str]) -> None:
    created = await conn.fetch(
        """INSERT INTO members (id, merchant_id) SELECT id, $1 FROM unnest($2::text[]) AS t(id)
           ON CONFLICT (id) DO NOTHING RETURNING id""",
        merchant,
        members,
    )
    await open_accounts(conn, merchant, [r["id"] for r in created])


# --------------------------------------------------------------------------- identities


class _Lost(Exception):
    """A concurrent enrolment claimed one of our identities first: roll back and look again."""


def new_member_id() -> str:
    return f"m-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Profile:
    member: str
    merchant: str
    name: str = ""
    tier: str = ""
    phone: str | None = None
    email: str | None = None
    card: str | None = None
    erased: bool = False
    created_at: datetime | None = None


_PRIORITY = {"phone": 0, "email": 1, "card": 2}

_PROFILE = """
SELECT m.id, m.merchant_id, m.created_at, COALESCE(p.name, '') AS name,
       COALESCE(p.tier, '') AS tier, p.erased_at,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'phone') AS phone,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'email') AS email,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'card') AS card
  FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id
 WHERE m.id = $1 AND m.merchant_id = $2
"""


async def profile(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], merchant: str, member: str
) -> Profile | None:
    """The member's profile, or None if the member is not this merchant's."""
    with translate_errors("profile read"):
        r = await conn.fetchrow(_PROFILE, member, merchant)
    if r is None:
        return None
    return Profile(
        member=r["id"],
        merchant=r["merchant_id"],
        name=r["name"],
        tier=r["tier"],
        phone=r["phone"],
        email=r["email"],
        card=r["card"],
        erased=r["erased_at"] is not None,
        created_at=r["created_at"],
    )


async def find_member(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], merchant: str, kind: str, value: str
) -> str | None:
    with translate_errors("identity lookup"):
        member = await conn.fetchval(
            """SELECT member_id FROM member_identities
                WHERE merchant_id = $1 AND kind = $2 AND value = $3""",
            merchant,
            kind,
            value,
        )
    assert member is None or isinstance(member, str)
    return member


_HOLDER = """
SELECT member_id FROM member_identities WHERE merchant_id = $1 AND kind = $2 AND value = $3
"""


async def identifies(conn: Any, merchant: str, kind: str, value: str, member: str) -> bool:
    """Whether the identity is ``member``'s (or a duplicate's merged into it). The same two
    reads whatever the answers (the identity's holder; the chain of merges up from it, by
    primary key, never a scan), so an app cannot tell by the time whether someone else holds
    it (a walk down from ``member`` would need every account merged into it: a scan of the
    accounts), and the answer says only whether it is the app's own."""
    with translate_errors("identity lookup"):
        holder = await conn.fetchval(_HOLDER, merchant, kind, value)
    chain = await merge_chain(conn, holder or "")
    return holder is not None and member in chain


async def resolve(conn: Any, member: str) -> str:
    """The member that holds ``member``'s points now: itself, or the survivor it was merged
    into (following later merges of that survivor too)."""
    return await survivor(conn, member)


async def enrol(
    pool: asyncpg.Pool[Any],
    merchant: str,
    identities: dict[str, str],
    name: str = "",
    channel: str = "",
    store: str = "",
    hooks: WebhookEventSink | None = None,
) -> tuple[str, bool]:
    """Find the member holding any of ``identities`` (kind -> normalised value) or create one.
    Returns ``(member, created)``. Free identities are attached to an existing member. A new
    member's ``member.enrolled`` webhook event is written in its transaction (``hooks``).

    Race-safe: identities are unique per merchant, so of two concurrent enrolments of the same
    phone one inserts it and the other's insert finds it taken (after the first commits), rolls
    back its new member and returns the first one's."""
    kinds = sorted(identities, key=_PRIORITY.__getitem__)
    values = [identities[k] for k in kinds]
    with translate_errors("enrolment"):
        async with pool.acquire() as conn:
            for _ in range(5):
                try:
                    async with conn.transaction():
                        found = await conn.fetch(
                            """SELECT i.kind, i.member_id FROM member_identities i
                                 JOIN unnest($2::text[], $3::text[]) AS k(kind, value)
                                   ON i.kind = k.kind AND i.value = k.value
                                WHERE i.merchant_id = $1""",
                            merchant,
                            kinds,
                            values,
                        )
                        if found:
                            owner = min(found, key=lambda r: _PRIORITY[r["kind"]])["member_id"]
                            # an identity left on a merged duplicate names its survivor
                            owner = await resolve(conn, owner)
                            # Waits for an erase of the owner in flight (it holds the account
                            # FOR UPDATE): erased, its identities are gone and the next pass
                            # enrols afresh, rather than giving the erased member personal
                            # data again.
                            if await account_closing(conn, owner):
                                raise _Lost()
                            await _attach(conn, merchant, owner, kinds, values)
                            return owner, False
                        member = new_member_id()
                        await conn.execute(
                            """WITH m AS (INSERT INTO members (id, merchant_id) VALUES ($1, $2)
                                          RETURNING id, merchant_id)
                               INSERT INTO member_profiles
                                      (member_id, merchant_id, name, enrolled_channel,
                                       enrolled_store)
                               SELECT id, merchant_id, $3, $4, $5 FROM m""",
                            member,
                            merchant,
                            name,
                            channel,
                            store,
                        )
                        await open_accounts(conn, merchant, [member])
                        got = await _attach(conn, merchant, member, kinds, values)
                        if got != len(kinds):
                            raise _Lost()
                        if hooks is not None:
                            await hooks.record(
                                conn,
                                merchant,
                                member,
                                "member.enrolled",
                                {"member": member, "channel": channel, "store": store},
                            )
                        return member, True
                except _Lost:
                    continue
    raise Refused("enrolment contention: retry", ErrorCode.UNAVAILABLE)


async def _attach(
    conn: Any, merchant: str, member: str, kinds: list[str], values: list[str]
) -> int:
    rows = await conn.fetch(
        """INSERT INTO member_identities (merchant_id, kind, value, member_id)
           SELECT $1, k, v, $2 FROM unnest($3::text[], $4::text[]) AS t(k, v)
           ON CONFLICT DO NOTHING RETURNING kind""",
        merchant,
        member,
        kinds,
        values,
    )
    return len(rows)


# --------------------------------------------------------------------------- profiles


async def set_tier(conn: Any, merchant: str, member: str, old: str, new: str) -> bool:
    """Move the member from tier ``old`` to ``new``, only if it is still in ``old`` (a
    concurrent change wins; the caller reads again)."""
    with translate_errors("tier update"):
        changed = await conn.fetchval(
            """INSERT INTO member_profiles (member_id, merchant_id, tier, tier_since)
               VALUES ($1, $2, $4, now())
               ON CONFLICT (member_id) DO UPDATE SET tier = $4, tier_since = now()
                WHERE member_profiles.tier = $3
               RETURNING 1""",
            member,
            merchant,
            old,
            new,
        )
    return bool(changed)


async def tiers_of(conn: Any, merchant: str) -> dict[str, str]:
    """Every member of the merchant and its tier ('' for none)."""
    with translate_errors("tier read"):
        rows = await conn.fetch(
            """SELECT m.id, COALESCE(p.tier, '') AS tier
                 FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id
                WHERE m.merchant_id = $1""",
            merchant,
        )
    return {r["id"]: r["tier"] for r in rows}


class Owners:
    """The merchant each member belongs to, cached (a member never changes merchant). Lookups
    of one member already under way are shared: when a node's clients all reconnect at once,
    each member costs one query, not one per session."""

    def __init__(self, pool: asyncpg.Pool[Any], size: int = 100_000) -> None:
        self._pool = pool
        self._size = size
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[str | None]] = {}

    async def of(self, member: str) -> str | None:
        owner = self._owners.get(member)
        if owner is not None:
            self._owners.move_to_end(member)
            return owner
        pending = self._lookups.get(member)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(member))
            self._lookups[member] = pending
            pending.add_done_callback(functools.partial(self._done, member))
        return await asyncio.shield(pending)

    def _done(self, member: str, done: asyncio.Future[str | None]) -> None:
        if self._lookups.get(member) is done:
            del self._lookups[member]
        if not done.cancelled():
            done.exception()  # retrieved here too, should every waiter have gone

    async def _lookup(self, member: str) -> str | None:
        with translate_errors("member lookup"):
            owner = await self._pool.fetchval(
                "SELECT merchant_id FROM members WHERE id = $1", member
            )
        assert owner is None or isinstance(owner, str)
        if owner is not None:
            self._owners[member] = owner
            if len(self._owners) > self._size:
                self._owners.popitem(last=False)
        return owner
