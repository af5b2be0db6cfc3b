"""Rewards and single-use codes: redeeming points into a code, using a code exactly once (one
conditional UPDATE, so two registers at the same instant cannot both win), and voiding a code
(its points come back through the ledger). Owns the table reward_codes; the catalogue is the
programme's."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.events import MemberEventSink, WebhookEventSink
from gateway.ledger import Earn, Ledger, Origin, member_balance, recorded
from gateway.members import Members, resolve
from gateway.programme import Programme, Programmes, Reward, find_reward
from gateway.rewards.redemption import redeem_code
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.loyalty import RewardCode, RewardOption
from protocol.messages import Balance, Outcome, PointsLine, SaleReceipt
from protocol.wallet import CodeChanged, Codes

_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"


def new_code() -> str:
    return "RW-" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))


def refused(outcome: Outcome) -> Refused:
    err = outcome.error
    assert err is not None
    return Refused(err.message, ErrorCode(err.code))


def reward_options(
    programme: Programme, tier: str, available: int, catalogue: Sequence[Reward]
) -> list[RewardOption]:
    """The rewards a member of ``tier`` may redeem, and which of them it can afford."""
    return [
        RewardOption(
            reward=r.id,
            name=r.name,
            cost=r.cost,
            reward_kind=r.kind,
            value=r.value,
            sku=r.sku,
            min_tier=r.min_tier,
            affordable=r.cost <= available,
        )
        for r in catalogue
        if r.active and programme.reaches(tier, r.min_tier)
    ]


#: The codes each ``codes`` status lists (``active`` and ``expired`` tell an issued code by its
#: expiry: expiry is not a state a code is moved to).
_STATUS = {
    "all": "true",
    "active": "c.status = 'issued' AND c.expires_at > now()",
    "expired": "c.status = 'issued' AND c.expires_at <= now()",
    "used": "c.status = 'redeemed'",
    "voided": "c.status = 'voided'",
}

#: A code's terms (name, kind, value, sku) are its own, stored as issued: an edit of the
#: catalogue row since does not change what a code already paid for is worth. NULL only
#: for a code whose reward row was gone when migration 0112 filled them in: read as before
#: for a reward missing from the catalogue (a reward created since under the same id is
#: another reward, not this code's terms).
CODE_SELECT = """
    SELECT c.code, c.reward_id, c.member_id, c.status, c.points, c.expires_at, c.issue_op,
           c.redeemed_op, c.void_op, c.name, c.kind, c.value, c.sku
      FROM reward_codes c
"""


#: The same, with the order codes are paged by.
_CODE_PAGE = CODE_SELECT.replace("c.sku\n", "c.sku, c.seq\n")
assert "c.seq" in _CODE_PAGE


def code_of(r: asyncpg.Record, balance: Balance | None = None) -> RewardCode:
    """A ``reward_codes`` row (``CODE_SELECT``) as the protocol's code."""
    status = r["status"]
    if status == "issued" and r["expires_at"] <= datetime.now(UTC):
        status = "expired"
    return RewardCode(
        code=r["code"],
        reward=r["reward_id"],
        member=r["member_id"],
        status=status,
        points=r["points"],
        expires_at=epoch_ms(r["expires_at"]),
        name=r["name"] or "",
        reward_kind=r["kind"] or "",
        value=r["value"] or 0,
        sku=r["sku"],
        balance=None if balance is None else member_balance(balance),
    )


