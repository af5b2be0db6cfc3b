"""Member events other than balance changes (``tier_changed``), pushed to every session
watching the member, on every node.

They travel on the merchant's member-events channel (``Keys.member_events_channel``), wrapped
in an envelope naming the member; every node pattern-subscribes to those channels and hands
the frame to its local sessions subscribed to that member (a POS after ``cashier_view`` or
``subscribe``, an app watching itself). The member channel itself carries only
``balance_changed`` frames, which the feeds order by version. Best effort like any pub/sub: a
session that was offline reads the tier from ``cashier_view`` or ``lookup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from gateway.background import stop
from gateway.store.keys import Keys
from gateway.store.redis import REDIS_ERRORS, Redis
from protocol.codec import encode

log = logging.getLogger(__name__)


class MemberEvent(msgspec.Struct, frozen=True):
    member: str
    frame: msgspec.Raw


_decoder = msgspec.json.Decoder(MemberEvent)


class Watcher(Protocol):
    @property
    def subscriptions(self) -> set[str]: ...

    def send_raw(self, data: bytes) -> None: ...


class MemberEvents:
    def __init__(self, redis: Redis, keys: Keys, sessions: Callable[[], Iterable[Watcher]]) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    async def publish(self, merchant: str, member: str, frame: object) -> None:
        payload = encode(MemberEvent(member=member, frame=msgspec.Raw(encode(frame))))
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.publish(self._keys.member_events_channel(merchant), payload)

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.psubscribe(self._keys.member_events_pattern())
        self._task = asyncio.create_task(self._read(), name="member-events")

    async def close(self) -> None:
        await stop(self._task)
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.aclose()

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("member events connection lost; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if msg is not None and msg.get("type") == "pmessage":
                self.deliver(msg["data"])

    def deliver(self, data: bytes) -> None:
        try:
            event = _decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.error("undecodable member event")
            return
        frame = bytes(event.frame)
        for s in list(self._sessions()):
            if event.member in s.subscriptions:
                s.send_raw(frame)
                self.delivered += 1
