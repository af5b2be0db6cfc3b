"""A member's tier: progress to the next, upgrades as soon as the qualifying points cross a
threshold, the evaluation date (downgrades too), and a merge's survivor keeping the higher of
both tiers. Every change is announced to the member's watchers (``tier_changed``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.events import MemberEventSink, WebhookEventSink
from gateway.members import Members, set_tier, tiers_of
from gateway.programme import Programme, Programmes, plain
from gateway.purchases import qualifying_by_member, qualifying_points
from gateway.wire import epoch_ms
from protocol.loyalty import TierChanged, TierInfo


class Tiers:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        programmes: Programmes,
        members: Members,
        events: MemberEventSink,
        hooks: WebhookEventSink | None = None,
    ) -> None:
        self._pool = pool
        self._programmes = programmes
        self._members = members
        self._events = events
        self._hooks = hooks

    async def info(self, programme: Programme, member: str, tier: str) -> TierInfo:
        """The member's tier and its progress to the next."""
        now = datetime.now(UTC)
        since = now - timedelta(days=programme.tier_window_days)
        q = await qualifying_points(self._pool, member, since)
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
            next_name=nxt.name if nxt else "",
            next_threshold=nxt.threshold if nxt else 0,
            to_next=max(0, nxt.threshold - q) if nxt else 0,
            rank=rank,
            tiers=len(programme.tiers),
        )

    async def _set(self, merchant: str, member: str, old: str, new: str, direction: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            changed = await set_tier(conn, merchant, member, old, new)
            if changed and self._hooks is not None:  # the event in the change's transaction
                await self._hooks.record(
                    conn,
                    merchant,
                    member,
                    "tier.changed",
                    {"member": member, "tier": new, "previous": old, "direction": direction},
                )
        if changed:
            await self._events.publish(
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
        return changed

    async def check_upgrade(self, merchant: str, member: str) -> str | None:
        """Upgrade as soon as the qualifying points cross a higher tier's threshold."""
        programme = await self._programmes.get(merchant)
        if not programme.tiers:
            return None
        for _ in range(3):
            current = await self._members.tier(merchant, member)
            since = datetime.now(UTC) - timedelta(days=programme.tier_window_days)
            target = programme.tier_for(await qualifying_points(self._pool, member, since))
            if target is None or programme.tier_rank(target.id) <= programme.tier_rank(current):
                return None
            if await self._set(merchant, member, current, target.id, "up"):
                return target.id
            # The tier changed since it was read (a concurrent sale's upgrade to a lower tier,
            # say): read both again rather than leave the member below what it earned.
        return None

    async def evaluate(self, merchant: str, at: datetime | None = None) -> dict[str, int]:
        """The evaluation date: every member gets the tier its window earns (down or up)."""
        programme = await self._programmes.get(merchant)
        tiers = await tiers_of(self._pool, merchant)
        earned = await qualifying_by_member(self._pool, merchant, at, programme.tier_window_days)
        counts = {"up": 0, "down": 0, "same": 0}
        for member, tier in tiers.items():
            target = programme.tier_for(earned.get(member, 0))
            new = target.id if target else ""
            if new == tier:
                counts["same"] += 1
                continue
            up = programme.tier_rank(new) > programme.tier_rank(tier)
            if await self._set(merchant, member, tier, new, "up" if up else "down"):
                counts["up" if up else "down"] += 1
        return counts

    async def after_merge(
        self, merchant: str, survivor: str, survivor_tier: str, source_tier: str
    ) -> None:
        """The survivor keeps the higher of both tiers (an upgrade is pushed), then its window,
        which now counts the source's sales, may lift it further."""
        programme = await self._programmes.get(merchant)
        if programme.tier_rank(source_tier) > programme.tier_rank(survivor_tier):
            await self._set(merchant, survivor, survivor_tier, source_tier, "up")
        await self.check_upgrade(merchant, survivor)
