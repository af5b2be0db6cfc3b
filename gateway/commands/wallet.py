"""The shopper's wallet commands: the wallet view, the codes, the profile and the proof of a new
email or phone. An app session reaches its own member only; a register reaches its merchant's
members (a cashier may help a shopper at the till)."""

from __future__ import annotations

import asyncio
from typing import Literal

from gateway.errors import Refused
from gateway.fanout import MemberEvents
from gateway.ledger import member_balance
from gateway.members import ContactProofs, Members, Profiles
from gateway.offers import Offers
from gateway.programme import Programmes
from gateway.purchases import Sales
from gateway.rewards import Rewards, reward_options
from gateway.sessions import Call, Scope, Subscriptions
from gateway.tiers import Tiers
from protocol.codes import ErrorCode
from protocol.loyalty import TargetedOffer
from protocol.messages import Result, Subscribe
from protocol.wallet import (
    CODES_DEFAULT_PAGE,
    ConfirmContact,
    GetCodes,
    GetWallet,
    UpdateProfile,
    VerifyContact,
    WalletView,
)


def _contact(frame: VerifyContact | ConfirmContact) -> tuple[Literal["email", "phone"], str]:
    if (frame.email is None) == (frame.phone is None):
        raise Refused("give exactly one of email or phone", ErrorCode.INVALID_FIELD)
    if frame.email is not None:
        return "email", frame.email
    assert frame.phone is not None
    return "phone", frame.phone


class Wallet:
    def __init__(
        self,
        scope: Scope,
        members: Members,
        profiles: Profiles,
        contacts: ContactProofs,
        sales: Sales,
        tiers: Tiers,
        rewards: Rewards,
        programmes: Programmes,
        subscriptions: Subscriptions,
        events: MemberEvents,
        offers: Offers | None = None,
    ) -> None:
        self._offers = offers
        self._scope = scope
        self._members = members
        self._profiles = profiles
        self._contacts = contacts
        self._sales = sales
        self._tiers = tiers
        self._rewards = rewards
        self._programmes = programmes
        self._subscriptions = subscriptions
        self._events = events

    async def wallet(self, call: Call, f: GetWallet) -> object:
        """Subscribe first, then read: every member event after the subscription is pushed,
        and every one before it is in what is read (see ``protocol.wallet``)."""
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        member, programme = await asyncio.gather(
            self._members.member(p.merchant, f.member),  # a merged id: its survivor
            self._programmes.get(p.merchant),
        )
        who = member.member
        current = await self._events.current(who)
        sub = await self._subscriptions.on_behalf(call.session, Subscribe(id=f.id, member=who))
        seq = self._events.seq_at_watch(who, current)
        profile, tier, codes, history, targeted = await asyncio.gather(
            self._profiles.view(p.merchant, who),
            self._tiers.info(programme, who, member.tier),
            self._rewards.list_codes(p.merchant, who, "all", None, CODES_DEFAULT_PAGE),
            self._sales.history(p.merchant, who, None, f.history),
            self._targeted(p.merchant, who),
        )
        bal = sub.balance
        return Result(
            id=f.id,
            data=WalletView(
                member=member,
                balance=member_balance(bal),
                tier=tier,
                rewards=reward_options(programme, member.tier, bal.available, programme.rewards),
                codes=codes,
                offers=programme.offers(member.tier),
                history=history,
                profile=profile,
                seq=seq,
                targeted=targeted,
            ),
        )

    async def _targeted(self, merchant: str, member: str) -> list[TargetedOffer]:
        """Every channel's: the app shows the member the store's offers too."""
        if self._offers is None:
            return []
        return await self._offers.targeted(merchant, member, None)

    async def codes(self, call: Call, f: GetCodes) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        who = (await self._profiles.view(p.merchant, f.member)).member
        page = await self._rewards.list_codes(p.merchant, who, f.status, f.before, f.limit)
        return Result(id=f.id, data=page)

    async def update_profile(self, call: Call, f: UpdateProfile) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        profile = await self._profiles.update(
            p.merchant,
            f.member,
            source=p.channel,
            name=f.name,
            birthday=f.birthday,
            consent=f.consent,
            preferred_store=f.preferred_store,
            clear_preferred_store=f.clear_preferred_store,
            time_zone=f.time_zone,
            clear_time_zone=f.clear_time_zone,
        )
        return Result(id=f.id, data=profile)

    async def verify_contact(self, call: Call, f: VerifyContact) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        contact, value = _contact(f)
        return Result(
            id=f.id, data=await self._contacts.request(p.merchant, f.member, contact, value)
        )

    async def confirm_contact(self, call: Call, f: ConfirmContact) -> object:
        p = call.principal
        await self._scope.authorize_member(p, f.member)
        contact, value = _contact(f)
        profile = await self._contacts.confirm(p.merchant, f.member, contact, value, f.code)
        return Result(id=f.id, data=profile)
