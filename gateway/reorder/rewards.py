"""The reward on reorder: a purchase of the product (any channel) within the attribution
window after a reminder's first message was sent earns the incentive that message promised,
through the ledger, exactly once. The operation's id is derived from the reminder
("~reorder/<reminder>": '~' and '/' are outside the client id charset, so no client can take
it first), so a second grant of the same reminder (another node's pass, a pass rerun after a
crash) replays the first; the grant's row (``reorder_rewards``) rides on that operation
(``REORDER_REWARD``), so points, code and row exist together or not at all. The purchase is
seen by the predictor (``reordered_at``); two purchases of the product, a retried sale, or
the same reorder from two channels, end the reminder once, and the reminder is rewarded once.

Points are an ``earn`` entry with the breakdown line ``reorder:<loop>`` (pushed live as any
change: ``balance_changed``, cause ``earn``, op ``~reorder/<reminder>``); a reward is a code
that costs no points (``code_changed`` pushed once its row is read back, best effort)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

from gateway.events import MemberEventSink
from gateway.ledger import AttachmentKind, Earn, Ledger, Origin
from gateway.programme import Programmes, find_reward
from gateway.reorder.loops import Incentive
from gateway.rewards import GrantedCode, granted_code
from gateway.store.db import translate_errors
from protocol.messages import Outcome, PointsLine
from protocol.wallet import CodeChanged

log = logging.getLogger(__name__)

#: Reminders looked at per pass.
BATCH = 500

#: A grant's row, in its operation's transaction; one per reminder (DO NOTHING: the op id is
#: the reminder's, so that operation cannot have been applied twice in the first place).
REORDER_REWARD = AttachmentKind(
    "reorder_rewards",
    """INSERT INTO reorder_rewards (merchant_id, reminder_id, member_id, loop_id, op_id,
                             grant_kind, points, reward_id, code, granted_at)
SELECT m, r, mb, l, o, k, p, rw, c, {at}
  FROM json_to_recordset({rows}::json)
       AS g(m text, r int8, mb text, l text, o text, k text, p int8, rw text, c text)
ON CONFLICT DO NOTHING
RETURNING 1""",
)


def reward_op(reminder: int) -> str:
    return f"~reorder/{reminder}"


@dataclass(frozen=True, slots=True)
class ReorderReward:
    """The row of a reward's ``Earn``."""

    reminder: int
    loop: str
    grant: str
    reward: str | None = None
    code: str | None = None

    @property
    def kind(self) -> AttachmentKind:
        return REORDER_REWARD

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        return {
            "m": op.origin.merchant,
            "r": self.reminder,
            "mb": op.member,
            "l": self.loop,
            "o": op.op,
            "k": self.grant,
            "p": getattr(outcome.data, "points", op.points),
            "rw": self.reward,
            "c": self.code,
        }


# Reorders seen and not yet decided: the first sent message's time and promise with them.
_DUE = """
SELECT r.id, r.merchant_id, r.loop_id, r.member_id, r.sku, r.reordered_at, s.sent_at,
       s.incentive::text AS incentive
  FROM reorder_reminders r
  LEFT JOIN LATERAL (SELECT m.sent_at, m.incentive FROM reorder_messages m
                      WHERE m.reminder_id = r.id AND m.state = 'sent'
                      ORDER BY m.sent_at LIMIT 1) s ON true
 WHERE r.reward_state IS NULL AND r.reordered_at IS NOT NULL
   AND ($1::text IS NULL OR r.merchant_id = $1)
 ORDER BY r.id LIMIT $2
"""

_DECIDED = "UPDATE reorder_reminders SET reward_state = $2 WHERE id = ANY($1::bigint[])"

_incentive = msgspec.json.Decoder(Incentive | None)


@dataclass(frozen=True, slots=True)
class RewardPass:
    """Rewards granted (a concurrent pass may count the same one), reorders without one
    (control, no message sent, outside the window, no incentive)."""

    granted: int = 0
    none: int = 0


def _ok(o: Outcome | BaseException) -> bool:
    return isinstance(o, Outcome) and o.ok


class Rewarder:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        programmes: Programmes,
        events: MemberEventSink,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._programmes = programmes
        self._events = events

    async def _op(self, r: Any, incentive: Incentive) -> Earn | None:
        origin = Origin(merchant=r["merchant_id"], channel="system")
        op = reward_op(r["id"])
        detail = msgspec.json.encode(("reorder", r["id"]))
        if incentive.kind == "points":
            points = incentive.points or 0
            return Earn(
                op=op,
                member=r["member_id"],
                points=points,
                origin=origin,
                breakdown=(
                    PointsLine(rule=f"reorder:{r['loop_id']}", points=points, sku=r["sku"]),
                ),
                detail=detail,
                attached=(ReorderReward(r["id"], r["loop_id"], "points"),),
            )
        assert incentive.reward is not None
        reward = await find_reward(self._pool, r["merchant_id"], incentive.reward)
        if reward is None or not reward.active:
            return None  # withdrawn since it was promised
        days = reward.valid_days or (await self._programmes.get(r["merchant_id"])).code_valid_days
        code = GrantedCode(reward, days)
        return Earn(
            op=op,
            member=r["member_id"],
            points=0,
            origin=origin,
            breakdown=(PointsLine(rule=f"reorder:{r['loop_id']}:{reward.id}", points=0),),
            detail=detail,
            attached=(code, ReorderReward(r["id"], r["loop_id"], "reward", reward.id, code.code)),
        )

    async def run(self, merchant: str | None = None) -> RewardPass:
        """Every reorder seen and not yet decided."""
        with translate_errors("reorder rewards"):
            rows = await self._pool.fetch(_DUE, merchant, BATCH)
        grants: list[tuple[Any, Earn, Incentive]] = []
        none: list[int] = []
        for r in rows:
            incentive = _incentive.decode(r["incentive"]) if r["incentive"] else None
            sent = r["sent_at"]
            if (
                incentive is None
                or sent is None
                or not sent
                <= r["reordered_at"]
                <= sent + timedelta(days=incentive.attribution_days)
            ):
                none.append(r["id"])
                continue
            op = await self._op(r, incentive)
            if op is None:
                none.append(r["id"])
            else:
                grants.append((r, op, incentive))
        outcomes = await asyncio.gather(
            *(self._ledger.submit(op) for _, op, _ in grants), return_exceptions=True
        )
        done = list(zip(grants, outcomes, strict=True))
        granted = [(r, i) for (r, _, i), o in done if _ok(o)]
        refused = [r["id"] for (r, _, _), o in done if isinstance(o, Outcome) and not o.ok]
        with translate_errors("reorder rewards"):
            await self._pool.execute(_DECIDED, [r["id"] for r, _ in granted], "granted")
            await self._pool.execute(_DECIDED, none, "none")
            await self._pool.execute(_DECIDED, refused, "refused")
        for r, incentive in granted:
            if incentive.kind == "reward":
                await self._announce(r["merchant_id"], reward_op(r["id"]))
        return RewardPass(len(granted), len(none))

    async def _announce(self, merchant: str, op: str) -> None:
        code = await granted_code(self._pool, merchant, op)
        if code is not None:
            await self._events.publish(
                merchant, code.member, CodeChanged(member=code.member, code=code)
            )


__all__ = ["REORDER_REWARD", "ReorderReward", "RewardPass", "Rewarder", "reward_op"]
