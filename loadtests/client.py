"""One websocket to a gateway node, driven by the sans-I/O ``protocol.client.ClientSession``.

A :class:`Link` owns the socket and a reader task. The protocol session builds and validates
every command and turns every received frame into events; the link stamps each frame with its
receipt time (``time.monotonic_ns()``, one clock for every process on the machine, so a reply
read in one worker and a push read in another compare) and resolves the pending request it
answers. Pushes and other events go to ``on_events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from protocol.client import ClientSession, Event, Failed, Reply, Welcomed
from protocol.messages import ClientFrame, Hello
from protocol.version import SUPPORTED_VERSIONS

#: Marker a broadcast scenario puts in its message; links look for it in every raw frame.
BROADCAST_MARK = b"lt-bc-"

EventsCallback = Callable[["Link", list[Event], int], None]
RawCallback = Callable[["Link", bytes, int], None]
CloseCallback = Callable[["Link", int | None], None]

_link_ids = itertools.count(1)


class LinkClosed(ConnectionError):
    pass


class Link:
    """A websocket session. ``proto`` survives reconnects (versions, subscriptions)."""

    __slots__ = (
        "close_code",
        "failure",
        "futures",
        "http",
        "name",
        "on_close",
        "on_events",
        "on_raw",
        "proto",
        "reader",
        "undigested",
        "url",
        "ws",
    )

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        name: str,
        on_events: EventsCallback | None = None,
        on_raw: RawCallback | None = None,
        on_close: CloseCallback | None = None,
    ) -> None:
        self.http = http
        self.url = url.rstrip("/") + "/ws"
        self.name = name
        self.proto = ClientSession(prefix=f"{name[:30]}.")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.futures: dict[str, asyncio.Future[tuple[Event, int]]] = {}
        self.on_events = on_events
        self.on_raw = on_raw
        self.on_close = on_close
        self.close_code: int | None = None
        self.failure: str | None = None
        self.undigested = 0

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def connect(self, token: str, timeout: float = 10.0, client: str = "loadtest") -> Any:
        """Open the socket and authenticate; returns the ``welcome`` frame."""
        self.close_code = None
        self.ws = await self.http.ws_connect(
            self.url, autoping=True, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
        )
        self.reader = asyncio.create_task(self._read())
        hello = Hello(
            id=self.proto.next_id(), versions=list(SUPPORTED_VERSIONS), token=token, client=client
        )
        event, _ = await self.request(hello, timeout)
        if not isinstance(event, Welcomed):
            code = event.error.code if isinstance(event, Failed) else type(event).__name__
            await self.close()
            raise LinkClosed(f"hello refused: {code}")
        return event.welcome

    async def request(self, frame: ClientFrame, timeout: float) -> tuple[Event, int]:
        """Send ``frame`` (its ``id`` from ``proto.next_id()``); wait for its reply event and
        the reply's receipt time. Raises ``TimeoutError`` or :class:`LinkClosed`."""
        return await self.request_sent(frame.id, self.proto.send(frame), timeout)

    async def request_sent(self, rid: str, data: bytes, timeout: float) -> tuple[Event, int]:
        """Like :meth:`request` for a frame the protocol session already built and registered
        (e.g. one of ``proto.resume()``'s subscriptions)."""
        ws = self.ws
        if ws is None or ws.closed:
            raise LinkClosed("not connected")
        fut: asyncio.Future[tuple[Event, int]] = asyncio.get_running_loop().create_future()
        self.futures[rid] = fut
        try:
            await ws.send_frame(data, WSMsgType.TEXT)
            async with asyncio.timeout(timeout):
                return await fut
        except (ConnectionError, RuntimeError) as exc:
            raise LinkClosed(str(exc) or type(exc).__name__) from None
        finally:
            self.futures.pop(rid, None)

    async def send(self, frame: ClientFrame) -> None:
        """Fire and forget (the reply goes to ``on_events``)."""
        ws = self.ws
        if ws is None or ws.closed:
            raise LinkClosed("not connected")
        await ws.send_frame(self.proto.send(frame), WSMsgType.TEXT)

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async for msg in ws:
                now = time.monotonic_ns()
                if msg.type != WSMsgType.TEXT:
                    continue
                data: str = msg.data
                raw = data.encode()
                if self.on_raw is not None and BROADCAST_MARK in raw:
                    # a broadcast notice only needs its receipt time: skip decoding it, as
                    # the naive baseline's clients do
                    self.on_raw(self, raw, now)
                    continue
                try:
                    events = self.proto.receive(raw)
                except Exception as exc:  # a frame the helper cannot digest: count, read on
                    self.undigested += 1
                    self.failure = f"{type(exc).__name__}: {exc}"
                    continue
                rest: list[Event] = []
                for ev in events:
                    if isinstance(ev, Reply | Failed | Welcomed):
                        rid = _request_id(ev)
                        fut = self.futures.get(rid) if rid is not None else None
                        if fut is not None and not fut.done():
                            fut.set_result((ev, now))
                            if not isinstance(ev, Reply):
                                continue
                    rest.append(ev)
                if rest and self.on_events is not None:
                    self.on_events(self, rest, now)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # a broken socket ends the session like a close
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.close_code = ws.close_code
            for fut in self.futures.values():
                if not fut.done():
                    fut.set_exception(LinkClosed(f"closed with {ws.close_code}"))
            if self.on_close is not None:
                self.on_close(self, ws.close_code)

    async def close(self, timeout: float = 2.0) -> None:
        ws, reader = self.ws, self.reader
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout)
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        self.ws = None
        self.reader = None


def _request_id(ev: Event) -> str | None:
    if isinstance(ev, Welcomed):
        return ev.welcome.id
    request = ev.request  # type: ignore[union-attr]
    return None if request is None else request.id


def connectors(source_ips: list[str] | None) -> list[aiohttp.ClientSession]:
    """One HTTP client session per source address (each with its own ephemeral port range)."""
    sessions = []
    for ip in source_ips or [None]:  # type: ignore[list-item]
        conn = aiohttp.TCPConnector(
            limit=0,
            local_addr=(ip, 0) if ip else None,
            force_close=False,
            enable_cleanup_closed=False,
        )
        sessions.append(aiohttp.ClientSession(connector=conn))
    return sessions
