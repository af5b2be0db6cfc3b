"""One live websocket session and its bounded outbound path.

Fan-out never awaits a session. A server frame is framed once (``wire.text_frame``: an
unmasked websocket text frame, the same bytes for every receiver) and written straight into the
session's transport while the transport's own buffer is below ``WRITE_HIGH``; that costs no
task and no copy per session. Above it, frames wait in a per-session queue drained by a writer
task that exists only while there is a backlog, so idle sessions own no task and no queue.
When transport buffer + queue would pass ``max_queue_bytes`` the session is closed with 3008
(slow consumer) and its backlog dropped; the other sessions are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.wire import text_frame
from protocol.codec import encode
from protocol.codes import CloseCode

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.sessions.ordering import Ordering

_ids = itertools.count(1)

#: Transport buffer (bytes) up to which frames are written directly; above it they queue.
WRITE_HIGH = 64 * 1024
#: The writer task resumes writing once the transport buffer is back below this.
WRITE_LOW = 16 * 1024
#: Seconds a server-initiated close waits for the client's close frame before dropping the TCP
#: connection (aiohttp's default is 10 s; a drain must fit in GATEWAY_DRAIN_SECONDS).
CLOSE_TIMEOUT = 2.0
#: Seconds a close (token expiry, too many bad frames, a drain) waits for the commands already
#: running to reply before its close frame: a command read before the close is applied, so its
#: reply must reach the client. The ledger's own command timeout (10 s) answers before it.
REPLY_GRACE = 12.0
#: Seconds a close waits for the queued frames to reach the client before it drops them.
FLUSH_TIMEOUT = 1.0


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Session:
    __slots__ = (
        "__weakref__",
        "bad_frames",
        "bucket",
        "closing",
        "id",
        "inflight",
        "max_queue_bytes",
        "on_close",
        "order",
        "presence",
        "principal",
        "queue",
        "queued_bytes",
        "reply_deadline",
        "sealed",
        "seen",
        "subscriptions",
        "transport",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        node: str,
        max_queue_bytes: int,
        rate: int,
        tick: int = 0,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.id = f"{node}-{next(_ids)}"
        self.principal: Principal | None = None
        self.queue: deque[bytes] | None = None
        self.queued_bytes = 0
        self.max_queue_bytes = max_queue_bytes
        self.writer: asyncio.Task[None] | None = None
        #: No more frames are read (a close has begun); replies still go out until ``sealed``.
        self.closing = False
        #: No more frames are sent: the close frame is on its way.
        self.sealed = False
        #: Event-loop time until which a close waits for the replies of running commands.
        self.reply_deadline = 0.0
        self.subscriptions: set[str] = set()
        #: The order of this session's commands (``ordering.Ordering``), made by its first
        #: command that needs one: an idle session holds none.
        self.order: Ordering | None = None
        #: Members whose presence this session watches (None until it asks).
        self.presence: set[str] | None = None
        self.bucket = TokenBucket(rate, 2 * rate)
        self.bad_frames = 0
        self.inflight: set[asyncio.Task[Any]] = set()
        self.on_close: int | None = None
        #: Heartbeat tick at which this session last received a frame (``Heartbeat``).
        self.seen = tick

    # ------------------------------------------------------------------ sending
    def send(self, frame: object) -> None:
        self.send_framed(text_frame(encode(frame)))

    def send_raw(self, data: bytes) -> None:
        """Send an already encoded JSON frame."""
        self.send_framed(text_frame(data))

    def send_framed(self, framed: bytes) -> None:
        """Send a websocket frame made by ``text_frame`` (shared by every receiver)."""
        if self.sealed:
            return
        t = self.transport
        if t is None or t.is_closing():
            return
        if not self.queue and t.get_write_buffer_size() <= WRITE_HIGH:
            t.write(framed)
            return
        size = len(framed)
        if self.queued_bytes + size + t.get_write_buffer_size() > self.max_queue_bytes:
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")
            return
        if self.queue is None:
            self.queue = deque()
        self.queue.append(framed)
        self.queued_bytes += size
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        t = self.transport
        q = self.queue
        assert t is not None and q is not None
        delay = 0.002
        try:
            while q:
                if t.is_closing():
                    q.clear()
                    self.queued_bytes = 0
                    return
                if t.get_write_buffer_size() > WRITE_LOW:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                delay = 0.002
                while q and t.get_write_buffer_size() <= WRITE_HIGH:
                    data = q.popleft()
                    self.queued_bytes -= len(data)
                    t.write(data)
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None
            if not q and self.queue is q:
                self.queue = None

    @property
    def backlog(self) -> int:
        """Bytes waiting to reach this client (queue + transport buffer)."""
        t = self.transport
        buffered = 0 if t is None or t.is_closing() else t.get_write_buffer_size()
        return self.queued_bytes + buffered

    # ------------------------------------------------------------------ closing
    def close_soon(self, code: int, reason: str, grace: float = REPLY_GRACE) -> None:
        """Close with ``code``: read no more frames; let the commands already running reply
        (for at most ``grace`` seconds) and the queued frames go out (``FLUSH_TIMEOUT``), then
        send the close frame. A slow consumer's close drops its backlog and sends at once."""
        loop = asyncio.get_running_loop()
        if self.closing:
            # Already closing (a token expiry, say) when the drain closes everyone: the
            # shorter of the two graces holds.
            self.reply_deadline = min(self.reply_deadline, loop.time() + grace)
            return
        self.closing = True
        self.on_close = code
        self.reply_deadline = loop.time() + grace
        commands = tuple(self.inflight)
        if code == CloseCode.SLOW_CONSUMER:
            # Drop what the client would not read; the close frame follows what the transport
            # already holds.
            self._drop_backlog()
            commands = ()
        task = asyncio.create_task(self._close(code, reason, commands))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    def _drop_backlog(self) -> None:
        self.sealed = True
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.cancel()
        if self.queue is not None:
            self.queue.clear()
        self.queued_bytes = 0

    async def _close(self, code: int, reason: str, commands: tuple[asyncio.Task[Any], ...]) -> None:
        loop = asyncio.get_running_loop()
        pending = set(commands)
        while pending:  # until they end or the deadline, which a later close may bring forward
            left = self.reply_deadline - loop.time()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.1))
        writer = self.writer
        if writer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), FLUSH_TIMEOUT)
        # Nothing may follow the close frame (RFC 6455 5.5.1): a backlog the client did not
        # read in time is dropped with any reply still to come.
        self._drop_backlog()
        # aiohttp's close() first waits for the transport to drain, without a bound: a client
        # that stopped reading would hold it forever. Bound it, then drop the connection.
        clean = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT + 1.0):
                await self.ws.close(code=code, message=reason.encode()[:120])
                clean = True
        t = self.transport
        if not clean and t is not None:
            t.abort()  # also when closing: close() would wait for the buffer to drain
