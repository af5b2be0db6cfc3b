"""Member events other than balance changes (``tier_changed``, ``code_changed``,
``profile_changed``, ``merged``), pushed to every session watching the member, on every node.

They travel on the merchant's member-events channel (``Keys.member_events_channel``), wrapped
in an envelope naming the member; every node pattern-subscribes to those channels and hands
the frame to its local sessions subscribed to that member (a POS after ``cashier_view`` or
``subscribe``, an app after ``wallet`` or ``subscribe``). The member channel itself carries
only ``balance_changed`` frames, which the feeds order by version.

Each event carries ``seq``, the next value of the member's counter in Redis, set and
published in one script call (``keys.PUBLISH_MEMBER_EVENT``), so a watcher can tell that it
missed one: the next ``seq`` it sees is not one more than the last. Every node sees every
member's events (the pattern subscription) and remembers the latest ``seq`` per member
(bounded): ``seq_at_watch`` tells a session that starts watching a member which events its
view already covers. Pub/sub keeps nothing for a node that was cut off: after its connection
comes back, every local watcher gets a ``refetch`` push for each member it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from gateway.background import stop
from gateway.errors import StoreUnavailable
from gateway.store.keys import PUBLISH_MEMBER_EVENT, Keys
from gateway.store.redis import REDIS_ERRORS, Redis, repair_topology, translate_errors
from protocol.codec import encode
from protocol.wallet import Refetch

log = logging.getLogger(__name__)

#: Members whose latest event seq a node remembers.
LATEST_MAX = 100_000


class MemberEvent(msgspec.Struct, frozen=True):
    member: str
    frame: msgspec.Raw


class _Seq(msgspec.Struct):
    seq: int = 0


_decoder = msgspec.json.Decoder(MemberEvent)
_seq_decoder = msgspec.json.Decoder(_Seq)


class Watcher(Protocol):
    @property
    def subscriptions(self) -> set[str]: ...

    def send_raw(self, data: bytes) -> None: ...


class MemberEvents:
    def __init__(self, redis: Redis, keys: Keys, sessions: Callable[[], Iterable[Watcher]]) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._script = redis.register_script(PUBLISH_MEMBER_EVENT)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._latest: OrderedDict[str, int] = OrderedDict()
        self.delivered = 0
        self.refetches = 0

    async def publish(self, merchant: str, member: str, frame: object) -> None:
        """Push ``frame`` to the member's watchers on every node, numbered; best effort (a
        watcher that missed it learns so from the next one's ``seq``)."""
        with contextlib.suppress(StoreUnavailable), translate_errors("member event"):
            await self._script(
                keys=[self._keys.member_events_seq(member)],
                args=[encode(frame), member, self._keys.member_events_channel(merchant)],
            )

    async def current(self, member: str) -> int:
        """The member's latest event seq in Redis (0 when it has none, or Redis is away)."""
        try:
            raw = await self._redis.get(self._keys.member_events_seq(member))
        except REDIS_ERRORS:
            return 0
        return int(raw) if raw is not None else 0

    def seq_at_watch(self, member: str, current: int) -> int:
        """The seq a view read after a session started watching ``member`` is current at:
        the higher of the counter read before (``current``) and the latest event this node
        delivered. Later events are pushed to the session."""
        return max(current, self._latest.get(member, 0))

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.psubscribe(self._keys.member_events_pattern())
        self._task = asyncio.create_task(self._read(), name="member-events")

    async def close(self) -> None:
        await stop(self._task)
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.aclose()

    async def _renew(self) -> None:
        """Cluster: the subscription's connection is pinned to one node, which may be gone
        for good (a killed master): subscribe again through a new pub/sub, on a node of the
        refreshed slot map (the read loop then tells every watcher to refetch)."""
        repair_topology(self._redis)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        self._pubsub = self._redis.pubsub()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.psubscribe(self._keys.member_events_pattern())

    async def _read(self) -> None:
        backoff = 0.05
        lost = False
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("member events connection lost; retrying", exc_info=True)
                lost = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self._keys.cluster:
                    await self._renew()
                continue
            if lost:
                # redis-py has subscribed again (it does on its reconnect): what was published
                # meanwhile is gone, so every watcher here is told to read afresh.
                lost = False
                self.refetch_all("member events reconnected")
            if msg is not None and msg.get("type") == "pmessage":
                self.deliver(msg["data"])

    def deliver(self, data: bytes) -> None:
        try:
            event = _decoder.decode(data)
            seq = _seq_decoder.decode(event.frame).seq
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.error("undecodable member event")
            return
        latest = self._latest
        latest[event.member] = seq
        latest.move_to_end(event.member)
        while len(latest) > LATEST_MAX:
            latest.popitem(last=False)
        frame = bytes(event.frame)
        for s in list(self._sessions()):
            if event.member in s.subscriptions:
                s.send_raw(frame)
                self.delivered += 1

    def refetch_all(self, reason: str) -> None:
        """Tell every local watcher that it may have missed its members' events."""
        for s in list(self._sessions()):
            for member in list(s.subscriptions):
                s.send_raw(
                    encode(Refetch(member=member, seq=self._latest.get(member, 0), reason=reason))
                )
                self.refetches += 1