class Rewards:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        programmes: Programmes,
        members: Members,
        events: MemberEventSink,
        hooks: WebhookEventSink | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.programmes = programmes
        self.members = members
        self._events = events
        self._hooks = hooks

    async def _announce(self, merchant: str, row: asyncpg.Record) -> None:
        """A code was issued, used or voided: the member's watchers see it at once."""
        code = code_of(row)
        await self._events.publish(
            merchant, code.member, CodeChanged(member=code.member, code=code)
        )

    def _code(self, r: asyncpg.Record, balance: Balance | None = None) -> RewardCode:
        return code_of(r, balance)

    async def _find_code(self, merchant: str, code: str) -> asyncpg.Record | None:
        with translate_errors("code read"):
            return await self.pool.fetchrow(
                CODE_SELECT + " WHERE c.merchant_id = $1 AND c.code = $2",
                merchant,
                code.upper(),
            )

    async def codes(self, merchant: str, member: str, limit: int = 20) -> list[RewardCode]:
        with translate_errors("codes read"):
            rows = await self.pool.fetch(
                CODE_SELECT
                + """ WHERE c.merchant_id = $1 AND c.member_id = $2
                   AND c.status = 'issued' AND c.expires_at > now()
                 ORDER BY c.created_at DESC LIMIT $3""",
                merchant,
                member,
                limit,
            )
        return [self._code(r) for r in rows]

    async def reply_of(self, merchant: str, op: str, posted: SaleReceipt) -> RewardCode | None:
        """The code a ``redeem_reward`` or ``void_code`` under ``op`` answered, rebuilt from
        what the ledger recorded (``posted``: the points it moved): what ``outcome`` answers
        for them. None when ``posted`` is neither."""
        rules = [b.rule for b in posted.breakdown]
        if any(r.startswith("reward:") for r in rules):
            where = "c.merchant_id = $1 AND c.issue_op = $2"
            key = op
        else:
            voided = next((r[len("void:") :] for r in rules if r.startswith("void:")), None)
            if voided is None:
                return None
            where, key = "c.merchant_id = $1 AND c.code = $2", voided
        with translate_errors("code read"):
            row = await self.pool.fetchrow(CODE_SELECT + " WHERE " + where, merchant, key)
        if row is None:
            return None
        # As the reply named it: the member whose points the ledger moved (a merge since may
        # have moved the code on to its survivor); its status as it is now.
        return msgspec.structs.replace(self._code(row, posted.balance), member=posted.member)

    async def list_codes(
        self,
        merchant: str,
        member: str,
        status: str = "all",
        before: str | None = None,
        limit: int = 20,
    ) -> Codes:
        """The member's codes of ``status`` (``active``, ``used``, ``expired``, ``voided`` or
        ``all``), newest first, paged by the code sequence (stable under new codes)."""
        with translate_errors("codes read"):
            rows = await self.pool.fetch(
                _CODE_PAGE
                + f""" WHERE c.merchant_id = $1 AND c.member_id = $2 AND {_STATUS[status]}
                   AND ($3::bigint IS NULL OR c.seq < $3)
                 ORDER BY c.seq DESC LIMIT $4""",
                merchant,
                member,
                None if before is None else int(before),
                limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return Codes(
            member=member,
            codes=[self._code(r) for r in rows],
            next=str(rows[-1]["seq"]) if more and rows else None,
        )

    async def redeem(self, origin: Origin, member: str, reward: str, op: str) -> RewardCode:
        merchant = origin.merchant
        programme = await self.programmes.get(merchant)
        r = await find_reward(self.pool, merchant, reward)
        with translate_errors("reward read"):
            prior = await self.pool.fetchrow(
                "SELECT member_id, reward_id FROM reward_codes WHERE merchant_id = $1 AND issue_op = $2",
                merchant,
                op,
            )
        # A retry of a redemption the ledger already applied is replayed at the cost it paid,
        # whatever the catalogue says now: its code is issued even if the node died between
        # the ledger and the code, and the reward was repriced or withdrawn since. After a
        # merge it may name the duplicate or the survivor; the ledger is asked again with the
        # member the redemption was applied to, so that it replays.
        paid = await self._paid(merchant, op, reward)
        payer = member
        if prior is not None or paid is not None:
            named = await resolve(self.pool, member)
            if prior is not None and (
                prior["reward_id"] != reward
                or await resolve(self.pool, prior["member_id"]) != named
            ):
                raise Refused("", ErrorCode.IDEMPOTENCY_CONFLICT)
            if paid is not None:
                if await resolve(self.pool, paid[1]) != named:
                    raise Refused("", ErrorCode.IDEMPOTENCY_CONFLICT)
                payer = paid[1]
        if r is None:
            raise Refused("", ErrorCode.REWARD_NOT_FOUND)
        retry = prior is not None or paid is not None
        cost = r.cost if paid is None else paid[0]
        if not r.active and not retry:
            raise Refused("", ErrorCode.REWARD_NOT_FOUND)
        if r.min_tier and not retry:
            tier = await self.members.tier(merchant, member)
            if not programme.reaches(tier, r.min_tier):
                raise Refused(
                    f"reward for tier {r.min_tier} and above", ErrorCode.REWARD_NOT_ELIGIBLE
                )
        outcome = await self.ledger.execute(
            Earn(
                op=op,
                member=payer,
                points=-cost,
                origin=origin,
                kind="reward",
                contra="redemption",
                clamp=False,
                breakdown=(PointsLine(rule=f"reward:{reward}", points=-cost),),
                detail=msgspec.json.encode(("reward", reward)),
            )
        )
        if not outcome.ok:
            raise refused(outcome)
        receipt = outcome.data
        assert isinstance(receipt, SaleReceipt)
        row = await self._issue(
            merchant, op, r, cost, r.valid_days or programme.code_valid_days, payer
        )
        await self._announce(merchant, row)
        assert row is not None
        return self._code(row, receipt.balance)

    async def _issue(
        self, merchant: str, op: str, r: Reward, cost: int, days: int, payer: str
    ) -> asyncpg.Record:
        """The code of the redemption ``op``, issued once (a retry finds the first)."""
        # The code belongs to whoever holds the member's points now: if a merge moved them
        # since the ledger took them (a retry after a crash, or a merge in between), to the
        # survivor, as the merge moved the member's other codes.
        owner = await resolve(self.pool, payer)
        # The code keeps the reward's terms as read with its cost, before the points were
        # taken; a retry of an issued code keeps the terms it was issued with (DO NOTHING).
        with translate_errors("code issue"):
            async with self.pool.acquire() as conn, conn.transaction():
                issued = await conn.fetchval(
                    """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points,
                                                 status, issue_op, expires_at, name, kind,
                                                 value, sku)
                       VALUES ($1, $2, $3, $4, $5, 'issued', $6,
                               now() + make_interval(days => $7), $8, $9, $10, $11)
                       ON CONFLICT (merchant_id, issue_op) DO NOTHING
                       RETURNING code""",
                    merchant,
                    new_code(),
                    owner,
                    r.id,
                    cost,
                    op,
                    days,
                    r.name,
                    r.kind,
                    r.value,
                    r.sku,
                )
                # the redemption's event rides on its code's issue: once, as the code is
                if issued is not None and self._hooks is not None:
                    data = {"member": owner, "reward": r.id, "code": issued, "points": cost}
                    await self._hooks.record(
                        conn, merchant, owner, "reward.redeemed", {**data, "op": op}
                    )
            now_owner = await resolve(self.pool, owner)
            if now_owner != owner:  # merged while the code was being inserted: follow it
                await self.pool.execute(
                    """UPDATE reward_codes SET member_id = $3
                        WHERE merchant_id = $1 AND issue_op = $2 AND member_id = $4""",
                    merchant,
                    op,
                    now_owner,
                    owner,
                )
            row = await self.pool.fetchrow(
                CODE_SELECT + " WHERE c.merchant_id = $1 AND c.issue_op = $2", merchant, op
            )
        assert row is not None
        record: asyncpg.Record = row
        return record

    async def _applied(self, merchant: str, op: str, kind: str, rule: str) -> SaleReceipt | None:
        """The receipt of the operation of ``kind`` applied under ``op``, if it has a points
        line of ``rule`` (``reward:<id>``, ``void:<code>``)."""
        found = await recorded(self.pool, merchant, op)
        data = found.outcome.data if found is not None and found.applied(kind) else None
        if isinstance(data, SaleReceipt) and any(b.rule == rule for b in data.breakdown):
            return data
        return None

    async def _paid(self, merchant: str, op: str, reward: str) -> tuple[int, str] | None:
        """The points an applied redemption of ``reward`` under ``op`` took, and from whom."""
        receipt = await self._applied(merchant, op, "reward", f"reward:{reward}")
        return None if receipt is None else (-receipt.points, receipt.member)

    async def use(self, origin: Origin, code: str, op: str) -> RewardCode:
        """Redeem a code: one conditional UPDATE, so of two registers presenting it at the same
        instant exactly one succeeds; the other gets ``code_already_redeemed``. An ``op`` names
        one code: the same ``op`` on another code, or an ``op`` the ledger holds for another
        operation, is a changed retry (``idempotency_conflict``)."""
        merchant = origin.merchant
        with translate_errors("code redemption"):
            taken = await recorded(self.pool, merchant, op) is not None or bool(
                await self.pool.fetchval(
                    """SELECT 1 FROM reward_codes
                        WHERE merchant_id = $1 AND redeemed_op = $2 AND code <> $3""",
                    merchant,
                    op,
                    code.upper(),
                )
            )
        if taken:
            raise Refused("", ErrorCode.IDEMPOTENCY_CONFLICT)
        with translate_errors("code redemption"):
            try:
                won = await self._redeem(origin, code, op)
            except asyncpg.UniqueViolationError:  # the same op, another code, at the same time
                raise Refused("", ErrorCode.IDEMPOTENCY_CONFLICT) from None
        row = await self._find_code(merchant, code)
        if row is None:
            raise Refused("", ErrorCode.CODE_NOT_FOUND)
        if not won:
            if row["status"] == "redeemed" and row["redeemed_op"] == op:
                pass  # a retry of the redemption that won
            elif row["status"] == "redeemed":
                raise Refused("", ErrorCode.CODE_ALREADY_REDEEMED)
            elif row["status"] == "voided":
                raise Refused("", ErrorCode.CODE_VOIDED)
            else:
                raise Refused("", ErrorCode.CODE_EXPIRED)
        else:
            await self._announce(merchant, row)
        return self._code(row)

    async def _redeem(self, origin: Origin, code: str, op: str) -> bool:
        return await redeem_code(self.pool, self._hooks, origin, code, op)

    async def void(self, origin: Origin, code: str, op: str) -> RewardCode:
        """Void an unredeemed (even expired) code and give its points back."""
        merchant = origin.merchant
        with translate_errors("code void"):
            await self.pool.execute(
                """UPDATE reward_codes SET status = 'voided', voided_at = now(), void_op = $3
                    WHERE merchant_id = $1 AND code = $2 AND status = 'issued'""",
                merchant,
                code.upper(),
                op,
            )
        row = await self._find_code(merchant, code)
        if row is None:
            raise Refused("", ErrorCode.CODE_NOT_FOUND)
        if row["status"] == "redeemed":
            raise Refused("", ErrorCode.CODE_ALREADY_REDEEMED)
        if row["void_op"] != op:
            raise Refused("", ErrorCode.CODE_VOIDED)
        # A failure here (``unavailable``, ``timeout``) leaves the code voided under this op:
        # the client retries the same op, which finds it and completes the refund. Undoing it
        # here could undo a void that an earlier attempt of the same op did apply.
        for _ in range(3):
            outcome = await self.ledger.execute(
                Earn(
                    op=op,
                    member=row["member_id"],
                    points=row["points"],
                    origin=origin,
                    kind="refund",
                    contra="redemption",
                    breakdown=(PointsLine(rule=f"void:{row['code']}", points=row["points"]),),
                    detail=msgspec.json.encode(("void", row["code"])),
                )
            )
            if outcome.ok or outcome.error is None:
                break
            if outcome.error.code != ErrorCode.MEMBER_MERGED:
                break
            # Merged while this refund was queued: the merge moved the code to the survivor,
            # which the refund goes to (the same op; a retry racing this one gets it once).
            fresh = await self._find_code(merchant, code)
            if fresh is None or fresh["void_op"] != op or fresh["member_id"] == row["member_id"]:
                break
            row = fresh
        if not outcome.ok and outcome.error is not None:
            if outcome.error.code == ErrorCode.IDEMPOTENCY_CONFLICT:
                applied = await self._applied(merchant, op, "refund", f"void:{row['code']}")
                if applied is not None:
                    # This void's refund, applied by an earlier attempt to the member that
                    # owned the code then (a merge has since moved the code): its reply.
                    return self._code(row, applied.balance)
            # Nothing was refunded (e.g. the op id belongs to another operation): the code
            # goes back to issued, usable and voidable, rather than lost with its points;
            # unless a merge has moved it since (a retry may be refunding it there).
            with translate_errors("code void"):
                await self.pool.execute(
                    """UPDATE reward_codes SET status = 'issued', voided_at = NULL, void_op = NULL
                        WHERE merchant_id = $1 AND code = $2 AND status = 'voided'
                          AND void_op = $3 AND member_id = $4""",
                    merchant,
                    row["code"],
                    op,
                    row["member_id"],
                )
            raise refused(outcome)
        receipt = outcome.data
        assert isinstance(receipt, SaleReceipt)
        fresh = await self._find_code(merchant, row["code"])
        await self._announce(merchant, fresh if fresh is not None else row)
        return self._code(row, receipt.balance)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class CodeRows:
    """A member's reward codes, as a merge and an export treat them
    (``gateway.members.MemberRows``); they hold no personal data to scrub."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        status = await conn.execute(
            "UPDATE reward_codes SET member_id = $3 WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
            survivor,
        )
        return {"codes": _count(status)}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        return None

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            rows = await self._pool.fetch(
                CODE_SELECT + " WHERE c.merchant_id = $1 AND c.member_id = $2", merchant, member
            )
        return {"codes": [msgspec.to_builtins(code_of(r)) for r in rows]}
