"""The loyalty programme's websocket commands, registered on the node's ``Dispatcher``.

Scope rules: a POS (or web shop integration) reaches every member of its merchant; an app
session reaches only its own member, may look itself up, read its history, mint its pass and
turn its own points into reward codes. Using, voiding codes and returns are POS-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.loyalty.live import MemberEvents
from gateway.loyalty.replies import member_balance
from gateway.loyalty.service import Loyalty
from gateway.sessions.commands import Dispatcher, op_id, origin, outcome_frame
from protocol.loyalty import (
    CashierState,
    CashierView,
    Enrol,
    GetHistory,
    IssuePass,
    Lookup,
    RedeemReward,
    Return,
    UseCode,
    VoidCode,
)
from protocol.messages import Result, Sale, Subscribe, Subscribed

if TYPE_CHECKING:
    from gateway.app import Node
    from gateway.auth import Principal
    from gateway.sessions.session import Session

log = logging.getLogger(__name__)

#: Seconds between points-expiry passes on each node (jittered; the lock makes one run).
EXPIRY_INTERVAL = 3600.0


def install(node: Node) -> Loyalty:
    """Build the loyalty service for ``node`` and register its commands."""
    svc = Loyalty(
        node.pool,
        node.ledger,
        node.reads,
        MemberEvents(node.redis, node.keys, lambda: node.sessions),
        node.settings.auth.jwt_secret,
    )
    register(node.dispatcher, svc)
    return svc


def register(d: Dispatcher, svc: Loyalty) -> None:
    async def sale(d: Dispatcher, s: Session, p: Principal, f: Sale) -> object:
        d.require_pos(p)
        await d.authorize_member(p, f.member)
        return outcome_frame(f.id, await svc.sale(origin(p), f))

    async def enrol(d: Dispatcher, s: Session, p: Principal, f: Enrol) -> object:
        d.require_pos(p)
        m = await svc.enrol(
            p.merchant,
            phone=f.phone,
            email=f.email,
            card=f.card,
            name=f.name,
            channel=p.channel,
            store=p.store or "",
        )
        return Result(id=f.id, data=m)

    async def lookup(d: Dispatcher, s: Session, p: Principal, f: Lookup) -> object:
        only = p.member if p.kind == "app" else None  # an app finds only itself
        m = await svc.lookup(
            p.merchant, phone=f.phone, email=f.email, card=f.card, qr=f.qr, only=only
        )
        return Result(id=f.id, data=m)

    async def issue_pass(d: Dispatcher, s: Session, p: Principal, f: IssuePass) -> object:
        await d.authorize_member(p, f.member)
        await svc.profile(p.merchant, f.member)  # not for an erased member
        return Result(id=f.id, data=svc.issue_pass(p.merchant, f.member))

    async def history(d: Dispatcher, s: Session, p: Principal, f: GetHistory) -> object:
        await d.authorize_member(p, f.member)
        await svc.profile(p.merchant, f.member)  # an erased member's purchases are not served
        return Result(id=f.id, data=await svc.history(p.merchant, f.member, f.before, f.limit))

    async def redeem(d: Dispatcher, s: Session, p: Principal, f: RedeemReward) -> object:
        await d.authorize_member(p, f.member)
        op = op_id(p, f.op)  # an app's ids cannot collide with a register's
        return Result(id=f.id, data=await svc.redeem_reward(origin(p), f.member, f.reward, op))

    async def use_code(d: Dispatcher, s: Session, p: Principal, f: UseCode) -> object:
        d.require_pos(p)
        return Result(id=f.id, data=await svc.use_code(origin(p), f.code, f.op))

    async def void_code(d: Dispatcher, s: Session, p: Principal, f: VoidCode) -> object:
        d.require_pos(p)
        return Result(id=f.id, data=await svc.void_code(origin(p), f.code, f.op))

    async def return_(d: Dispatcher, s: Session, p: Principal, f: Return) -> object:
        d.require_pos(p)
        await d.authorize_member(p, f.member)
        return Result(id=f.id, data=await svc.return_sale(origin(p), f))

    async def cashier_view(d: Dispatcher, s: Session, p: Principal, f: CashierView) -> object:
        d.require_pos(p)
        await d.authorize_member(p, f.member)
        # A merged duplicate (an old card, a stale QR) shows its survivor: `member.member`
        # names the one the register now serves and watches.
        member = await svc.member(p.merchant, f.member)
        who = member.member
        programme = await svc.programmes.get(p.merchant)
        tier, codes, recent, catalogue = await asyncio.gather(
            svc.tier_info(programme, who, member.tier),
            svc.codes(p.merchant, who),
            svc.history(p.merchant, who, None, 5),
            svc.rewards(p.merchant),
        )
        # Subscribe last and build the reply without yielding, as `subscribe` does, so the
        # reply is queued before any later push; its balance is the feed's.
        # A till that asked for the member's presence keeps it (a subscribe without it
        # would turn it off, and the client helper would still count on it).
        sub = await d.subscribe_on_behalf(s, Subscribe(id=f.id, member=who, replace=f.replace))
        assert isinstance(sub, Result) and isinstance(sub.data, Subscribed)
        bal = sub.data.balance
        balance = member_balance(bal)
        rewards = svc.reward_options(programme, member.tier, bal.available, catalogue)
        return Result(
            id=f.id,
            data=CashierState(
                member=member,
                balance=balance,
                tier=tier,
                rewards=rewards,
                codes=codes,
                recent=recent.purchases,
                offers=svc.offers(programme, member.tier),
            ),
        )

    handlers: dict[type, Any] = {
        Sale: sale,
        Enrol: enrol,
        Lookup: lookup,
        IssuePass: issue_pass,
        GetHistory: history,
        RedeemReward: redeem,
        UseCode: use_code,
        VoidCode: void_code,
        Return: return_,
        CashierView: cashier_view,
    }
    for frame_type, handler in handlers.items():
        d.register(frame_type, handler)


async def expiry_loop(svc: Loyalty, interval: float = EXPIRY_INTERVAL) -> None:
    """Run the points-expiry job periodically on this node (safe on every node)."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        with contextlib.suppress(GatewayError):
            try:
                n = await svc.run_expiry(drain=True)
                if n:
                    log.info("points expiry: %d members expired", n)
            except GatewayError:
                raise
            except Exception:
                log.exception("points expiry failed")
