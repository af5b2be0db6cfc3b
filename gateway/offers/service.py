"""The offers as the rest of the node uses them: the admin API's reads and writes, a member's
eligible offers (the cashier and wallet views), and the sale's claim (``Sales`` calls it
through ``purchases.SaleOffers``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.background import stop
from gateway.errors import GatewayError, Refused
from gateway.events import MemberEventSink
from gateway.ledger import Origin
from gateway.offers import claims, model
from gateway.offers.claims import Claim
from gateway.offers.model import Offer, OfferSpec, channel_of
from gateway.segments import MembershipChange, Segments, memberships
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.loyalty import TargetedOffer
from protocol.messages import SaleLine
from protocol.wallet import OffersChanged

log = logging.getLogger(__name__)


class Offers:
    def __init__(
        self, pool: asyncpg.Pool[Any], segments: Segments, events: MemberEventSink | None = None
    ) -> None:
        self._pool = pool
        self._segments = segments
        self._events = events
        self._tasks: set[asyncio.Task[None]] = set()
        segments.add_sink(self)

    def announce_soon(self, merchant: str, members: Sequence[str]) -> None:
        """``announce`` off the caller's path (a sale's reply does not wait for its push)."""
        if self._events is None:
            return
        task = asyncio.get_running_loop().create_task(self.announce(merchant, members))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            await stop(task)

    # ------------------------------------------------------------------ live pushes

    async def announce(self, merchant: str, members: Sequence[str]) -> None:
        """Push ``offers_changed`` (the member's whole list now) to each member's sessions."""
        if self._events is None:
            return
        for member in dict.fromkeys(members):
            try:
                targeted = await self.targeted(merchant, member, None)
                await self._events.publish(
                    merchant, member, OffersChanged(member=member, targeted=targeted)
                )
            except GatewayError:  # best effort, as every member event: the views read it
                log.warning("offers_changed for %s not pushed", member, exc_info=True)

    async def changed(self, changes: Sequence[MembershipChange]) -> None:
        """``MembershipSink``: a member who entered or left a segment that a live offer
        targets has other offers now. One read per merchant in the batch when no offer
        targets a segment."""
        by_merchant: dict[str, list[MembershipChange]] = {}
        for c in changes:
            by_merchant.setdefault(c.merchant, []).append(c)
        for merchant, cs in by_merchant.items():
            with translate_errors("offers read"):
                rows = await self._pool.fetch(
                    """SELECT DISTINCT unnest(segments) FROM offers
                        WHERE merchant_id = $1 AND active AND ends_at > now()""",
                    merchant,
                )
            targeted = {r[0] for r in rows}
            if targeted:
                await self.announce(
                    merchant,
                    [c.member for c in cs if targeted & (set(c.entered) | set(c.left))],
                )

    # ------------------------------------------------------------------ admin

    async def put(self, merchant: str, offer_id: str, spec: OfferSpec) -> Offer:
        known = [s.id for s in await self._segments.definitions_now(merchant)]
        before = await self.listed(merchant, offer_id)
        o = await model.put(self._pool, merchant, offer_id, spec, known)
        await self.announce(merchant, [*before, *await self.listed(merchant, offer_id)])
        return o

    async def get(self, merchant: str, offer_id: str) -> Offer | None:
        return await model.get(self._pool, merchant, offer_id)

    async def listed(self, merchant: str, offer_id: str) -> list[str]:
        return await model.listed(self._pool, merchant, offer_id)

    async def all(self, merchant: str) -> list[Offer]:
        return await model.all_offers(self._pool, merchant)

    async def end(self, merchant: str, offer_id: str) -> bool:
        ended = await model.end(self._pool, merchant, offer_id)
        if ended:
            await self.announce(merchant, await self.listed(merchant, offer_id))
        return ended

    async def set_members(self, merchant: str, offer_id: str, members: Sequence[str]) -> bool:
        """Replace the offer's listed members; False if there is no such offer."""
        if len(set(members)) > model.MAX_LISTED:
            raise Refused(f"at most {model.MAX_LISTED} listed members", ErrorCode.INVALID_FIELD)
        with translate_errors("offer write"):
            async with self._pool.acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM offers WHERE merchant_id = $1 AND id = $2 FOR UPDATE",
                    merchant,
                    offer_id,
                )
                if not found:
                    return False
                before = await model.listed(conn, merchant, offer_id)
                await model.set_members(conn, merchant, offer_id, members)
        await self.announce(merchant, [*before, *members])
        return True

    # ------------------------------------------------------------------ members

    async def _member_segments(self, merchant: str, member: str) -> list[str]:
        with translate_errors("segments read"):
            found = await memberships(self._pool, merchant, [member], None)
        return sorted(found.get(member, ()))

    async def eligible(self, merchant: str, member: str, channel: str | None) -> list[Offer]:
        """``member``'s offers now, on the session's channel (``pos`` is the store; None:
        every channel, as the app shows offers for both)."""
        segs = await self._member_segments(merchant, member)
        ch = None if channel is None else channel_of(channel)
        return await claims.eligible(self._pool, merchant, member, ch, segs)

    async def targeted(
        self, merchant: str, member: str, channel: str | None
    ) -> list[TargetedOffer]:
        """``eligible`` as the cashier and wallet views carry them."""
        return [wire(o) for o in await self.eligible(merchant, member, channel)]

    # ------------------------------------------------------------------ sales

    async def claim(
        self,
        origin: Origin,
        member: str,
        op: str,
        offers: Sequence[str],
        lines: Sequence[SaleLine],
        base: int,
    ) -> Claim:
        segs = await self._member_segments(origin.merchant, member)
        return await claims.claim(
            self._pool,
            origin.merchant,
            member,
            op,
            channel_of(origin.channel),
            segs,
            offers,
            lines,
            base,
        )

    async def release(self, origin: Origin, op: str, claim: Claim) -> None:
        await claims.release(self._pool, origin.merchant, op, claim.new)


def wire(o: Offer) -> TargetedOffer:
    return TargetedOffer(
        offer=o.id,
        name=o.name,
        kind=o.kind,
        description=o.description,
        points=o.points or 0,
        multiplier=str(o.multiplier) if o.multiplier is not None else "1",
        sku=o.sku,
        category=o.category,
        channels=[c for c in ("store", "online") if c in o.channels],
        ends_at=int(o.ends_at.timestamp() * 1000),
    )
