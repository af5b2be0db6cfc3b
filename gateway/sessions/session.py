"""One live websocket session and its bounded outbound queue.

Fan-out never awaits a session: ``send_raw`` appends bytes to the session's queue and a writer
task (started only while there is something to write, so idle sessions cost no task) drains it
to the socket. A session whose queue passes ``max_queue_bytes`` is closed with 3008 ("slow").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from protocol.codec import encode
from protocol.codes import CloseCode

if TYPE_CHECKING:
    from gateway.auth import Principal

_ids = itertools.count(1)


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
        "principal",
        "queue",
        "queued_bytes",
        "subscriptions",
        "writer",
        "ws",
    )

    def __init__(
        self, ws: web.WebSocketResponse, node: str, max_queue_bytes: int, rate: int
    ) -> None:
        self.ws = ws
        self.id = f"{node}-{next(_ids)}"
        self.principal: Principal | None = None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.max_queue_bytes = max_queue_bytes
        self.writer: asyncio.Task[None] | None = None
        self.closing = False
        self.subscriptions: set[str] = set()
        self.bucket = TokenBucket(rate, 2 * rate)
        self.bad_frames = 0
        self.inflight: set[asyncio.Task[Any]] = set()
        self.on_close: int | None = None

    def send(self, frame: object) -> None:
        self.send_raw(encode(frame))

    def send_raw(self, data: bytes) -> None:
        if self.closing:
            return
        size = len(data)
        if self.queued_bytes + size > self.max_queue_bytes:
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")
            return
        self.queue.append(data)
        self.queued_bytes += size
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        ws = self.ws
        try:
            while self.queue:
                data = self.queue.popleft()
                self.queued_bytes -= len(data)
                await ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            self.queue.clear()
            self.queued_bytes = 0
        finally:
            self.writer = None

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until queued frames are written."""
        writer = self.writer
        if writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), timeout)

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.on_close = code
        writer = self.writer
        if code == CloseCode.SLOW_CONSUMER:
            # Drop what the client would not read; the close frame goes out at once.
            self.writer = None
            if writer is not None:
                writer.cancel()
            self.queue.clear()
            self.queued_bytes = 0
        task = asyncio.create_task(self._close(code, reason, writer))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _close(self, code: int, reason: str, writer: asyncio.Task[None] | None) -> None:
        if writer is not None and not writer.cancelled():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer, 1.0)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])
