"""Per-member feeds on this node: one Redis channel subscription per watched member, shared by
every local session watching it, delivering changes in version order without gaps.

A feed subscribes to the member's channel, waits for Redis to confirm, then reads the cached
balance: any change not yet in the cache is published after the subscription took effect, so
it will arrive. Changes are delivered strictly in version order, each encoded once and the same
bytes queued to every session. A change that arrives ahead of a missing one is held briefly;
if the missing one does not come (a publisher crashed before publishing, Redis dropped it), the
feed reads the missing changes from the ledger in PostgreSQL. If even that fails, sessions get
an explicit ``resync`` frame: never a silent gap.

The member's channel also carries ``presence`` frames (see ``presence.py``); they go only to the
sessions that asked for presence and are not ordered by version (each is the full list).

When the fan-out connection to Redis is lost, redis-py reconnects and resubscribes; on every
reconnect each feed, once Redis confirms its channel again, compares its version with
PostgreSQL and fills what it missed (``_check``), since nothing published while the connection
was down reaches this node. The read loop also checks every feed when it sees the connection
fail (``_check_all``).

On a Redis Cluster (``Keys.cluster``) member channels are shard channels (SSUBSCRIBE): the
16384 slots are split into ``shards`` ranges, each with its own redis-py ``ClusterPubSub``
(one connection per master owning slots of that range: at most shards x masters), read by its
own task. redis-py moves a channel to its slot's new owner after a failover or a resharding
(MOVED, an unsolicited SUNSUBSCRIBE, a slot map refresh); each SSUBSCRIBE confirmation of a
feed already open means it was moved, so the feed is checked against PostgreSQL as after a
reconnect: what was published while it moved is filled, never silently missed. Broadcasts
stay on classic pattern pub/sub (a cluster carries it to every node).
"""

# long module: the feeds' ordering, gap and reconnect rules and their races, in one class (the
# cluster's sharded pub/sub is in shards.py)
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import msgspec

from gateway.errors import GatewayError
from gateway.fanout.feed import Feed, Joined, Subscriber
from gateway.fanout.shards import ShardedPubSub
from gateway.ledger import Change, Reads, balance_after
from gateway.store.keys import Keys
from gateway.store.redis import REDIS_ERRORS, Redis, repair_topology
from gateway.wire import text_frame
from protocol.codec import encode
from protocol.messages import BalanceChanged, Peer, Presence, Resync

log = logging.getLogger(__name__)
_change_decoder = msgspec.json.Decoder(BalanceChanged | Presence)

#: Seconds a change may wait for a missing predecessor before the feed reads it from the ledger.
GAP_WAIT = 0.05
#: Reads of the missing changes before the gap is announced as a ``resync``; the pause after a
#: failed read starts at ``GAP_RETRY_PAUSE`` and doubles (about 13 s in all).
GAP_READS = 8
GAP_RETRY_PAUSE = 0.05
#: Changes one catch-up read takes from the ledger (a feed behind a version a client saw).
CATCH_UP_PAGE = 100
#: Longest pause between two attempts of a feed's check after a fan-out reconnect.
CHECK_RETRY_MAX = 5.0
#: Seconds a feed nobody watches lingers before its channel is unsubscribed (absorbs churn).
LINGER = 5.0


