"""Adjustments: ``adjust`` posts the points as a ledger operation of kind ``adjustment`` with
the caller's ``op`` (a retry with the same op and body replays the first outcome; another body
is ``idempotency_conflict``), its reason in the operation's request fingerprint and in the
``point_adjustments`` row written in the same transaction. A debit never takes more than is
available (``insufficient_points``): an adjustment is a decision, not a clawback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.ledger import AttachmentKind, Earn, Ledger, Origin
from gateway.members import Members
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.messages import Balance, Outcome, PointsLine, SaleReceipt

#: The adjustment's row, in its operation's transaction (once per op: the ledger applies an
#: op id once, and the key says so again).
ADJUSTMENT = AttachmentKind(
    "point_adjustments",
    """INSERT INTO point_adjustments (merchant_id, op_id, member_id, points, reason, actor, at)
SELECT m, o, mb, p, r, a, {at}
  FROM json_to_recordset({rows}::json) AS g(m text, o text, mb text, p int8, r text, a text)
ON CONFLICT DO NOTHING
RETURNING 1""",
)


@dataclass(frozen=True, slots=True)
class _Row:
    reason: str
    actor: str

    @property
    def kind(self) -> AttachmentKind:
        return ADJUSTMENT

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        return {
            "m": op.origin.merchant,
            "o": op.op,
            "mb": op.member,
            "p": op.points,
            "r": self.reason,
            "a": self.actor,
        }


@dataclass(frozen=True, slots=True)
class Adjusted:
    """What an adjustment did: the member it applied to (a merged duplicate's survivor), the
    points and the balance after it."""

    op: str
    member: str
    points: int
    reason: str
    balance: Balance


@dataclass(frozen=True, slots=True)
class Adjustment:
    op: str
    points: int
    reason: str
    actor: str
    at: int


class Adjustments:
    def __init__(self, pool: asyncpg.Pool[Any], ledger: Ledger, members: Members) -> None:
        self._pool = pool
        self._ledger = ledger
        self._members = members

    async def adjust(
        self, merchant: str, member: str, op: str, points: int, reason: str, actor: str
    ) -> Adjusted:
        """Credit (``points`` > 0) or debit ``member``; ``actor`` is who asked (the admin
        token's reach). Refused, with nothing posted: a member not of ``merchant`` or erased
        (``member_not_found``), a debit beyond what is available (``insufficient_points``),
        the op used before for something else (``idempotency_conflict``)."""
        if points == 0:
            raise Refused("an adjustment moves points: not 0", ErrorCode.INVALID_FIELD)
        who = (await self._members.profile(merchant, member)).member  # a merged id: survivor
        line = PointsLine(rule="adjustment", points=points)
        outcome = await self._ledger.execute(
            Earn(
                op=op,
                member=who,
                points=points,
                origin=Origin(merchant=merchant, channel="admin"),
                kind="adjustment",
                contra="adjustment",
                breakdown=(line,),
                detail=msgspec.json.encode(("adjustment", reason)),
                attached=(_Row(reason, actor),),
            )
        )
        if not outcome.ok:
            err = outcome.error
            assert err is not None
            raise Refused(err.message, ErrorCode(err.code))
        receipt = outcome.data
        assert isinstance(receipt, SaleReceipt)
        return Adjusted(
            op=op,
            member=receipt.member,
            points=receipt.points,
            reason=reason,
            balance=receipt.balance,
        )

    async def list(
        self, merchant: str, member: str, before: datetime | None, limit: int
    ) -> list[Adjustment]:
        """The member's adjustments, newest first (a merged duplicate: its survivor's)."""
        who = (await self._members.profile(merchant, member)).member
        with translate_errors("adjustments read"):
            rows = await self._pool.fetch(
                """SELECT op_id, points, reason, actor, at FROM point_adjustments
                    WHERE merchant_id = $1 AND member_id = $2
                      AND ($3::timestamptz IS NULL OR at < $3)
                    ORDER BY at DESC, op_id DESC LIMIT $4""",
                merchant,
                who,
                before,
                limit,
            )
        return [
            Adjustment(r["op_id"], r["points"], r["reason"], r["actor"], epoch_ms(r["at"]))
            for r in rows
        ]


class AdjustmentRows:
    """A member's adjustments, as a merge, an erasure and an export treat them
    (``gateway.members.MemberRows``)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """The duplicate's adjustments go with its points to the survivor."""
        status = await conn.execute(
            "UPDATE point_adjustments SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
            survivor,
        )
        return {"adjustments": int(status.rsplit(" ", 1)[-1])}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """A reason may name the shopper ("refund for Ada's broken mug"): erased with them."""
        await conn.execute(
            "UPDATE point_adjustments SET reason = 'erased' WHERE member_id = ANY($1::text[])",
            members,
        )

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            rows = await self._pool.fetch(
                """SELECT op_id, points, reason, actor, at FROM point_adjustments
                    WHERE merchant_id = $1 AND member_id = $2 ORDER BY at""",
                merchant,
                member,
            )
        return {
            "adjustments": [
                {
                    "op": r["op_id"],
                    "points": r["points"],
                    "reason": r["reason"],
                    "actor": r["actor"],
                    "at": epoch_ms(r["at"]),
                }
                for r in rows
            ]
        }


__all__ = ["ADJUSTMENT", "Adjusted", "Adjustment", "AdjustmentRows", "Adjustments"]
