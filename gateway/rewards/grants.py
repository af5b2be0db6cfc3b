"""Codes granted without spending points (a birthday coupon; later a targeted offer's): the
code's row rides on the ledger operation that grants it (an operation of 0 points whose id is
the grant's own), written in that operation's transaction, so a grant's code is issued exactly
once: never without its operation, never twice for one id (``reward_codes`` is unique by
``issue_op``), and not at all if the operation was refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from gateway.ledger import AttachmentKind, Earn
from gateway.programme import Reward
from gateway.rewards.codes import CODE_SELECT, code_of, new_code
from gateway.store.db import translate_errors
from protocol.loyalty import RewardCode
from protocol.messages import Outcome

#: A granted code's row, in the transaction of its granting operation. Its points are 0 (it
#: cost none; voiding it gives none back); it keeps the reward's terms as read for the grant,
#: and expires ``d`` days after the batch's instant.
GRANTED_CODE = AttachmentKind(
    "granted_codes",
    """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points, status, issue_op,
                          expires_at, created_at, name, kind, value, sku)
SELECT m, c, mb, rw, 0, 'issued', o, {at} + make_interval(days => d), {at}, nm, k, v, sk
  FROM json_to_recordset({rows}::json)
       AS g(m text, c text, mb text, rw text, o text, d int, nm text, k text, v int8, sk text)
ON CONFLICT (merchant_id, issue_op) DO NOTHING
RETURNING 1""",
)


@dataclass(frozen=True, slots=True)
class GrantedCode:
    """The code a granting ``Earn`` (0 points) issues: ``reward``'s terms, valid ``days``."""

    reward: Reward
    days: int
    code: str = field(default_factory=new_code)

    @property
    def kind(self) -> AttachmentKind:
        return GRANTED_CODE

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        r = self.reward
        return {
            "m": op.origin.merchant,
            "c": self.code,
            "mb": op.member,
            "rw": r.id,
            "o": op.op,
            "d": self.days,
            "nm": r.name,
            "k": r.kind,
            "v": r.value,
            "sk": r.sku,
        }


async def granted_code(pool: asyncpg.Pool[Any], merchant: str, op: str) -> RewardCode | None:
    """The code the grant ``op`` issued (its current state), if it did."""
    with translate_errors("code read"):
        row = await pool.fetchrow(
            CODE_SELECT + " WHERE c.merchant_id = $1 AND c.issue_op = $2", merchant, op
        )
    return None if row is None else code_of(row)


__all__ = ["GRANTED_CODE", "GrantedCode", "granted_code"]
