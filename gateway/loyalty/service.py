"""The loyalty programme's operations, shared by the websocket commands (``commands.py``) and
the admin API (``gateway/api``). Every points change goes through the ledger; refusals raise
``Refused`` with their stable error code."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from gateway.errors import GatewayError, Refused
from gateway.ledger.apply import epoch_ms
from gateway.ledger.engine import Ledger
from gateway.ledger.model import Earn, Origin, SaleRecord
from gateway.ledger.reads import Reads
from gateway.loyalty import directory, sales
from gateway.loyalty.directory import Profile
from gateway.loyalty.earning import Earning, detail_fingerprint, sale_detail
from gateway.loyalty.expiry import run_expiry
from gateway.loyalty.gdpr import erase_member, export_member
from gateway.loyalty.identity import (
    invalid,
    mint_pass,
    normalise_card,
    normalise_email,
    normalise_phone,
    verify_pass,
)
from gateway.loyalty.live import MemberEvents
from gateway.loyalty.merge import MergeResult, merge_members
from gateway.loyalty.programme import Programme, Programmes, plain
from gateway.loyalty.replies import member_balance, refused
from gateway.loyalty.rewards import RewardsMixin
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.loyalty import (
    History,
    Member,
    Offer,
    Pass,
    PointsItem,
    PurchaseLine,
    Return,
    ReturnReceipt,
    TierChanged,
    TierInfo,
)
from protocol.messages import Outcome, PointsLine, Sale, SaleReceipt

log = logging.getLogger(__name__)


def _dt(v: datetime | None) -> int:
    return 0 if v is None else epoch_ms(v)


class Loyalty(RewardsMixin):
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        ledger: Ledger,
        reads: Reads,
        events: MemberEvents,
        secret: str,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.reads = reads
        self.events = events
        self.secret = secret
        self.programmes = Programmes(pool)
        self.earning = Earning(pool, self.programmes)

    # ------------------------------------------------------------------ identity
    def identities(
        self,
        programme: Programme,
        phone: str | None = None,
        email: str | None = None,
        card: str | None = None,
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        if phone is not None:
            out["phone"] = normalise_phone(phone, programme.region)
        if email is not None:
            out["email"] = normalise_email(email)
        if card is not None:
            out["card"] = normalise_card(card)
        return out

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
        programme = await self.programmes.get(merchant)
        ids = self.identities(programme, phone, email, card)
        if "phone" not in ids and "email" not in ids:
            raise invalid("enrolment needs a phone number or an email address")
        member, created = await directory.enrol(self.pool, merchant, ids, name, channel, store)
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
            found: str | None = verify_pass(self.secret, merchant, qr)
        else:
            programme = await self.programmes.get(merchant)
            ((kind, value),) = self.identities(programme, phone, email, card).items()
            if only is not None:
                if not await directory.identifies(self.pool, merchant, kind, value, only):
                    raise nobody
                return await self.member(merchant, only)
            found = await directory.find_member(self.pool, merchant, kind, value)
        if found is None:
            raise nobody
        # An identity (or a pass) of a merged duplicate finds the member it was merged into.
        m = await self.member(merchant, await directory.resolve(self.pool, found))
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
        bal = await self.reads.balance(member)
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
            self.pool, merchant, await directory.resolve(self.pool, member)
        )
        if prof is None or (prof.erased and not erased):
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
        return prof

    def issue_pass(self, merchant: str, member: str) -> Pass:
        token, expires = mint_pass(self.secret, merchant, member)
        return Pass(member=member, token=token, expires_at=expires)

    # ------------------------------------------------------------------ sales and history
    async def sale(self, origin: Origin, frame: Sale) -> Outcome:
        """Points for a sale, posted with the sale's purchase-history row in one ledger
        transaction (group-committed). A retry with the same op replays the first receipt,
        even if the rules or the member's tier changed in between."""
        merchant = origin.merchant
        programme = await self.programmes.get(merchant)
        tier = ""
        if programme.tiers:  # the tier multiplier needs the member's tier
            prof = await directory.profile(self.pool, merchant, frame.member)
            tier = prof.tier if prof else ""
        computed = await self.earning.compute(merchant, frame, tier)
        detail = sale_detail(frame)
        lines = [
            PurchaseLine(sku=ln.sku, qty=ln.qty, price=ln.price, category=ln.category, name=ln.name)
            for ln in frame.lines
        ]
        outcome = await self.ledger.execute(
            Earn(
                op=frame.op,
                member=frame.member,
                points=computed.points,
                origin=origin,
                kind="earn",
                breakdown=computed.breakdown,
                detail=detail,
                sale=SaleRecord(
                    total=frame.total,
                    lines=msgspec.json.encode(lines),
                    breakdown=msgspec.json.encode(list(computed.breakdown)),
                    fingerprint=detail_fingerprint(detail),
                    line_points=msgspec.json.encode(computed.weights) if computed.weights else None,
                ),
            )
        )
        if outcome.ok:
            try:
                await self.check_upgrade(merchant, frame.member)
            except GatewayError:
                log.warning("tier check after sale %s failed", frame.op, exc_info=True)
        return outcome

    async def history(
        self, merchant: str, member: str, before: str | None = None, limit: int = 20
    ) -> History:
        purchases, nxt = await sales.history(
            self.pool, merchant, member, None if before is None else int(before), limit
        )
        return History(member=member, purchases=purchases, next=nxt)

    # ------------------------------------------------------------------ returns
    async def return_sale(self, origin: Origin, frame: Return) -> ReturnReceipt:
        plan = await sales.plan_return(self.pool, origin.merchant, frame)
        if isinstance(plan, Outcome):
            raise refused(plan)
        net = plan.restored - plan.clawback
        # A failure here (``unavailable``, ``timeout``) leaves the return's row under this op:
        # the client retries the same op, which finds it. Deleting it here could delete the row
        # of a return that an earlier attempt of the same op did apply.
        outcome = plan.recorded or await self.ledger.execute(
            Earn(
                op=frame.op,
                member=plan.member,
                points=net,
                origin=origin,
                kind="return",
                contra="issuance",
                clamp=True,
                owe=True,
                breakdown=(
                    PointsLine(rule="return", points=-plan.clawback),
                    PointsLine(rule="refund", points=plan.restored),
                ),
                detail=plan.fingerprint,
            )
        )
        if not outcome.ok:
            await sales.forget_return(self.pool, origin.merchant, frame.op, plan.fingerprint)
            raise refused(outcome)
        receipt = outcome.data
        assert isinstance(receipt, SaleReceipt)
        return ReturnReceipt(
            op=frame.op,
            sale=frame.sale,
            member=receipt.member,
            clawback=plan.clawback,
            restored=plan.restored,
            applied=receipt.points,
            uncollected=receipt.points - net,
            breakdown=[PointsItem(rule=b.rule, points=b.points) for b in receipt.breakdown],
            balance=member_balance(receipt.balance),
        )

    # ------------------------------------------------------------------ tiers
    async def tier_info(self, programme: Programme, member: str, tier: str) -> TierInfo:
        now = datetime.now(UTC)
        since = now - timedelta(days=programme.tier_window_days)
        q = await sales.qualifying_points(self.pool, member, since)
        cur = programme.tier(tier)
        rank = programme.tier_rank(tier)
        nxt = programme.tiers[rank] if rank < len(programme.tiers) else None
        return TierInfo(
            tier=tier,
            name=cur.name if cur else "",
            multiplier=plain(cur.multiplier) if cur else "1",
            qualifying=q,
            window_days=programme.tier_window_days,
            next=nxt.id if nxt else None,
            next_threshold=nxt.threshold if nxt else 0,
            to_next=max(0, nxt.threshold - q) if nxt else 0,
        )

    async def _set_tier(
        self, merchant: str, member: str, old: str, new: str, direction: str
    ) -> bool:
        with translate_errors("tier update"):
            changed = await self.pool.fetchval(
                """INSERT INTO member_profiles (member_id, merchant_id, tier, tier_since)
                   VALUES ($1, $2, $4, now())
                   ON CONFLICT (member_id) DO UPDATE SET tier = $4, tier_since = now()
                    WHERE member_profiles.tier = $3
                   RETURNING 1""",
                member,
                merchant,
                old,
                new,
            )
        if changed:
            await self.events.publish(
                merchant,
                member,
                TierChanged(
                    member=member,
                    tier=new,
                    previous=old,
                    direction="up" if direction == "up" else "down",
                    at=epoch_ms(datetime.now(UTC)),
                ),
            )
        return bool(changed)

    async def check_upgrade(self, merchant: str, member: str) -> str | None:
        """Upgrade as soon as the qualifying points cross a higher tier's threshold."""
        programme = await self.programmes.get(merchant)
        if not programme.tiers:
            return None
        for _ in range(3):
            prof = await directory.profile(self.pool, merchant, member)
            current = prof.tier if prof else ""
            since = datetime.now(UTC) - timedelta(days=programme.tier_window_days)
            target = programme.tier_for(await sales.qualifying_points(self.pool, member, since))
            if target is None or programme.tier_rank(target.id) <= programme.tier_rank(current):
                return None
            if await self._set_tier(merchant, member, current, target.id, "up"):
                return target.id
            # The tier changed since it was read (a concurrent sale's upgrade to a lower tier,
            # say): read both again rather than leave the member below what it earned.
        return None

    async def evaluate_tiers(self, merchant: str, at: datetime | None = None) -> dict[str, int]:
        """The evaluation date: every member gets the tier its window earns (down or up)."""
        programme = await self.programmes.get(merchant)
        with translate_errors("tier evaluation"):
            # As of ``at`` but never later than the database's clock, which stamps the sales:
            # an instant ahead of it (node clock skew) would drop tiers early.
            rows = await self.pool.fetch(
                f"""WITH t AS (SELECT LEAST(COALESCE($2::timestamptz, now()), now()) AS at)
                    SELECT m.id, COALESCE(p.tier, '') AS tier,
                           {sales.qualifying_expr("m.id", "t.at - make_interval(days => $3)", "t.at")} AS q
                      FROM t, members m LEFT JOIN member_profiles p ON p.member_id = m.id
                     WHERE m.merchant_id = $1""",
                merchant,
                at,
                programme.tier_window_days,
            )
        counts = {"up": 0, "down": 0, "same": 0}
        for r in rows:
            target = programme.tier_for(max(0, int(r["q"])))
            new = target.id if target else ""
            if new == r["tier"]:
                counts["same"] += 1
                continue
            up = programme.tier_rank(new) > programme.tier_rank(r["tier"])
            if await self._set_tier(merchant, r["id"], r["tier"], new, "up" if up else "down"):
                counts["up" if up else "down"] += 1
        return counts

    # ------------------------------------------------------------------ offers
    def offers(self, programme: Programme, tier: str) -> list[Offer]:
        now = datetime.now(UTC)
        return [
            Offer(
                offer=r.id,
                name=r.name,
                multiplier=plain(r.multiplier),
                bonus=r.bonus,
                min_total=r.min_total,
                sku=r.sku,
                category=r.category,
                ends_at=_dt(r.ends_at),
            )
            for r in programme.rules
            if r.kind == "promotion" and r.active(now) and (r.tier is None or r.tier == tier)
        ]

    # ------------------------------------------------------------------ points expiry
    async def run_expiry(
        self, now: datetime | None = None, merchant: str | None = None, drain: bool = False
    ) -> int:
        """Expire the points of inactive members (see ``expiry.run_expiry``); returns how many
        members were expired."""
        return await run_expiry(self, now, merchant, drain)

    # ------------------------------------------------------------------ merging duplicates
    async def merge(self, origin: Origin, survivor: str, source: str, op: str) -> MergeResult:
        """Merge the duplicate ``source`` into ``survivor`` (see ``merge.py``)."""
        return await merge_members(self, origin, survivor, source, op)

    # ------------------------------------------------------------------ GDPR
    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        """Everything the programme holds about the member (see ``gdpr.export_member``)."""
        return await export_member(self, merchant, member)

    async def erase(self, merchant: str, member: str) -> str | None:
        """Erase the member's personal data (see ``gdpr.erase_member``); returns the member
        erased, or None if ``member`` is not the merchant's."""
        return await erase_member(self, merchant, member)
