"""Merchant-wide broadcast: one ``notice`` frame to every live session of one merchant, on every
node.

``publish_notice`` encodes the frame once and publishes it on the merchant's broadcast channel
(``Keys.broadcast_channel``); every node pattern-subscribes to those channels (``Feeds``) and
``LocalBroadcast.deliver`` frames the received bytes once and writes the same bytes to each
local session of that merchant, without awaiting any of them, a chunk of sessions at a time
so the node's other work is not held up behind one broadcast. The admin endpoint
``POST /admin/broadcast`` (``gateway.api.broadcast``) calls ``publish_notice``.

Pub/sub does not keep what a node misses while its connection to Redis is down. So each
notice is also appended, in the same script call, to a capped stream (``Keys.notice_log``);
after a reconnect the node replays the notices of the last ``REPLAY_WINDOW_MS`` it has not
delivered (it remembers a digest of each of the last ``SEEN_MAX`` it delivered: the caller may
reuse a notice id, e.g. an offer's, for a new publish, which must not be taken for a replay),
so a notice published during the outage still reaches the node's sessions, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.background import stop
from gateway.errors import StoreUnavailable
from gateway.store.keys import PUBLISH_NOTICE, Keys
from gateway.store.redis import Redis, translate_errors
from gateway.wire import text_frame
from protocol.codec import encode
from protocol.messages import Notice

if TYPE_CHECKING:
    from gateway.fanout.feed import Subscriber

log = logging.getLogger(__name__)

#: Largest accepted notice payload (encoded JSON); the frame must stay under the protocol limit.
MAX_NOTICE_BYTES = 32 * 1024
#: Notices the log keeps (approximately: trimmed with ``MAXLEN ~``).
NOTICE_LOG_MAX = 1000
#: How far back a node replays notices after its fan-out connection came back: older ones are
#: stale news (the sessions that were connected then have mostly reconnected meanwhile).
REPLAY_WINDOW_MS = 60_000
#: Notices read back at most, newest first, after a reconnect.
REPLAY_MAX = 200
#: Notices (digests of their frames) a node remembers having delivered, so a replay never
#: delivers one twice.
SEEN_MAX = 4096


class _Head(msgspec.Struct):
    """What a node reads of a notice frame to deliver it once."""

    notice: str
    merchant: str
    at: int = 0


_head_decoder = msgspec.json.Decoder(_Head)


async def publish_notice(
    redis: Redis,
    keys: Keys,
    merchant: str,
    kind: str,
    payload: dict[str, Any],
    notice_id: str | None = None,
) -> tuple[Notice, int]:
    """Publish a notice to every session of ``merchant``; returns it and how many nodes
    received it (Redis PUBLISH count)."""
    notice = Notice(
        notice=notice_id or f"n-{uuid.uuid4().hex[:16]}",
        merchant=merchant,
        kind=kind,
        payload=payload,
        at=int(time.time() * 1000),
    )
    data = encode(notice)
    publish = redis.register_script(PUBLISH_NOTICE)
    with translate_errors("broadcast"):
        nodes = await publish(
            keys=[keys.notice_log()],
            args=[data, NOTICE_LOG_MAX, keys.broadcast_channel(merchant)],
        )
    return notice, int(nodes)


#: Sessions written between two yields to the event loop. Writing one frame to 17,000 sockets
#: in one go held a node's event loop for about 0.6 s in the broadcast benchmark (its own
#: HTTP reply to the broadcast came 534-655 ms late), and every command and push on that node
#: waited as long. In chunks, the rest of the node's work runs in between.
CHUNK = 500


class LocalBroadcast:
    """Delivers broadcast messages received on this node to this node's sessions: the sessions
    of the moment the message arrived, ``CHUNK`` at a time, one message after another (a
    session receives two broadcasts in the order they arrived)."""

    def __init__(
        self,
        keys: Keys,
        sessions_of: Callable[[str], Iterable[Subscriber]],
        redis: Redis | None = None,
    ) -> None:
        self._keys = keys
        self._sessions_of = sessions_of
        self._redis = redis
        self.delivered = 0
        self.replayed = 0
        self._queue: deque[tuple[tuple[Subscriber, ...], bytes]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _remember(self, data: bytes) -> bool:
        """Whether this notice frame is new to this node (then remembered). By the digest of
        the whole frame, which carries its merchant and publish time: a notice id reused for
        another publish is another notice."""
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def deliver(self, channel: str, data: bytes) -> None:
        if self._remember(data):  # else replayed already
            self._write_to(self._keys.merchant_from_broadcast(channel), data)

    async def replay(self) -> None:
        """After the fan-out connection came back: the notices of the last
        ``REPLAY_WINDOW_MS`` this node has not delivered, oldest first."""
        if self._redis is None:
            return
        try:
            with translate_errors("notice replay"):
                entries = await self._redis.xrevrange(self._keys.notice_log(), count=REPLAY_MAX)
        except StoreUnavailable:
            log.warning("notices could not be replayed after the fan-out reconnect")
            return
        since = int(time.time() * 1000) - REPLAY_WINDOW_MS
        for _, fields in reversed(entries or []):
            data = (fields or {}).get(b"n")
            if not isinstance(data, bytes):
                continue
            try:
                head = _head_decoder.decode(data)
            except msgspec.DecodeError:
                continue
            if head.at >= since and self._remember(data):
                self.replayed += 1
                self._write_to(head.merchant, data)

    def _write_to(self, merchant: str, data: bytes) -> None:
        sessions = tuple(self._sessions_of(merchant))
        if not sessions:
            return
        self._queue.append((sessions, text_frame(data)))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="broadcast")

    async def _write(self) -> None:
        queue = self._queue
        while queue:
            sessions, framed = queue[0]
            for i in range(0, len(sessions), CHUNK):
                if i:
                    await asyncio.sleep(0)
                chunk = sessions[i : i + CHUNK]
                for s in chunk:
                    s.send_framed(framed)
                self.delivered += len(chunk)
            queue.popleft()

    async def close(self) -> None:
        await stop(self._writer)
        self._queue.clear()
