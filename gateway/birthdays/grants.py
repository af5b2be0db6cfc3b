"""The grants made (table birthday_grants): one row per member and year, written in the
transaction of the ledger operation that grants it (``BIRTHDAY_GRANT``), so a grant row exists
exactly when its points were posted or its code issued. What the job asks of them, and what a
merge, an erasure and an export do with them (``BirthdayRows``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.ledger import AttachmentKind, Earn
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.messages import Outcome

#: A grant's row, in its operation's transaction. A second row for the same member and year
#: is not written (DO NOTHING): the operation's id, unique per merchant, is derived from the
#: member and the year, so that operation cannot have been applied in the first place.
BIRTHDAY_GRANT = AttachmentKind(
    "birthday_grants",
    """INSERT INTO birthday_grants (merchant_id, member_id, year, op_id, grant_kind, points,
                             reward_id, code, granted_at, announced)
SELECT m, mb, y, o, k, p, rw, c, {at}, a
  FROM json_to_recordset({rows}::json)
       AS g(m text, mb text, y int, o text, k text, p int8, rw text, c text, a bool)
ON CONFLICT DO NOTHING
RETURNING 1""",
)


@dataclass(frozen=True, slots=True)
class BirthdayGrant:
    """The row of a granting ``Earn`` for ``year``; ``code`` is the coupon it issues."""

    year: int
    grant: str
    reward: str | None = None
    code: str | None = None

    @property
    def kind(self) -> AttachmentKind:
        return BIRTHDAY_GRANT

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        return {
            "m": op.origin.merchant,
            "mb": op.member,
            "y": self.year,
            "o": op.op,
            "k": self.grant,
            "p": getattr(outcome.data, "points", op.points),
            "rw": self.reward,
            "c": self.code,
            # a points grant is announced by the ledger (balance_changed, its outbox); a
            # coupon by the job, once its code is read back (code_changed)
            "a": self.grant == "points",
        }


async def granted(
    pool: asyncpg.Pool[Any], merchant: str, members: Sequence[str], years: Sequence[int]
) -> set[tuple[str, int]]:
    """Which of ``members`` have a grant for one of ``years``: (member, year)."""
    if not members:
        return set()
    with translate_errors("birthday grants read"):
        rows = await pool.fetch(
            """SELECT member_id, year FROM birthday_grants
                WHERE merchant_id = $1 AND member_id = ANY($2::text[]) AND year = ANY($3::int[])""",
            merchant,
            list(members),
            list(years),
        )
    return {(r["member_id"], r["year"]) for r in rows}


@dataclass(frozen=True, slots=True)
class Unannounced:
    merchant: str
    member: str
    year: int
    op: str


async def unannounced(pool: asyncpg.Pool[Any], older_than: float, limit: int) -> list[Unannounced]:
    """Coupons granted at least ``older_than`` seconds ago whose code was never announced (the
    granting node stopped between the commit and the push)."""
    with translate_errors("birthday grants read"):
        rows = await pool.fetch(
            """SELECT merchant_id, member_id, year, op_id FROM birthday_grants
                WHERE NOT announced AND granted_at < now() - make_interval(secs => $1)
                ORDER BY granted_at LIMIT $2""",
            older_than,
            limit,
        )
    return [Unannounced(r["merchant_id"], r["member_id"], r["year"], r["op_id"]) for r in rows]


async def mark_announced(pool: asyncpg.Pool[Any], merchant: str, ops: Sequence[str]) -> None:
    if not ops:
        return
    with translate_errors("birthday grants write"):
        await pool.execute(
            """UPDATE birthday_grants SET announced = true
                WHERE merchant_id = $1 AND op_id = ANY($2::text[]) AND NOT announced""",
            merchant,
            list(ops),
        )


class BirthdayRows:
    """A member's grants, as a merge, an erasure and an export treat them
    (``gateway.members.MemberRows``)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """The duplicate's grants go to the survivor, for the years the survivor has none of
        its own: a shopper enrolled twice is one shopper, granted once a year. A year both
        were granted stays on the duplicate (it was given; the key allows one per member)."""
        status = await conn.execute(
            """UPDATE birthday_grants g SET member_id = $3
                WHERE g.merchant_id = $1 AND g.member_id = $2
                  AND NOT EXISTS (SELECT 1 FROM birthday_grants s
                                   WHERE s.merchant_id = $1 AND s.member_id = $3
                                     AND s.year = g.year)""",
            merchant,
            source,
            survivor,
        )
        return {"birthday_grants": int(status.rsplit(" ", 1)[-1])}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """A grant holds no personal data (no date of birth): nothing to delete."""
        return None

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            rows = await self._pool.fetch(
                """SELECT year, grant_kind, points, reward_id, code, granted_at
                     FROM birthday_grants WHERE merchant_id = $1 AND member_id = $2
                    ORDER BY year""",
                merchant,
                member,
            )
        return {
            "birthday_grants": [
                {
                    "year": r["year"],
                    "grant": r["grant_kind"],
                    "points": r["points"],
                    "reward": r["reward_id"],
                    "code": r["code"],
                    "at": epoch_ms(r["granted_at"]),
                }
                for r in rows
            ]
        }


__all__ = [
    "BIRTHDAY_GRANT",
    "BirthdayGrant",
    "BirthdayRows",
    "Unannounced",
    "granted",
    "mark_announced",
    "unannounced",
]
