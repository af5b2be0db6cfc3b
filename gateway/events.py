"""What the domain packages announce besides balance changes (a tier change, a merge), and to
whom: a ``MemberEventSink`` pushes a frame to every session watching a member, on every node
(``gateway.fanout.MemberEvents`` is the one the node passes in)."""

from __future__ import annotations

from typing import Protocol


class MemberEventSink(Protocol):
    async def publish(self, merchant: str, member: str, frame: object) -> None:
        """Push ``frame`` (a protocol server frame) to the member's watchers; best effort."""
        ...
