"""The member events that move segments: a ``MemberEventSink`` the node passes to tiers,
profiles and merges in place of its own, which forwards every event and then has the member's
segments re-evaluated (right after, off the reply: ``Segments.soon``) after a tier change, a
profile edit or a merge (the duplicate leaves its segments, the survivor's are evaluated with
what it now holds)."""

from __future__ import annotations

from gateway.events import MemberEventSink
from gateway.segments.service import Segments
from protocol.loyalty import MemberMerged, TierChanged
from protocol.wallet import ProfileChanged


class SegmentTriggers:
    def __init__(self, events: MemberEventSink, segments: Segments) -> None:
        self._events = events
        self._segments = segments

    async def publish(self, merchant: str, member: str, frame: object) -> None:
        await self._events.publish(merchant, member, frame)
        if isinstance(frame, TierChanged):
            self._segments.soon(merchant, [member], "tier")
        elif isinstance(frame, ProfileChanged):
            self._segments.soon(merchant, [member], "profile")
        elif isinstance(frame, MemberMerged):
            self._segments.soon(merchant, [member, frame.into], "merge")
