"""The commands a ``Client`` has in flight: their order, their attempts, their journal entries.

A :class:`Call` is one command, from its first send to a definitive answer. It keeps the frame
as built (its ``op`` with it) and is sent again, under a new request id and the same ``op``,
after a timeout, a retryable error or a reconnect. Calls are sent in the order they were made
(an operation only once it is journaled), so operations reach the ledger in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import aiohttp
import msgspec

from loyalty_client.errors import (
    ClientClosed,
    CommandError,
    ConnectionClosed,
    ConnectionLost,
    OutcomeUnknown,
    ProtocolError,
    RequestTimeout,
)
from loyalty_client.events import ClientEvent, Settled
from loyalty_client.journal import Entry, Journal
from protocol.client import ClientSession
from protocol.codec import decode_client, encode
from protocol.codes import ErrorCode
from protocol.messages import ClientFrame, Error, ResultData

log = logging.getLogger("loyalty_client")


class Call:
    """One command until its answer is known."""

    __slots__ = (
        "data",
        "frame",
        "future",
        "op",
        "ready",
        "repeatable",
        "scope",
        "sent",
        "template",
        "uncertain",
    )

    def __init__(
        self, template: ClientFrame, op: str | None, repeatable: bool, scope: str = ""
    ) -> None:
        self.template = template
        self.data = encode(template)
        self.op = op
        self.repeatable = repeatable
        self.scope = scope
        self.frame: ClientFrame | None = None
        """As last sent (with its request id)."""
        self.ready = op is None
        """Journaled (or needs no journal): it may be sent."""
        self.sent = False
        """Sent on the current connection and not answered since."""
        self.uncertain = False
        """An attempt may have been applied (a timeout, a lost connection): only a definitive
        answer settles it."""
        self.future: asyncio.Future[ResultData] = _future()

    def renew(self) -> None:
        """Ready for another attempt (after a retryable answer)."""
        self.future = _future()
        self.sent = False


def _future() -> asyncio.Future[ResultData]:
    future: asyncio.Future[ResultData] = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
    return future


class Calls:
    def __init__(
        self,
        session: ClientSession,
        journal: Journal,
        emit: Callable[[ClientEvent], None],
        *,
        attempts: int,
        request_timeout: float,
        settle_interval: float,
    ) -> None:
        self._session = session
        self._journal = journal
        self._emit = emit
        self._attempts = attempts
        self._timeout = request_timeout
        self._settle_interval = settle_interval
        self._order: dict[int, Call] = {}
        self._keys: dict[int, int] = {}  # id(call) -> its key in _order
        self._n = 0
        self._by_rid: dict[str, Call] = {}
        self._lock = asyncio.Lock()
        self._settling: dict[int, asyncio.Task[None]] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        """The connection calls are sent on (``None`` while there is none)."""
        self.scope = ""
        """The scope of the current session (``Client.scope_key``)."""
        self.resent = 0
        """Attempts sent again (same ``op``, new request id): after a timeout, a retryable
        error or a reconnect."""
        self.settled = asyncio.Event()
        """Set while no operation's outcome is unknown."""
        self.settled.set()

    # ------------------------------------------------------------------ bookkeeping

    def _add(self, call: Call) -> None:
        self._n += 1
        self._order[self._n] = call
        self._keys[id(call)] = self._n
        if call.op is not None:
            self.settled.clear()

    def _drop(self, call: Call) -> None:
        key = self._keys.pop(id(call), None)
        if key is not None:
            self._order.pop(key, None)
        if call.frame is not None:
            self._by_rid.pop(call.frame.id, None)
        if not self.pending_ops():
            self.settled.set()

    async def _forget(self, call: Call) -> None:
        """Its answer is known: out of the journal, then out of the order."""
        if call.op is not None:
            await self._journal.remove(call.op)
        self._drop(call)

    def pending_ops(self) -> list[str]:
        return [c.op for c in self._order.values() if c.op is not None]

    # ------------------------------------------------------------------ sending

    async def pump(self) -> None:
        """Send, in order, every call not on the wire yet (up to the first not journaled)."""
        ws = self.ws
        if ws is None:
            return
        async with self._lock:
            for call in list(self._order.values()):
                if self.ws is not ws:
                    return
                if call.sent or call.future.done():
                    continue
                if not call.ready:
                    break
                if call.frame is None:
                    frame = msgspec.structs.replace(call.template, id=self._session.next_id())
                    data = self._session.send(frame)
                else:
                    data = self._session.retry(call.frame)
                    frame = decode_client(data)
                    self.resent += 1
                call.frame, call.sent = frame, True
                self._by_rid[frame.id] = call
                try:
                    await ws.send_str(data.decode())
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    return  # the connection is going: it is sent again on the next one

    async def send_raw(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        """A frame of the client's own (a ping, a refill), in line with the calls."""
        async with self._lock:
            if self.ws is ws:
                await ws.send_str(data.decode())

    async def attach(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A session was welcomed: send everything not answered yet, in order. Operations a
        journal recovered under another scope are left in the journal, unsent."""
        for call in list(self._order.values()):
            if call.scope not in ("", self.scope):
                log.warning(
                    "journal op %s belongs to scope %s, not %s", call.op, call.scope, self.scope
                )
                self._drop(call)
                task = self._settling.pop(id(call), None)
                if task is not None:
                    task.cancel()
        self.ws = ws
        await self.pump()

    def detach(self, lost: Sequence[ClientFrame]) -> None:
        """The connection is gone; ``lost`` are the frames it left unanswered."""
        self.ws = None
        for frame in lost:
            call = self._by_rid.get(frame.id)
            if call is None or call.future.done():
                continue
            if call.op is not None:
                call.uncertain = True
            if not call.repeatable:
                call.future.set_exception(
                    ConnectionLost(f"connection lost before the reply to {frame.id}")
                )
        self._by_rid.clear()
        for call in self._order.values():
            call.sent = False

    def answer(
        self,
        request: ClientFrame | None,
        *,
        data: ResultData | None = None,
        error: Error | None = None,
        exc: Exception | None = None,
    ) -> bool:
        """Settle the call ``request`` belongs to; False if none (a frame of the client's own,
        or a late reply to an attempt sent again since)."""
        if request is None:
            return False
        call = self._by_rid.pop(request.id, None)
        if call is None or call.future.done():
            return False
        if data is not None:
            call.future.set_result(data)
        elif error is not None:
            call.future.set_exception(CommandError(error, request))
        else:
            call.future.set_exception(exc or ProtocolError("no answer"))
        return True

    def _unsend(self, call: Call) -> None:
        """Its attempt timed out: the next pump sends it again (new request id, same op)."""
        if call.frame is not None:
            self._by_rid.pop(call.frame.id, None)
        call.sent = False

    def fail_all(self, exc: Exception) -> None:
        for call in list(self._order.values()):
            if not call.future.done():
                call.future.set_exception(exc)

    async def stop(self) -> None:
        tasks = list(self._settling.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ executing

    async def execute(
        self, template: ClientFrame, op: str | None, repeatable: bool, timeout: float | None
    ) -> ResultData:
        """Run one command to its answer (see ``Client``): its data, or an error raised."""
        call = Call(template, op, repeatable, self.scope)
        self._add(call)
        try:
            if op is not None:
                await self._journal.add(op, call.data, self.scope)  # before it is ever sent
                call.ready = True
            await self.pump()
            return await self._attempt(call, timeout or self._timeout)
        except asyncio.CancelledError:
            if call.ready and op is not None and not call.future.done():
                self._settle_later(call)  # the caller gave up, the operation may be applied
            else:
                self._drop(call)
            raise

    async def _wait(self, call: Call, timeout: float) -> bool:
        await asyncio.wait({call.future}, timeout=timeout)
        return call.future.done()

    async def _attempt(self, call: Call, timeout: float) -> ResultData:
        attempts = self._attempts if call.repeatable else 1
        for attempt in range(attempts):
            if not await self._wait(call, timeout):
                if call.sent:
                    call.uncertain = call.op is not None
                    if attempt + 1 < attempts:
                        self._unsend(call)
                        await self.pump()
                continue
            exc = call.future.exception()
            if exc is None:
                await self._forget(call)
                return call.future.result()
            if isinstance(exc, CommandError) and exc.retryable and call.repeatable:
                if exc.code == ErrorCode.TIMEOUT and call.op is not None:
                    call.uncertain = True
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
                    call.renew()
                    await self.pump()
                    continue
                if call.op is not None and call.uncertain:
                    self._settle_later(call)
                    raise OutcomeUnknown(call.op, str(exc)) from exc
            if isinstance(exc, CommandError | ProtocolError):
                await self._forget(call)  # a definitive answer (nothing applied, or unreadable)
            else:  # ConnectionClosed, ClientClosed, ConnectionLost: the journal keeps an op
                self._drop(call)
            raise exc
        if call.op is not None and call.uncertain:
            self._settle_later(call)
            raise OutcomeUnknown(call.op, f"no reply in {attempts} attempts of {timeout:g} s")
        await self._forget(call)  # never sent: nothing can have been applied
        raise RequestTimeout(f"no reply in {attempts} attempts of {timeout:g} s")

    # ------------------------------------------------------------------ settling

    def recover(self, entry: Entry) -> None:
        """An operation a previous run left in the journal: its outcome is unknown."""
        if entry.op in self.pending_ops():
            return
        call = Call(entry.frame, entry.op, True, entry.scope)
        call.ready = call.uncertain = True
        self._add(call)
        self._settle_later(call)

    def _settle_later(self, call: Call) -> None:
        if id(call) not in self._settling:
            task = asyncio.create_task(self._settle(call), name=f"settle {call.op}")
            self._settling[id(call)] = task
            task.add_done_callback(lambda _: self._settling.pop(id(call), None))

    async def _settle(self, call: Call) -> None:
        """Send ``call`` again with its ``op`` until the server answers it definitively."""
        assert call.op is not None
        retry = 0
        while True:
            if not call.future.done():
                if not await self._wait(call, self._settle_interval) and call.sent:
                    self._unsend(call)
                    await self.pump()
                continue
            exc = call.future.exception()
            if exc is None:
                await self._forget(call)
                self._emit(Settled(call.op, call.template, data=call.future.result()))
                return
            if isinstance(exc, CommandError) and not exc.retryable:
                await self._forget(call)
                self._emit(Settled(call.op, call.template, error=exc.error))
                return
            if isinstance(exc, ConnectionClosed | ClientClosed | ProtocolError):
                self._drop(call)  # stays in the journal for the next client
                return
            retry += 1
            await asyncio.sleep(min(self._settle_interval, 0.2 * 2**retry))
            call.renew()
            await self.pump()