class Feeds:
    """Every member feed of this node, over one pub/sub connection.

    ``presence`` reads a member's presence (peers, seq) from the store; ``on_broadcast`` gets
    each merchant-wide message (channel, data); ``on_reconnect`` runs after every reconnect of
    the fan-out connection, once its channels are asked for again (the broadcast replays the
    notices published meanwhile)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        reads: Reads,
        max_recovery: int = 100,
        *,
        presence: Callable[[str], Awaitable[tuple[list[Peer], int]]] | None = None,
        on_broadcast: Callable[[str, bytes], None] | None = None,
        on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None,
        shards: int = 1,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._reads = reads
        self._max_recovery = max_recovery
        self._feeds: dict[str, Feed] = {}
        self._pubsub = redis.pubsub()
        # Called by redis-py on every reconnect of the fan-out connection.
        self._resubscribe = self._pubsub.on_connect
        self._pubsub.on_connect = self._on_connect  # type: ignore[method-assign]
        #: On a cluster: one sharded pub/sub per slot range (see the module's docstring).
        self._shards = (
            ShardedPubSub(redis, shards, self._dispatch, self._check_all) if keys.cluster else None
        )
        self.reconnects = 0
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.gaps_filled = 0
        self.resyncs = 0
        self._closed = False
        self._on_broadcast = on_broadcast
        self._on_reconnect = on_reconnect
        self.presence_reader = presence

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        # An always-on subscription keeps the reader's connection subscribed.
        await self._pubsub.psubscribe(self._keys.broadcast_channel("*"))
        self._reader = asyncio.create_task(self._read_loop(), name="fanout-reader")
        if self._shards is not None:
            self._shards.start()

    async def close(self) -> None:
        self._closed = True  # a ledger batch still finishing delivers nothing here
        tasks = [t for t in (self._reader, *self._tasks) if t is not None]
        if self._shards is not None:
            await self._shards.close()
        for feed in self._feeds.values():
            if feed.filler is not None:
                tasks.append(feed.filler)
            if feed.linger is not None:
                feed.linger.cancel()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.aclose()

    def __len__(self) -> int:
        return len(self._feeds)

    async def _on_connect(self, connection: Any) -> None:
        # redis-py registers this callback after the first connect, so every call is a
        # reconnect: resubscribe first, then fill what was published while disconnected.
        # redis-py forgets a channel only when its UNSUBSCRIBE is answered, and subscribes
        # again to every channel it still lists: a feed that closed while Redis was down would
        # stay subscribed for good, with nobody behind it. Keep only the open feeds' channels.
        wanted = {self._keys.member_channel(m) for m in self._feeds}
        channels = self._pubsub.channels
        for channel in list(channels):
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            if name not in wanted:
                del channels[channel]
        await self._resubscribe(connection)
        self.reconnects += 1
        log.warning("fan-out connection re-established; checking %d feeds", len(self._feeds))
        # Each feed is checked once Redis confirms its channel again (the read loop sees the
        # confirmation): a check before that could miss a change published in between.
        for feed in self._feeds.values():
            if feed.ready.is_set():
                feed.rechecking = True
        if self._on_reconnect is not None:
            self._spawn(self._on_reconnect())

    def presence_watched(self) -> list[str]:
        """Members some local session watches with presence."""
        return [m for m, f in self._feeds.items() if f.presence]

    # ------------------------------------------------------------------ joining
    async def join(
        self, member: str, session: Subscriber, since: int | None, presence: bool = False
    ) -> Joined:
        """Add ``session`` to the member's feed (see :class:`Joined` for what it answers). The
        session receives every later change (and presence change); the caller must queue its
        reply before yielding."""
        feed = self._feeds.get(member)
        if feed is None:
            feed = Feed(member)
            self._feeds[member] = feed
            try:
                await self._open(feed)
            except BaseException:
                self._feeds.pop(member, None)
                feed.ready.set()
                self._spawn(self._unsubscribe(member))
                raise
        elif not feed.ready.is_set():
            await feed.ready.wait()
            if feed.balance is None:
                raise GatewayError("member feed could not be opened")
        if feed.linger is not None:
            feed.linger.cancel()
            feed.linger = None
        feed.joining += 1
        try:
            return await self._join_open(feed, session, since, presence)
        except BaseException:
            if not feed.sessions:
                self._linger(feed)  # else nobody would ever close it
            raise
        finally:
            feed.joining -= 1

    async def _join_open(
        self, feed: Feed, session: Subscriber, since: int | None, presence: bool
    ) -> Joined:
        member = feed.member
        # This node replied with a newer version than the channel has brought (its publish is
        # still on the way, or failed and waits for the relay), or the client resumes from a
        # version it saw elsewhere (another node delivered its own change at once, then died
        # before publishing it): the answer must not be older than what the client was told.
        # Read the rest from PostgreSQL.
        told = max(self._reads.version_floor(member), -1 if since is None else since)
        while told > feed.version:  # bounded by the changes that exist past the feed
            before = feed.version
            await self._catch_up(feed, min(told - feed.version, CATCH_UP_PAGE))
            if feed.version == before:
                break  # the ledger ends here (a ``since`` beyond it)
        if presence and feed.peers is None and self.presence_reader is not None:
            # The channel is subscribed: any announcement after this read updates feed.peers.
            # Read before the missed changes: a change delivered during this wait would be in
            # neither the missed list nor a push to this session.
            peers, seq = await self.presence_reader(member)
            if seq > feed.presence_seq:
                feed.peers, feed.presence_seq = peers, seq
        missed: list[BalanceChanged] = []
        recovered = True
        if since is not None and since > feed.version:
            # Still ahead of the ledger: the balance is the truth, said so explicitly, never a
            # "recovered" answer older than since.
            recovered = False
        elif since is not None and since < feed.version:
            while True:
                want = feed.version
                if want - since > self._max_recovery:
                    missed, recovered = [], False
                    break
                missed = await self._reads.history(member, since, want - since)
                if feed.version == want or (missed and missed[-1].version >= feed.version):
                    break
            missed = [m for m in missed if m.version <= feed.version]
        # No wait from here on: the session joins at exactly the version ``missed`` ends at.
        assert feed.balance is not None
        feed.sessions.add(session)
        peers_now: list[Peer] | None = None
        if presence:
            if feed.presence is None:
                feed.presence = set()
            feed.presence.add(session)
            peers_now = feed.peers or []
        elif feed.presence is not None:
            feed.presence.discard(session)
            if not feed.presence:
                feed.presence = None
        return Joined(feed.balance, missed, recovered, peers_now, feed.presence_seq)

    async def _catch_up(self, feed: Feed, limit: int) -> None:
        """Deliver the next ``limit`` changes from the ledger, ahead of the channel."""
        for frame in await self._reads.history(feed.member, feed.version, limit):
            if frame.version > feed.version:
                feed.pending.setdefault(frame.version, (frame, encode(frame)))
        self._advance(feed)

    def watches_presence(self, member: str, session: Subscriber) -> bool:
        """Whether ``session`` gets ``member``'s presence pushes."""
        feed = self._feeds.get(member)
        return feed is not None and feed.presence is not None and session in feed.presence

    def leave(self, member: str, session: Subscriber) -> None:
        feed = self._feeds.get(member)
        if feed is None:
            return
        feed.sessions.discard(session)
        if feed.presence is not None:
            feed.presence.discard(session)
            if not feed.presence:
                feed.presence = None
        if not feed.sessions:
            self._linger(feed)

    def _linger(self, feed: Feed) -> None:
        if feed.linger is None:
            loop = asyncio.get_running_loop()
            feed.linger = loop.call_later(LINGER, self._close_feed, feed)

    def _close_feed(self, feed: Feed) -> None:
        feed.linger = None
        if feed.sessions or feed.joining or self._feeds.get(feed.member) is not feed:
            return  # a join in progress lingers the feed again if it fails
        del self._feeds[feed.member]
        if feed.filler is not None:
            feed.filler.cancel()
        self._spawn(self._unsubscribe(feed.member))

    async def _unsubscribe(self, member: str) -> None:
        if member in self._feeds:
            # Watched again since the feed closed: its SUBSCRIBE may already be sent, and an
            # UNSUBSCRIBE after it would silence the new feed.
            return
        with contextlib.suppress(*REDIS_ERRORS):
            channel = self._keys.member_channel(member)
            if self._shards is not None:
                await self._shards.unsubscribe(self._keys.slot(member), channel)
            else:
                await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, member: str) -> None:
        channel = self._keys.member_channel(member)
        if self._shards is not None:
            await self._shards.subscribe(self._keys.slot(member), channel)
        else:
            await self._pubsub.subscribe(channel)

    async def _resubscribe_feed(self, feed: Feed) -> None:
        feed.rechecking = True
        try:
            await self._subscribe(feed.member)
        except REDIS_ERRORS:
            log.warning("re-subscribing %s failed", feed.member, exc_info=True)

    async def _open(self, feed: Feed) -> None:
        await self._subscribe(feed.member)
        async with asyncio.timeout(5):
            await feed.confirmed.wait()
        bal = await self._reads.balance(feed.member)
        if bal is None:
            raise GatewayError("member has no account")
        feed.balance = bal
        feed.ready.set()
        self._advance(feed)

    # ------------------------------------------------------------------ events
    async def _read_loop(self) -> None:
        backoff = 0.05
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("fan-out connection lost; resubscribing", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self._shards is not None:
                    await self._renew_broadcast()
                self._check_all()
                continue
            if msg is not None:
                self._dispatch(msg)

    async def _renew_broadcast(self) -> None:
        """Cluster: the broadcast subscription's connection is pinned to one node, which may
        be gone for good (a killed master): a new pub/sub, on a node of the refreshed slot map,
        subscribes again, and the notices published meanwhile are replayed."""
        repair_topology(self._redis)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        self._pubsub = self._redis.pubsub()
        self._resubscribe = self._pubsub.on_connect
        self._pubsub.on_connect = self._on_connect  # type: ignore[method-assign]
        try:
            await self._pubsub.psubscribe(self._keys.broadcast_channel("*"))
        except REDIS_ERRORS:
            return  # the next read fails too: tried again after the backoff
        self.reconnects += 1
        if self._on_reconnect is not None:
            self._spawn(self._on_reconnect())

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if isinstance(kind, bytes):
            kind = kind.decode()
        if kind in ("message", "smessage"):
            self._on_change(msg["channel"], msg["data"])
        elif kind == "pmessage":
            if self._on_broadcast is not None:
                self._on_broadcast(msg["channel"].decode(), msg["data"])
        elif kind in ("subscribe", "ssubscribe"):
            member = self._keys.member_from_channel(msg["channel"].decode())
            feed = self._feeds.get(member)
            if feed is not None:
                if kind == "ssubscribe" and feed.confirmed.is_set():
                    # redis-py moved the channel to its slot's new owner (failover,
                    # resharding): what was published meanwhile is read from PostgreSQL.
                    feed.rechecking = True
                feed.confirmed.set()
                if feed.rechecking:
                    feed.rechecking = False
                    self._start_check(feed)
        elif kind in ("unsubscribe", "sunsubscribe"):
            # Any order of a closing feed's UNSUBSCRIBE and a new feed's SUBSCRIBE that
            # still left the channel unsubscribed, or (cluster) the slot moved away: subscribe
            # again, then fill the gap.
            member = self._keys.member_from_channel(msg["channel"].decode())
            feed = self._feeds.get(member)
            if feed is not None and feed.confirmed.is_set():
                # Replies come in order: after this feed's confirmation, this one means
                # its channel is gone (the feed may still be reading its balance).
                self._spawn(self._resubscribe_feed(feed))

    def _on_change(self, channel: bytes, data: bytes) -> None:
        member = self._keys.member_from_channel(channel.decode())
        feed = self._feeds.get(member)
        if feed is None:
            return
        try:
            frame = _change_decoder.decode(data)
        except msgspec.DecodeError:
            log.error("undecodable change on %s", channel)
            return
        if isinstance(frame, Presence):
            if frame.seq <= feed.presence_seq:
                return  # older than what this feed already knows
            feed.peers, feed.presence_seq = frame.online, frame.seq
            if feed.presence:
                framed = text_frame(data)
                for s in tuple(feed.presence):
                    s.send_framed(framed)
            return
        if frame.version <= feed.version:
            return
        feed.pending[frame.version] = (frame, data)
        if feed.ready.is_set():
            self._advance(feed)

    def deliver_committed(self, changes: Sequence[Change]) -> None:
        """Changes this node has just committed, to its own watchers at once: before the
        replies go out, and without the round trip through Redis (as Socket.IO's adapter
        emits to the local members of a room). The same change coming back from Redis is
        then dropped as seen; one committed by another node meanwhile holds these back in
        order as any gap does (``_advance``)."""
        if self._closed:
            return
        feeds = self._feeds
        for c in changes:
            frame = c.frame
            feed = feeds.get(frame.member)
            if feed is None or frame.version <= feed.version:
                continue
            feed.pending[frame.version] = (frame, c.data)
            if feed.ready.is_set():
                self._advance(feed)

    def _advance(self, feed: Feed) -> None:
        """Deliver pending changes that are next in order; start a gap filler if stuck."""
        while feed.pending:
            nxt = feed.version + 1
            item = feed.pending.pop(nxt, None)
            if item is None:
                for v in [v for v in feed.pending if v <= feed.version]:
                    del feed.pending[v]
                break
            frame, data = item
            feed.balance = balance_after(frame)
            feed.deliver(data)
            self.delivered += 1
        if feed.pending and feed.filler is None:
            feed.filler = asyncio.create_task(self._fill_gap(feed))

    async def _fill_gap(self, feed: Feed) -> None:
        try:
            await asyncio.sleep(GAP_WAIT)
            delay = GAP_RETRY_PAUSE
            for _ in range(GAP_READS):
                if not feed.pending or self._feeds.get(feed.member) is not feed:
                    return
                target = max(feed.pending)
                try:
                    missing = await self._reads.history(
                        feed.member, feed.version, target - feed.version
                    )
                except GatewayError:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                for frame in missing:
                    if frame.version > feed.version and frame.version not in feed.pending:
                        feed.pending[frame.version] = (frame, encode(frame))
                self.gaps_filled += 1
                feed.filler = None
                self._advance(feed)
                if feed.filler is not None:
                    return  # a newer gap got its own filler
                if not feed.pending:
                    return
            if not feed.pending or self._feeds.get(feed.member) is not feed:
                return  # the channel closed the gap during the last pause
            # The ledger could not be read: say so explicitly rather than leave a gap.
            frame, _ = feed.pending[max(feed.pending)]
            feed.pending.clear()
            feed.balance = balance_after(frame)
            self.resyncs += 1
            feed.deliver(
                encode(
                    Resync(
                        member=feed.member,
                        balance=feed.balance,
                        reason="changes could not be recovered",
                    )
                )
            )
        finally:
            if feed.filler is asyncio.current_task():
                feed.filler = None

    def _check_all(self) -> None:
        """After a fan-out outage, compare every feed with the cache and fill what was missed."""
        for feed in list(self._feeds.values()):
            self._start_check(feed)

    def _start_check(self, feed: Feed) -> None:
        """One check per feed at a time: a new reconnect replaces the one still retrying (each
        outage would otherwise add one more task per feed, all retrying PostgreSQL)."""
        if feed.checker is not None and not feed.checker.done():
            feed.checker.cancel()
        feed.checker = self._spawn(self._check(feed))

    async def _check(self, feed: Feed) -> None:
        if not feed.ready.is_set():
            await feed.ready.wait()  # compare with the balance it opened with
            if feed.balance is None:
                return
        if not feed.presence:
            # Nobody here watches presence, so it is not read now; but the list this feed kept
            # may have missed announcements while disconnected: the next session to ask for it
            # reads it afresh (``_join_open``), rather than being told a closed app is online.
            feed.peers, feed.presence_seq = None, -1
        elif self.presence_reader is not None:
            peers, seq = await self.presence_reader(feed.member)
            if seq > feed.presence_seq:
                feed.peers, feed.presence_seq = peers, seq
                framed = text_frame(encode(Presence(member=feed.member, online=peers, seq=seq)))
                for s in tuple(feed.presence or ()):
                    s.send_framed(framed)
        # The changes published while disconnected will not come again (their outbox rows are
        # gone): this read is the only way to them, so it is retried, with backoff, for as
        # long as the feed is open, rather than leave its watchers on an older balance.
        delay = GAP_RETRY_PAUSE
        while self._feeds.get(feed.member) is feed:
            try:
                bal = await self._reads.balance_from_db(feed.member)
                if bal is not None and bal.version > feed.version and feed.ready.is_set():
                    await self._catch_up(feed, bal.version - feed.version)
                return
            except GatewayError:
                log.warning("checking %s after a fan-out reconnect failed; retrying", feed.member)
                await asyncio.sleep(delay * (0.5 + random.random()))  # nodes apart
                delay = min(delay * 2, CHECK_RETRY_MAX)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
