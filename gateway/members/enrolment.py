"""The member as every point of interaction sees it: enrolment by phone, email or card, lookup
(a pass's QR included), the profile with its balance, and the signed pass the app shows."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.events import WebhookEventSink
from gateway.ledger import Reads, member_balance
from gateway.members import directory
from gateway.members.directory import Profile
from gateway.members.identity import (
    invalid,
    mint_pass,
    normalise_card,
    normalise_email,
    normalise_phone,
    verify_pass,
)
from gateway.programme import Programme, Programmes
from protocol.codes import ErrorCode
from protocol.loyalty import Member, Pass


def identities(
    programme: Programme,
    phone: str | None = None,
    email: str | None = None,
    card: str | None = None,
) -> dict[str, str]:
    """The identities given, normalised (a phone without a country code is read in the
    programme's region)."""
    out: dict[str, str] = {}
    if phone is not None:
        out["phone"] = normalise_phone(phone, programme.region)
    if email is not None:
        out["email"] = normalise_email(email)
    if card is not None:
        out["card"] = normalise_card(card)
    return out


class Members:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        programmes: Programmes,
        reads: Reads,
        secret: str,
        hooks: WebhookEventSink | None = None,
    ) -> None:
        self._pool = pool
        self._hooks = hooks
        self._programmes = programmes
        self._reads = reads
        self._secret = secret

    async def enrol(
        self,
        merchant: str,
        *,
        phone: str | None = None,
        email: str | None = None,
        card: str | None = None,
        name: str = "",
        channel: str = "",
        store: str = "",
    ) -> Member:
        programme = await self._programmes.get(merchant)
        ids = identities(programme, phone, email, card)
        if "phone" not in ids and "email" not in ids:
            raise invalid("enrolment needs a phone number or an email address")
        member, created = await directory.enrol(
            self._pool, merchant, ids, name, channel, store, self._hooks
        )
        return await self.member(merchant, member, created=created)

    async def lookup(
        self,
        merchant: str,
        *,
        phone: str | None = None,
        email: str | None = None,
        card: str | None = None,
        qr: str | None = None,
        only: str | None = None,
    ) -> Member:
        """The member holding the identity. With ``only`` (an app's own member), anyone else's
        identity is answered exactly as one nobody enrolled, after the same work: an app must
        not learn, by the answer or by its time, which phones and emails are members."""
        given = [x for x in (phone, email, card, qr) if x is not None]
        if len(given) != 1:
            raise invalid("look up by exactly one of phone, email, card or qr")
        nobody = Refused("no member with that identity", ErrorCode.MEMBER_NOT_FOUND)
        if qr is not None:
            found: str | None = verify_pass(self._secret, merchant, qr)
        else:
            programme = await self._programmes.get(merchant)
            ((kind, value),) = identities(programme, phone, email, card).items()
            if only is not None:
                if not await directory.identifies(self._pool, merchant, kind, value, only):
                    raise nobody
                return await self.member(merchant, only)
            found = await directory.find_member(self._pool, merchant, kind, value)
        if found is None:
            raise nobody
        # An identity (or a pass) of a merged duplicate finds the member it was merged into.
        m = await self.member(merchant, await directory.resolve(self._pool, found))
        if only is not None and m.member != only:  # a pass is signed: it tells nothing new
            raise nobody
        return m

    async def member(
        self, merchant: str, member: str, created: bool = False, erased: bool = False
    ) -> Member:
        """The member's profile and balance; a merged duplicate answers with its survivor
        (``Member.member`` then names the survivor), as lookups do. An erased member is not
        found, except with ``erased`` (the export's anonymised record)."""
        prof = await self.profile(merchant, member, erased)
        member = prof.member
        bal = await self._reads.balance(member)
        return Member(
            member=member,
            created=created,
            name=prof.name,
            phone=prof.phone,
            email=prof.email,
            card=prof.card,
            tier=prof.tier,
            balance=None if bal is None else member_balance(bal),
        )

    async def profile(self, merchant: str, member: str, erased: bool = False) -> Profile:
        """The profile of ``member``, or of the survivor it was merged into; refused with
        ``member_not_found`` for another merchant's member and, unless ``erased``, for an
        erased one (whose history and passes are not served either)."""
        prof = await directory.profile(
            self._pool, merchant, await directory.resolve(self._pool, member)
        )
        if prof is None or (prof.erased and not erased):
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
        return prof

    async def tier(self, merchant: str, member: str) -> str:
        """The member's tier as stored ('' for none or for another merchant's member)."""
        prof = await directory.profile(self._pool, merchant, member)
        return prof.tier if prof else ""

    def issue_pass(self, merchant: str, member: str) -> Pass:
        token, expires = mint_pass(self._secret, merchant, member)
        return Pass(member=member, token=token, expires_at=expires)
