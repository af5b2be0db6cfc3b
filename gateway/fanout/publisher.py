"""Turns committed ledger entries into ``balance_changed`` frames and publishes them.

One pipeline per batch: for each change, one Lua call updates the cached balance (only if
newer) and publishes the encoded frame on the member's channel, so the cache and the stream
of events never disagree about order. Successfully published changes are reported to the
outbox so their rows can be deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.ledger.apply import epoch_ms
from gateway.ledger.model import Entry
from gateway.store.keys import APPLY_EVENT, Keys
from gateway.store.redis import Redis, translate_errors
from protocol.codec import encode
from protocol.messages import BalanceChanged, Cause


def change_frame(e: Entry) -> BalanceChanged:
    return BalanceChanged(
        member=e.member,
        posted=e.posted_after,
        held=e.held_after,
        available=e.posted_after - e.held_after,
        version=e.version,
        cause=Cause(kind=e.kind, op=e.op, channel=e.channel, store=e.store),
        at=epoch_ms(e.at),
    )


class Publisher:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        on_published: Callable[[Sequence[tuple[str, int]]], None] | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(APPLY_EVENT)
        self.on_published = on_published

    async def __call__(self, entries: Sequence[Entry]) -> None:
        await self.publish(entries)

    async def publish(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        keys = self._keys
        with translate_errors("publish"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for e in entries:
                    payload = encode(change_frame(e))
                    await self._script(
                        keys=[keys.balance(e.member), keys.member_channel(e.member)],
                        args=[e.version, e.posted_after, e.held_after, payload],
                        client=pipe,
                    )
                await pipe.execute()
        if self.on_published is not None:
            self.on_published([(e.member, e.version) for e in entries])
