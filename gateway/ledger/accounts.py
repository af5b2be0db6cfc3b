"""What other packages may ask of the ledger's accounts and entries, each question one
statement of the ledger's own, run on the caller's connection (so inside the caller's
transaction when it has one). Nobody outside the ledger spells ``accounts``,
``ledger_entries``, ``holds``, ``operations`` or ``outbox``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.ledger import queries as q
from gateway.store.db import translate_errors

#: Any asyncpg connection or pool (``fetch``, ``fetchval``, ``execute``).
Conn = Any

_OPEN = """
INSERT INTO accounts (member_id, merchant_id)
SELECT id, $1 FROM unnest($2::text[]) AS t(id)
ON CONFLICT (member_id) DO NOTHING
"""

# The member and every member merged into it, directly or through other merges.
_MERGED_INTO_IT = """
WITH RECURSIVE m(id) AS (
    SELECT $1::text
  UNION
    SELECT a.member_id FROM accounts a JOIN m ON a.merged_into = m.id
)
SELECT array_agg(id) FROM m
"""

# ``$1`` and each member it was merged into, up the chain of merges by primary key.
_MERGE_CHAIN = """
WITH RECURSIVE up(id, depth) AS (
    SELECT $1::text, 0
  UNION ALL
    SELECT a.merged_into, up.depth + 1 FROM up JOIN accounts a ON a.member_id = up.id
     WHERE a.merged_into IS NOT NULL AND up.depth < 32
)
SELECT array_agg(id ORDER BY depth) FROM up
"""

_INACTIVE = """
SELECT a.member_id, a.merchant_id, a.version, a.posted - a.held AS available
  FROM unnest($1::text[], $2::int4[]) AS p(merchant_id, days)
  JOIN accounts a ON a.merchant_id = p.merchant_id
 WHERE a.posted - a.held > 0 AND a.closed_at IS NULL
   AND a.updated_at < LEAST(COALESCE($3, now()), now()) - make_interval(days => p.days)
 LIMIT $4
"""

_ENTRIES = """
SELECT version, kind, op_id, posted_delta, held_delta, posted_after, held_after, channel,
       store_id, created_at
  FROM ledger_entries WHERE member_id = $1 AND merchant_id = $2
 ORDER BY version
"""


async def open_accounts(conn: Conn, merchant: str, members: list[str]) -> None:
    """Empty accounts for ``members`` (rows of ``members`` already), if they have none."""
    await conn.execute(_OPEN, merchant, members)


async def survivors(conn: Conn, members: list[str]) -> dict[str, str]:
    """Where each of ``members`` was merged into, followed to the end of the chain (a survivor
    may itself be merged later), by primary key; members never merged are left out."""
    with translate_errors("member resolve"):
        rows = await conn.fetch(q.SURVIVORS, members)
    return {r["start"]: r["survivor"] for r in rows}


async def survivor(conn: Conn, member: str) -> str:
    """The member that holds ``member``'s points now: itself, or the survivor it was merged
    into (following later merges of that survivor too)."""
    found = await survivors(conn, [member])
    return found.get(member, member)


async def merge_chain(conn: Conn, member: str) -> list[str]:
    """``member``, then the member it was merged into, then that one's survivor, ... up the
    chain of merges, by primary key only (one index probe per merge, never a scan)."""
    with translate_errors("member resolve"):
        return list(await conn.fetchval(_MERGE_CHAIN, member))


async def merged_into_it(conn: Conn, member: str) -> list[str]:
    """``member`` and every member merged into it, directly or through other merges."""
    return list(await conn.fetchval(_MERGED_INTO_IT, member))


async def merged_into(conn: Conn, member: str) -> str | None:
    """The member ``member`` was merged into (one hop), if any."""
    found = await conn.fetchval("SELECT merged_into FROM accounts WHERE member_id = $1", member)
    return None if found is None else str(found)


async def lock_accounts(conn: Conn, members: list[str]) -> None:
    """Lock the accounts as a ledger batch locks them (by key, in order), until the caller's
    transaction ends: no batch changes them meanwhile."""
    await conn.execute(
        "SELECT 1 FROM accounts WHERE member_id = ANY($1::text[]) ORDER BY member_id FOR UPDATE",
        sorted(members),
    )


async def close_accounts(conn: Conn, members: list[str]) -> None:
    """Close the accounts (an erasure): the ledger refuses every operation on them but hold
    expiry (``member_not_found``)."""
    await conn.execute(
        """UPDATE accounts SET closed_at = COALESCE(closed_at, now())
            WHERE member_id = ANY($1::text[])""",
        members,
    )


async def account_closing(conn: Conn, member: str) -> bool:
    """Whether the account is closed, waiting for a close in flight (``FOR KEY SHARE``: an
    erase holds the account locked until it commits) rather than answering from before it."""
    return bool(
        await conn.fetchval(
            "SELECT closed_at IS NOT NULL FROM accounts WHERE member_id = $1 FOR KEY SHARE", member
        )
    )


@dataclass(frozen=True, slots=True)
class Inactive:
    """An account with available points and no change since a cutoff, as it was read."""

    member: str
    merchant: str
    version: int
    available: int


async def inactive_accounts(
    conn: Conn, cutoffs: dict[str, int], now: datetime | None, limit: int
) -> list[Inactive]:
    """Open accounts of the merchants in ``cutoffs`` (merchant -> days) with available points
    and no change in that many days before ``now`` (never later than the database's clock,
    which stamps the changes: an instant ahead of it would expire points early)."""
    rows = await conn.fetch(_INACTIVE, list(cutoffs), list(cutoffs.values()), now, limit)
    return [Inactive(r[0], r[1], r[2], r[3]) for r in rows]


async def member_entries(conn: Conn, merchant: str, member: str) -> list[Any]:
    """The member's entries, oldest first (version, kind, op_id, posted_delta, held_delta,
    posted_after, held_after, channel, store_id, created_at)."""
    return list(await conn.fetch(_ENTRIES, member, merchant))


async def available_points(conn: Conn, members: list[str]) -> dict[str, int]:
    """What each of ``members`` may spend now (posted - held; nothing while points are owed).
    A member without an account is left out."""
    rows = await conn.fetch(
        """SELECT member_id, CASE WHEN owed > 0 THEN 0 ELSE posted - held END AS available
             FROM accounts WHERE member_id = ANY($1::text[])""",
        members,
    )
    return {r[0]: r[1] for r in rows}
