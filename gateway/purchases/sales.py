"""A sale's points, posted by the ledger with the sale's purchase-history row in one
transaction (group-committed): history and points can never disagree. A retry with the same
op replays the first receipt, even if the rules or the member's tier changed in between (the
ledger identifies a sale by what was bought)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import msgspec

from gateway.catalogue import Catalogue
from gateway.errors import Refused
from gateway.ledger import Attached, AttachmentKind, Earn, Ledger, Origin
from gateway.members import Members
from gateway.programme import Programmes
from gateway.purchases.earning import Earning, detail_fingerprint, sale_detail
from gateway.purchases.goods import GoodsFacts, sold
from gateway.purchases.history import history
from protocol.codes import ErrorCode
from protocol.limits import MAX_POINTS
from protocol.loyalty import History, PurchaseLine
from protocol.messages import Outcome, PointsLine, Sale, SaleLine

#: The purchase-history row of an applied sale, written in its earn's transaction.
SALE_HISTORY = AttachmentKind(
    "sales",
    """INSERT INTO sales (merchant_id, op_id, member_id, channel, store_id, terminal_id, total,
                    points, breakdown, lines, line_points, fingerprint, created_at)
SELECT m, o, mb, ch, st, te, tot, pts, bd::jsonb, ln::jsonb, lp::jsonb, decode(fp, 'hex'), {at}
  FROM json_to_recordset({rows}::json)
       AS s(m text, o text, mb text, ch text, st text, te text, tot int8, pts int8, bd text,
            ln text, lp text, fp text)
ON CONFLICT (merchant_id, op_id) DO NOTHING
RETURNING 1""",
)


@dataclass(frozen=True, slots=True)
class SaleRow:
    """The purchase behind a sale's earn (``SALE_HISTORY``)."""

    total: int
    lines: bytes
    """JSON list of {sku, qty, price, category, name}."""
    breakdown: bytes
    """JSON list of the receipt's points lines."""
    fingerprint: bytes
    line_points: bytes | None = None
    """JSON list of each line's exact points (decimal strings; None for a sale without
    lines): a return of some lines claws back their share of the sale's points."""

    @property
    def kind(self) -> AttachmentKind:
        return SALE_HISTORY

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        o = op.origin
        return {
            "m": o.merchant,
            "o": op.op,
            "mb": op.member,
            "ch": o.channel,
            "st": o.store,
            "te": o.terminal,
            "tot": self.total,
            "pts": getattr(outcome.data, "points", op.points),
            "bd": self.breakdown.decode(),
            "ln": self.lines.decode(),
            "lp": None if self.line_points is None else self.line_points.decode(),
            "fp": self.fingerprint.hex(),
        }


class OfferClaim(Protocol):
    """The offers a sale presents, as it applies them (``gateway.offers``)."""

    @property
    def lines(self) -> Sequence[PointsLine]: ...
    @property
    def attached(self) -> Sequence[Attached]: ...


class SaleOffers(Protocol):
    """Targeted offers, seen from a sale (``gateway.offers.Offers``, a layer above): reserve
    one use of each presented offer for the sale's op (idempotent), give the new ones back
    when the ledger refuses the sale."""

    async def claim(
        self,
        origin: Origin,
        member: str,
        op: str,
        offers: Sequence[str],
        lines: Sequence[SaleLine],
        base: int,
    ) -> Any: ...

    async def release(self, origin: Origin, op: str, claim: Any) -> None: ...


