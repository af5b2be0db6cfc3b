"""The loyalty programme's commands.

Scope rules: a POS (or web shop integration) reaches every member of its merchant; an app
session reaches only its own member, may look itself up, read its history, mint its pass and
turn its own points into reward codes. Using, voiding codes and returns are POS-only.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date

from gateway.aggregates import Aggregates, Summary
from gateway.aggregates import Bought as Figures
from gateway.commands.points import op_id, origin, outcome_frame
from gateway.errors import GatewayError
from gateway.ledger import member_balance
from gateway.members import Members
from gateway.offers import Offers
from gateway.programme import Programmes
from gateway.purchases import Returns, Sales
from gateway.rewards import Rewards, reward_options
from gateway.segments import Segments
from gateway.sessions import Call, Scope, Subscriptions
from gateway.tiers import Tiers
from protocol.loyalty import (
    Bought,
    CashierState,
    CashierView,
    Enrol,
    GetHistory,
    IssuePass,
    Lookup,
    PurchaseProfile,
    RedeemReward,
    Return,
    TargetedOffer,
    UseCode,
    VoidCode,
)
from protocol.messages import Result, Sale, Subscribe

log = logging.getLogger(__name__)


class Loyalty:
    """The loyalty commands over the domain services they call."""

    def __init__(
        self,
        scope: Scope,
        members: Members,
        sales: Sales,
        returns: Returns,
        tiers: Tiers,
        rewards: Rewards,
        programmes: Programmes,
        subscriptions: Subscriptions,
        aggregates: Aggregates | None = None,
        segments: Segments | None = None,
        offers: Offers | None = None,
    ) -> None:
        self._offers = offers
        self._aggregates = aggregates
        self._segments = segments
        self._scope = scope
        self._members = members
        self._sales = sales
        self._returns = returns
        self._tiers = tiers
        self._rewards = rewards
        self._programmes = programmes
        self._subscriptions = subscriptions

    async def sale(self, call: Call, f: Sale) -> object:
        p = call.principal
        self._scope.require_pos(p)
        await self._scope.authorize_member(p, f.member)
        outcome = await self._sales.record(origin(call), f)
        if outcome.ok:
            try:
                await self._tiers.check_upgrade(p.merchant, f.member)
            except GatewayError:
                log.warning("tier check after sale %s failed", f.op, exc_info=True)
            if self._segments is not None:
                self._segments.soon(p.merchant, [f.member], "sale")
            if f.offers and self._offers is not None:  # a use taken: its list changed
                self._offers.announce_soon(p.merchant, [f.member])
        return outcome_frame(f.id, outcome)

    async def enrol(self, call: Call, f: Enrol) -> object:
        p = call.principal
        self._scope.require_pos(p)
        m = await self._members.enrol(
            p.merchant,
            phone=f.phone,
            email=f.email,
            card=f.card,
            name=f.name,
            channel=p.channel,
            store=p.store or "",
        )
        return Result(id=f.id, data=m)

    async def lookup(self, call: Call, f: Lookup) -> object:
        p = call.principal
        only = p.member if p.kind == "app" else None  # an app finds only itself
        m = await self._members.lookup(
            p.merchant, phone=f.phone, email=f.email, card=f.card, qr=f.qr, only=only
        )
        return Result(id=f.id, data=m)

    async def issue_pass(self, call: Call, f: IssuePass) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        await self._members.profile(p.merchant, f.member)  # not for an erased member
        return Result(id=f.id, data=self._members.issue_pass(p.merchant, f.member))

    async def history(self, call: Call, f: GetHistory) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        await self._members.profile(p.merchant, f.member)  # an erased member's are not served
        return Result(
            id=f.id, data=await self._sales.history(p.merchant, f.member, f.before, f.limit)
        )

    async def redeem(self, call: Call, f: RedeemReward) -> object:
        await self._scope.authorize_member(call.principal, f.member)
        op = op_id(call, f.op)  # an app's ids cannot collide with a register's
        code = await self._rewards.redeem(origin(call), f.member, f.reward, op)
        if self._segments is not None:  # points available moved
            self._segments.soon(call.principal.merchant, [f.member], "redemption")
        return Result(id=f.id, data=code)

    async def use_code(self, call: Call, f: UseCode) -> object:
        self._scope.require_pos(call.principal)
        return Result(id=f.id, data=await self._rewards.use(origin(call), f.code, f.op))

    async def void_code(self, call: Call, f: VoidCode) -> object:
        self._scope.require_pos(call.principal)
        return Result(id=f.id, data=await self._rewards.void(origin(call), f.code, f.op))

    async def return_(self, call: Call, f: Return) -> object:
        p = call.principal
        self._scope.require_pos(p)
        await self._scope.authorize_member(p, f.member)
        receipt = await self._returns.return_sale(origin(call), f)
        if self._segments is not None:
            self._segments.soon(p.merchant, [receipt.member], "return")
        return Result(id=f.id, data=receipt)

    async def cashier_view(self, call: Call, f: CashierView) -> object:
        p = call.principal
        self._scope.require_pos(p)
        await self._scope.authorize_member(p, f.member)
        # A merged duplicate (an old card, a stale QR) shows its survivor: `member.member`
        # names the one the register now serves and watches.
        member = await self._members.member(p.merchant, f.member)
        who = member.member
        programme = await self._programmes.get(p.merchant)
        tier, codes, recent, bought, targeted = await asyncio.gather(
            self._tiers.info(programme, who, member.tier),
            self._rewards.codes(p.merchant, who),
            self._sales.history(p.merchant, who, None, 5),
            self._summary(p.merchant, who),
            self._targeted(p.merchant, who, p.channel),
        )
        # Subscribe last and build the reply without yielding, as `subscribe` does, so the
        # reply is queued before any later push; its balance is the feed's.
        # A till that asked for the member's presence keeps it (a subscribe without it
        # would turn it off, and the client helper would still count on it).
        sub = await self._subscriptions.on_behalf(
            call.session, Subscribe(id=f.id, member=who, replace=f.replace)
        )
        bal = sub.balance
        return Result(
            id=f.id,
            data=CashierState(
                member=member,
                balance=member_balance(bal),
                tier=tier,
                rewards=reward_options(programme, member.tier, bal.available, programme.rewards),
                codes=codes,
                recent=recent.purchases,
                offers=programme.offers(member.tier),
                purchases=bought,
                targeted=targeted,
            ),
        )

    async def _targeted(self, merchant: str, member: str, channel: str) -> list[TargetedOffer]:
        if self._offers is None:
            return []
        return await self._offers.targeted(merchant, member, channel)

    async def _summary(self, merchant: str, member: str) -> PurchaseProfile | None:
        if self._aggregates is None:
            return None
        return purchase_profile(await self._aggregates.summary(merchant, member, top=5))


def purchase_profile(s: Summary) -> PurchaseProfile:
    def iso(d: date | None) -> str | None:
        return None if d is None else d.isoformat()

    def items(bs: list[Figures]) -> list[Bought]:
        return [
            Bought(key=b.key, units=b.units, spend=b.spend, visits=b.visits, last=iso(b.last))
            for b in bs
        ]

    return PurchaseProfile(
        spend=s.spend,
        visits=s.visits,
        units=s.units,
        first=iso(s.first),
        last=iso(s.last),
        channels=dict(s.channels),
        categories=items(s.categories),
        brands=items(s.brands),
    )
