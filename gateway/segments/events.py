"""Membership changes as events others react to (offers now; reorder loops and webhooks
later): each ``MembershipChange`` goes to every ``MembershipSink`` the node passes in; the
node's is the merchant's Redis stream (``SegmentStream``), which consumers read with their own
consumer groups and which keeps about the latest ``SEGMENT_EVENTS_MAX`` entries. Best effort,
as member events are: the membership table is the truth, and a consumer that fell behind the
stream reads it (GET .../segments/{segment}/members)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from gateway.errors import StoreUnavailable
from gateway.store.keys import Keys
from gateway.store.redis import Redis, translate_errors

#: About how many entries each merchant's stream keeps (XADD MAXLEN ~).
SEGMENT_EVENTS_MAX = 100_000

Cause = Literal["sale", "return", "redemption", "tier", "profile", "merge", "recompute"]


class MembershipChange(msgspec.Struct, frozen=True, kw_only=True):
    merchant: str
    member: str
    entered: list[str]
    left: list[str]
    #: milliseconds since the Unix epoch
    at: int
    cause: Cause


class MembershipSink(Protocol):
    async def changed(self, changes: Sequence[MembershipChange]) -> None: ...


_encoder = msgspec.json.Encoder()


class SegmentStream:
    """XADD each change to its merchant's stream (field ``change``: the change as JSON)."""

    def __init__(self, redis: Redis, keys: Keys, maxlen: int = SEGMENT_EVENTS_MAX) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen

    async def changed(self, changes: Sequence[MembershipChange]) -> None:
        if not changes:
            return
        with contextlib.suppress(StoreUnavailable), translate_errors("segment events"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for c in changes:
                    pipe.xadd(
                        self._keys.segment_events(c.merchant),
                        {"change": _encoder.encode(c)},
                        maxlen=self._maxlen,
                        approximate=True,
                    )
                await pipe.execute()