class Sales:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        programmes: Programmes,
        members: Members,
        catalogue: Catalogue | None = None,
        facts: GoodsFacts | None = None,
        offers: SaleOffers | None = None,
    ) -> None:
        self._pool = pool
        self._offers = offers
        self._facts = facts
        self._ledger = ledger
        self._programmes = programmes
        self._members = members
        self._catalogue = catalogue
        self.earning = Earning(pool, programmes)

    async def earned_lines(self, merchant: str, lines: list[SaleLine]) -> list[SaleLine]:
        """The lines as they earn and count: a line without a category or a brand takes its
        SKU's in the catalogue (a line's own wins). One indexed read, and only for a sale with
        such a line; no cache: an import on any node is seen by the next sale on every node."""
        missing = {ln.sku for ln in lines if ln.category is None or ln.brand is None}
        if not missing or self._catalogue is None:
            return lines
        facts = await self._catalogue.facts(merchant, missing)
        out = []
        for ln in lines:
            f = facts.get(ln.sku)
            if f is not None and (ln.category is None or ln.brand is None):
                ln = msgspec.structs.replace(
                    ln, category=ln.category or f.category, brand=ln.brand or f.brand
                )
            out.append(ln)
        return out

    async def record(self, origin: Origin, frame: Sale) -> Outcome:
        """Points for a sale under the merchant's rules and the member's tier."""
        merchant = origin.merchant
        programme = await self._programmes.get(merchant)
        tier = ""
        if programme.tiers:  # the tier multiplier needs the member's tier
            tier = await self._members.tier(merchant, frame.member)
        earned = await self.earned_lines(merchant, frame.lines)
        computed = await self.earning.compute(merchant, frame, tier, lines=earned)
        points, breakdown = computed.points, list(computed.breakdown)
        claim: Any = None
        if frame.offers:
            if self._offers is None:
                raise Refused("this node has no offers", ErrorCode.OFFER_NOT_ELIGIBLE)
            base = next((ln.points for ln in computed.breakdown if ln.rule == "base"), 0)
            claim = await self._offers.claim(
                origin, frame.member, frame.op, frame.offers, earned, base
            )
            breakdown += claim.lines
            points += sum(ln.points for ln in claim.lines)
            if points > MAX_POINTS:
                breakdown.append(PointsLine(rule="cap", points=MAX_POINTS - points))
                points = MAX_POINTS
        detail = sale_detail(frame)
        lines = [
            PurchaseLine(
                sku=ln.sku,
                qty=ln.qty,
                price=ln.price,
                category=ln.category,
                brand=ln.brand,
                name=ln.name,
            )
            # as they earned: a return takes back from the same categories and brands, even
            # if the catalogue changes in between
            for ln in earned
        ]
        history_row = SaleRow(
            total=frame.total,
            lines=msgspec.json.encode(lines),
            breakdown=msgspec.json.encode(breakdown),
            fingerprint=detail_fingerprint(detail),
            line_points=(msgspec.json.encode(computed.weights) if computed.weights else None),
        )
        facts = (
            None
            if self._facts is None
            else self._facts.attach(merchant, sold(origin.channel, frame.total, lines))
        )
        attached: tuple[Attached, ...] = (history_row,) if facts is None else (history_row, facts)
        if claim is not None:
            attached += tuple(claim.attached)
        try:
            outcome = await self._execute(origin, frame, points, breakdown, detail, attached)
        except Refused:  # refused for certain: nothing applied, the new uses given back
            if claim is not None:
                await self._offers.release(origin, frame.op, claim)  # type: ignore[union-attr]
            raise
        if claim is not None and not outcome.ok:  # refused: nothing applied, uses given back
            await self._offers.release(origin, frame.op, claim)  # type: ignore[union-attr]
        return outcome

    async def _execute(
        self,
        origin: Origin,
        frame: Sale,
        points: int,
        breakdown: list[PointsLine],
        detail: bytes,
        attached: tuple[Attached, ...],
    ) -> Outcome:
        return await self._ledger.execute(
            Earn(
                op=frame.op,
                member=frame.member,
                points=points,
                origin=origin,
                kind="earn",
                breakdown=tuple(breakdown),
                detail=detail,
                sale=True,
                attached=attached,
            )
        )

    async def history(
        self, merchant: str, member: str, before: str | None = None, limit: int = 20
    ) -> History:
        purchases, nxt = await history(
            self._pool, merchant, member, None if before is None else int(before), limit
        )
        return History(member=member, purchases=purchases, next=nxt)
