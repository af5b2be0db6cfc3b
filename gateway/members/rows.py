"""What another package keeping rows per member does when the member is merged, erased or
exported: the members package drives merges and erasures, and each owner of member rows (the
purchase history, the reward codes) is passed in as a ``MemberRows``."""

from __future__ import annotations

from typing import Any, Protocol


class MemberRows(Protocol):
    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """Re-point the source's rows to the survivor, in the caller's transaction; returns how
        many moved, by the name the merge reports them under."""
        ...

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """Delete the personal data the rows hold for ``members`` (an erasure), in the caller's
        transaction; the amounts stay."""
        ...

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        """The member's rows for its data export, by section name."""
        ...


class TierKeeper(Protocol):
    async def after_merge(
        self, merchant: str, survivor: str, survivor_tier: str, source_tier: str
    ) -> None:
        """The survivor keeps the higher of both tiers, then whatever its qualifying points,
        which now count the source's sales, earn it."""
        ...
