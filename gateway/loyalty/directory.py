"""Merchants and members: creation and lookup (the programme's directory)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.ledger.queries import SURVIVORS
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode


async def create_merchant(
    conn: Any,
    merchant: str,
    name: str = "",
    points_per_unit: Decimal | int = 1,
    currency: str = "USD",
) -> None:
    await conn.execute(
        """INSERT INTO merchants (id, name, points_per_unit, currency) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO NOTHING""",
        merchant,
        name or merchant,
        Decimal(points_per_unit),
        currency,
    )


async def create_members(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], merchant: str, members: list[str]
) -> None:
    """Create members with empty accounts (idempotent)."""
    await conn.execute(
        """WITH m AS (
             INSERT INTO members (id, merchant_id)
             SELECT id, $1 FROM unnest($2::text[]) AS t(id)
             ON CONFLICT (id) DO NOTHING RETURNING id, merchant_id)
           INSERT INTO accounts (member_id, merchant_id) SELECT id, merchant_id FROM m""",
        merchant,
        members,
    )


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


# Whether an identity is ``$4``'s own or one of its merged duplicates' (through any chain of
# merges): from the identity's holder up the chain of merges, by primary key only, so an
# identity of someone else costs one more index probe than an unknown one, never a scan (a
# walk down from ``$4`` would need every account merged into it: a scan of ``accounts``).
_IDENTIFIES = """
WITH RECURSIVE up(id, depth) AS (
    SELECT member_id, 0 FROM member_identities
     WHERE merchant_id = $1 AND kind = $2 AND value = $3
  UNION ALL
    SELECT a.merged_into, up.depth + 1 FROM up JOIN accounts a ON a.member_id = up.id
     WHERE a.merged_into IS NOT NULL AND up.depth < 32
)
SELECT EXISTS (SELECT 1 FROM up WHERE id = $4)
"""


async def identifies(conn: Any, merchant: str, kind: str, value: str, member: str) -> bool:
    """Whether the identity is ``member``'s (or a duplicate's merged into it)."""
    with translate_errors("identity lookup"):
        return bool(await conn.fetchval(_IDENTIFIES, merchant, kind, value, member))


async def resolve(conn: Any, member: str) -> str:
    """The member that holds ``member``'s points now: itself, or the survivor it was merged
    into (following later merges of that survivor too)."""
    with translate_errors("member resolve"):
        found = await conn.fetchrow(SURVIVORS, [member])
    return member if found is None else str(found["survivor"])


async def enrol(
    pool: asyncpg.Pool[Any],
    merchant: str,
    identities: dict[str, str],
    name: str = "",
    channel: str = "",
    store: str = "",
) -> tuple[str, bool]:
    """Find the member holding any of ``identities`` (kind -> normalised value) or create one.
    Returns ``(member, created)``. Free identities are attached to an existing member.

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
                            closed = await conn.fetchval(
                                """SELECT closed_at IS NOT NULL FROM accounts
                                    WHERE member_id = $1 FOR KEY SHARE""",
                                owner,
                            )
                            if closed:
                                raise _Lost()
                            await _attach(conn, merchant, owner, kinds, values)
                            return owner, False
                        member = new_member_id()
                        await conn.execute(
                            """WITH m AS (INSERT INTO members (id, merchant_id) VALUES ($1, $2)
                                          RETURNING id, merchant_id),
                                    a AS (INSERT INTO accounts (member_id, merchant_id)
                                          SELECT id, merchant_id FROM m)
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
                        got = await _attach(conn, merchant, member, kinds, values)
                        if got != len(kinds):
                            raise _Lost()
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
