"""What the domain packages announce besides balance changes (a tier change, a merge), and to
whom: a ``MemberEventSink`` pushes a frame to every session watching a member, on every node
(``gateway.fanout.MemberEvents`` is the one the node passes in); a ``WebhookEventSink`` writes
the event the merchant's webhook endpoints are sent (``gateway.webhooks.EventRecorder``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class MemberEventSink(Protocol):
    async def publish(self, merchant: str, member: str, frame: object) -> None:
        """Push ``frame`` (a protocol server frame) to the member's watchers; best effort."""
        ...


class WebhookEventSink(Protocol):
    """Where the domain packages write the events the merchants' webhooks are sent (a tier
    change, an enrolment, a merge, an erasure, a code used, a reward redeemed):
    ``gateway.webhooks.EventRecorder`` is the one the node passes in. A package writes its
    event in the transaction of the change (``conn``), so the event exists exactly when the
    change committed."""

    async def record(
        self, conn: Any, merchant: str, member: str, type: str, data: Mapping[str, Any]
    ) -> None:
        """Write the event in ``conn``'s transaction (nothing when no endpoint of the
        merchant is subscribed to ``type``)."""
        ...
