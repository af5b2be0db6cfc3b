"""Which of a member's app/web sessions are connected, across every node, kept in Redis.

One hash per member (``Keys.presence``): field = session id, value = ``channel|node|expiry-ms``.
A node writes an entry when an app/web session is welcomed and deletes it when the session
ends; it refreshes the expiry of its own entries every ``interval`` seconds, so entries of a
node that died (kill -9, lost network) expire after ``ttl`` seconds. Every node that has
presence watchers for a member sweeps that member's expired entries on the same beat.

Every change (join, leave, sweep) publishes the member's full list as a ``presence`` frame on
the member's channel, from inside the same Lua call, so announcements follow the order of
changes; the feed of each node hands them to its sessions that asked for presence. A full
list (not a delta) makes the view converge: the last announcement is the current state.

The same hash enforces the per-member session limit across nodes: joining counts the other
live entries first, atomically. If Redis is unavailable the node falls back to counting its
own sessions only (fail open on the limit, no presence announced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from gateway.background import stop
from gateway.store.keys import PRESENCE_JOIN, PRESENCE_LEAVE, PRESENCE_SWEEP, Keys
from gateway.store.redis import REDIS_ERRORS, Redis
from protocol.messages import Peer

if TYPE_CHECKING:
    from gateway.auth import Principal

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


#: Sessions (and watched members) per refresh pipeline. Building a pipeline is Python work
#: that holds the event loop: 1,000 of each held it for 18 to 25 ms (a probe on this machine,
#: 2026-11-24), and every push due in that time waited. 100 of each: see BENCHMARKS.md.
REFRESH_CHUNK = 100


class PresenceBook:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        node_id: str,
        limit: int,
        interval: float,
        ttl: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._node = node_id
        self.limit = limit
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        self._join = redis.register_script(keys.lua(PRESENCE_JOIN))
        self._leave = redis.register_script(keys.lua(PRESENCE_LEAVE))
        self._sweep = redis.register_script(keys.lua(PRESENCE_SWEEP))
        #: Local fallback counts (used only while Redis is unavailable).
        self._local: Counter[str] = Counter()
        #: Ids of this node's recorded sessions that have not left: a refresh writes no other.
        self._live: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refreshes = 0

    # ------------------------------------------------------------------ sessions
    def _value(self, channel: str) -> str:
        return f"{channel}|{self._node}|{_now_ms() + self.ttl_ms}"

    async def join(self, session_id: str, principal: Principal) -> bool:
        """Record a member-scoped session; False when the member is at the limit."""
        member = principal.member
        assert member is not None
        try:
            res = await self._join(
                keys=[self._keys.presence(member), self._keys.member_channel(member)],
                args=[
                    session_id,
                    self._value(principal.channel),
                    _now_ms(),
                    self.limit,
                    member,
                    self.ttl_ms * 2,
                ],
            )
            ok = int(res) != 0
        except REDIS_ERRORS:
            log.warning("presence unavailable; per-member limit counted on this node only")
            ok = self._local[member] < self.limit
        if ok:
            self._local[member] += 1
            self._live.add(session_id)
        return ok

    def leave(self, session_id: str, principal: Principal) -> None:
        """Forget a session (in the background: the handler must not wait on Redis)."""
        member = principal.member
        assert member is not None
        self._local[member] -= 1
        if self._local[member] <= 0:
            del self._local[member]
        self._live.discard(session_id)
        self._spawn(self._remove(session_id, member))

    async def _remove(self, session_id: str, member: str) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self._leave(
                keys=[self._keys.presence(member), self._keys.member_channel(member)],
                args=[session_id, _now_ms(), member],
            )

    async def online(self, member: str) -> tuple[list[Peer], int]:
        """The member's live app/web sessions and the presence ``seq`` they correspond to
        (nothing and seq -1 if Redis is unavailable: below every real seq, so a feed never
        keeps it as the member's list)."""
        try:
            raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(
                self._keys.presence(member)
            )
        except REDIS_ERRORS:
            return [], -1
        now = _now_ms()
        peers = []
        seq = 0
        for field, value in sorted(raw.items()):
            name = field.decode() if isinstance(field, bytes) else field
            text = value.decode() if isinstance(value, bytes) else value
            if name == "~seq":
                seq = int(text)
                continue
            channel, _, rest = text.partition("|")
            node, _, expiry = rest.rpartition("|")
            if expiry.isdigit() and int(expiry) >= now:
                peers.append(Peer(session=name, channel=channel, node=node))
        return peers, seq

    # ------------------------------------------------------------------ upkeep
    def start(
        self,
        local_sessions: Callable[[], Iterable[tuple[str, Principal]]],
        watched: Callable[[], Iterable[str]],
    ) -> None:
        """Refresh this node's entries and sweep watched members every ``interval``."""
        self._task = asyncio.create_task(self._upkeep(local_sessions, watched), name="presence")

    async def _upkeep(
        self,
        local_sessions: Callable[[], Iterable[tuple[str, Principal]]],
        watched: Callable[[], Iterable[str]],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.refresh(
                    list(local_sessions()), list(watched()), spread=self.interval / 2
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("presence refresh failed", exc_info=True)
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    async def refresh(
        self, sessions: list[tuple[str, Principal]], watched: list[str], spread: float = 0.0
    ) -> None:
        """Refresh ``sessions``' entries and sweep ``watched`` members, ``REFRESH_CHUNK`` of
        each per pipeline, the pipelines paced evenly over ``spread`` seconds (no burst of Redis
        replies, and no long stretch without yielding: see ``REFRESH_CHUNK``)."""
        now = _now_ms()
        k = self._keys
        total = max(len(sessions), len(watched))
        n = REFRESH_CHUNK
        pause = spread / -(-total // n) if total else 0.0
        live = self._live
        for i in range(0, total, n):
            if i:
                await asyncio.sleep(pause)
            # Sessions that left since the list was taken are not written back (they would be
            # announced online until their entry expired).
            chunk = [(sid, p) for sid, p in sessions[i : i + n] if sid in live]
            if k.cluster:
                # A cluster pipeline sends EVALSHA without loading the script first (a master
                # promoted after a failover has an empty script cache): one call each, all at
                # once (they go to the shards that own the members' slots).
                await asyncio.gather(
                    *(
                        self._join(
                            keys=[k.presence(p.member or ""), k.member_channel(p.member or "")],
                            args=[
                                sid,
                                self._value(p.channel),
                                now,
                                0,
                                p.member or "",
                                self.ttl_ms * 2,
                            ],
                        )
                        for sid, p in chunk
                    ),
                    *(
                        self._sweep(
                            keys=[k.presence(member), k.member_channel(member)], args=[now, member]
                        )
                        for member in watched[i : i + n]
                    ),
                    return_exceptions=True,
                )
            else:
                await self._pipelined(chunk, watched[i : i + n], now)
            for sid, p in chunk:
                if sid not in live:  # left while the pipeline was in flight: delete it again
                    assert p.member is not None
                    self._spawn(self._remove(sid, p.member))
        self.refreshes += 1

    async def _pipelined(
        self, chunk: list[tuple[str, Principal]], watched: list[str], now: int
    ) -> None:
        k = self._keys
        redis: Any = self._redis  # a single Redis here: its pipeline runs scripts
        async with redis.pipeline(transaction=False) as pipe:
            for sid, p in chunk:
                member = p.member
                assert member is not None
                await self._join(
                    keys=[k.presence(member), k.member_channel(member)],
                    args=[sid, self._value(p.channel), now, 0, member, self.ttl_ms * 2],
                    client=pipe,
                )
            for member in watched:
                await self._sweep(
                    keys=[k.presence(member), k.member_channel(member)],
                    args=[now, member],
                    client=pipe,
                )
            with contextlib.suppress(*REDIS_ERRORS):
                await pipe.execute()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await stop(self._task)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
