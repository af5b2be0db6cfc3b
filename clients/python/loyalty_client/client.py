"""``Client``: one logical session to the gateway over asyncio and aiohttp, on the sans-I/O
``protocol.client.ClientSession``.

What it does for the application (protocol/README.md is the rule book it follows):

* connects to one of several node URLs and says ``hello`` with a token from a callback,
  called again before every connection;
* reconnects after a close with exponential backoff and full jitter (0.5 s doubling up to
  20 s, reset once a session has lasted ``stable_after``), to the next URL; 3000-3499 and
  transport losses come back, 3500-3999 do not (``ConnectionClosed``), except 3501 (token
  expired): a new token from the callback, then back;
* resumes: every subscription again from its last version seen (``ClientSession.resume``), so
  the changes missed arrive as ``Changed`` (or a ``Resync`` when the server no longer has
  them), and every command still unanswered is sent again with its ``op``;
* refreshes the token before its ``exp`` (``refresh``), and sends an application ``ping``
  when the line is quiet; with nothing received within ``liveness`` heartbeats it drops the
  connection and reconnects;
* journals every operation (``op``) before it is sent and forgets it once answered; an
  operation whose reply does not come in time is sent again with the same ``op`` (the server
  applies it at most once and answers with the original outcome), and one still unknown after
  the attempts, or left by a cancelled caller or a crashed process, is settled in the
  background and reported as ``Settled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from loyalty_client.backoff import Backoff
from loyalty_client.calls import Calls
from loyalty_client.commands import Build, Commands, T
from loyalty_client.errors import (
    ClientClosed,
    ConnectionClosed,
    LoyaltyError,
    ProtocolError,
)
from loyalty_client.events import ClientEvent, Connected, Disconnected
from loyalty_client.journal import Journal, open_journal
from loyalty_client.tokens import TokenProvider, get_token, token_expiry
from protocol.client import ClientSession
from protocol.codec import decode_client
from protocol.codes import CloseCode, close_should_reconnect
from protocol.events import Failed, Gap, Ignored, Reply, Stale, Welcomed
from protocol.limits import ID_MAX_LEN
from protocol.messages import Scope, Subscribe, Welcome

log = logging.getLogger("loyalty_client")

_OP_SUFFIX = 24  # hex digits of randomness in a made op


def scope_key(scope: Scope) -> str:
    """One string for a session's scope: an op belongs to the scope it was sent under."""
    parts = (scope.kind, scope.merchant, scope.store, scope.terminal, scope.member, scope.channel)
    return "/".join(p or "" for p in parts)


class Client(Commands):
    """An asyncio client of the loyalty gateway.

    Args:
        urls: the nodes' base URLs (``http://host:port``, ``/ws`` is appended), tried in turn.
        token: returns a token (sync or async); called before every connection and refresh.
        journal: where operations are kept until answered: a path (an SQLite file), a
            :class:`~loyalty_client.journal.Journal`, or ``None`` (in memory: not durable).
            Use one journal per terminal (token scope).
        prefix: request ids are ``prefix<n>``; ``op_prefix`` (default: ``prefix``) starts the
            ops the client makes (``op_prefix`` + 24 hex digits).
        request_timeout: seconds one attempt of a command waits for its reply.
        attempts: attempts of a command that may be sent again (an ``op``, or a read), each
            ``request_timeout`` long, before it raises (an op: ``OutcomeUnknown``, settled on).
        refresh_margin: refresh the token this many seconds before its ``exp`` (at most a
            quarter of its lifetime before); ``None``: never refresh (3501 then reconnects
            with a new token).
        liveness: heartbeats (``welcome.heartbeat_ms``) without any frame after which the
            connection is taken for dead (an application ``ping`` goes out after one).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: TokenProvider,
        *,
        journal: Journal | str | os.PathLike[str] | None = None,
        prefix: str = "",
        op_prefix: str | None = None,
        client_name: str = "loyalty-client/0.1",
        request_timeout: float = 10.0,
        attempts: int = 3,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        stable_after: float = 5.0,
        refresh_margin: float | None = 60.0,
        liveness: float = 2.5,
        settle_interval: float | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("no gateway URL")
        self._token = token
        self._journal = open_journal(journal)
        self._own_journal = journal is None or isinstance(journal, str | os.PathLike)
        self._session = ClientSession(prefix)
        self._op_prefix = prefix if op_prefix is None else op_prefix
        if len(self._op_prefix) > ID_MAX_LEN - _OP_SUFFIX:
            raise ValueError(f"op prefix longer than {ID_MAX_LEN - _OP_SUFFIX} characters")
        self._client_name = client_name
        self._request_timeout = request_timeout
        self._attempts = max(1, attempts)
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self._refresh_margin = refresh_margin
        self._liveness = liveness
        self._http = http
        self._own_http = http is None
        self._events: asyncio.Queue[ClientEvent | None] = asyncio.Queue()
        self._calls = Calls(
            self._session,
            self._journal,
            self._emit,
            attempts=self._attempts,
            request_timeout=request_timeout,
            settle_interval=settle_interval or request_timeout,
        )
        self._run_task: asyncio.Task[None] | None = None
        self._welcomed = asyncio.Event()
        self._terminal: LoyaltyError | None = None
        self._closing = False
        self._refilling: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.welcome: Welcome | None = None
        """The current session's ``welcome`` (``None`` while not connected)."""
        self.url: str | None = None
        """The node URL of the current (or last) connection."""
        self.connections = 0
        """Sessions welcomed so far (1 after the first connect)."""

    # ------------------------------------------------------------------ public

    @property
    def session(self) -> ClientSession:
        """The protocol state (versions, subscriptions); read it, do not send through it."""
        return self._session

    @property
    def journal(self) -> Journal:
        return self._journal

    @property
    def connected(self) -> bool:
        return self._calls.ws is not None

    @property
    def pending_ops(self) -> list[str]:
        """Operations sent or to be sent whose outcome is not known yet, oldest first."""
        return self._calls.pending_ops()

    @property
    def resent(self) -> int:
        """Commands sent again so far (same ``op``, a new request id)."""
        return self._calls.resent

    def new_op(self) -> str:
        return f"{self._op_prefix}{uuid.uuid4().hex[:_OP_SUFFIX]}"

    async def connect(self, timeout: float | None = None) -> Welcome:
        """Start the connection (and the settling of what the journal holds from a previous
        run); returns the first ``welcome``. Raises ``ConnectionClosed`` on a terminal close."""
        if self._run_task is None:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            for entry in await self._journal.pending():
                self._calls.recover(entry)
            self._run_task = asyncio.create_task(self._run(), name="loyalty-client")
        wait = asyncio.create_task(self._welcomed.wait())
        try:
            done, _ = await asyncio.wait(
                {wait, self._run_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wait.cancel()
        if self._terminal is not None:
            raise self._terminal
        if not done or self.welcome is None:
            raise TimeoutError("no welcome in time (the client keeps trying)")
        return self.welcome

    async def close(self) -> None:
        """Stop: close the connection, fail the commands still waiting (``ClientClosed``).
        Operations not answered stay in the journal for the next client."""
        if self._closing:
            return
        self._closing = True
        if self._run_task is not None:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        for task in list(self._tasks):
            task.cancel()
        self._calls.fail_all(ClientClosed("client closed"))
        await self._calls.stop()
        if self._own_journal:
            await self._journal.close()
        if self._own_http and self._http is not None:
            await self._http.close()
        self._events.put_nowait(None)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Pushes and connection events, in order, until the client stops."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # for any other reader
                return
            yield event

    async def wait_settled(self, timeout: float | None = None) -> None:
        """Wait until no operation's outcome is unknown (the journal is empty)."""
        async with asyncio.timeout(timeout):
            await self._calls.settled.wait()

    # ------------------------------------------------------------------ commands

    async def _request(
        self,
        build: Build,
        kind: type[T],
        *,
        op: str | None = None,
        repeatable: bool = True,
        timeout: float | None = None,
    ) -> T:
        if self._run_task is None or self._closing:
            raise ClientClosed("connect() first" if self._run_task is None else "client closed")
        if self._terminal is not None:
            raise self._terminal
        template = decode_client(build(ClientSession()))  # validated; DecodeError if refused
        data = await self._calls.execute(template, op, repeatable, timeout)
        if not isinstance(data, kind):
            raise ProtocolError(f"expected a {kind.__name__} reply, got {type(data).__name__}")
        return data

    # ------------------------------------------------------------------ the connection

    def _emit(self, event: ClientEvent) -> None:
        self._events.put_nowait(event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        attempt, index = 0, 0
        while not self._closing:
            url = self._urls[index % len(self._urls)]
            code: int | None = None
            reason, lived = "", -1.0
            try:
                code, reason, lived = await self._connection(url)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # the token provider's own failure, say
                log.warning("connection attempt to %s failed", url, exc_info=True)
                reason = f"{type(exc).__name__}: {exc}"
            terminal = code is not None and not close_should_reconnect(code)
            if terminal and code != CloseCode.TOKEN_EXPIRED:
                self._terminal = ConnectionClosed(code, reason)
                self._calls.fail_all(self._terminal)
                self._emit(Disconnected(code, False, reason=reason))
                return
            if lived >= self._stable_after:
                attempt = 0
            delay = self._backoff.delay(0 if code == CloseCode.DRAINING else attempt)
            attempt += 1
            index += 1
            self._emit(Disconnected(code, True, delay, reason))
            await asyncio.sleep(delay)

    async def _connection(self, url: str) -> tuple[int | None, str, float]:
        """One connection: hello, welcome, resume, then read until it ends. Returns the close
        code (``None`` if none came), why, and how long the session lasted (-1: never
        welcomed)."""
        token = await get_token(self._token)
        assert self._http is not None
        self.url = url
        ws = await self._http.ws_connect(
            url.rstrip("/") + "/ws",
            autoping=False,
            heartbeat=None,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
        )
        try:
            welcome, code, reason = await self._handshake(ws, token)
            if welcome is None:
                return code, reason, -1.0
            started = time.monotonic()
            refresher = asyncio.create_task(self._refresher(token))
            try:
                code, reason = await self._read(ws, welcome.heartbeat_ms / 1000)
            finally:
                refresher.cancel()
            return code, reason, time.monotonic() - started
        finally:
            self._lost()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2.0)

    async def _handshake(
        self, ws: aiohttp.ClientWebSocketResponse, token: str
    ) -> tuple[Welcome | None, int | None, str]:
        await ws.send_str(self._session.hello(token, client=self._client_name).decode())
        refused = ""
        async with asyncio.timeout(self._connect_timeout):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return None, ws.close_code, refused or f"closed before welcome ({msg.type})"
                for event in self._session.receive(msg.data):
                    if isinstance(event, Welcomed):
                        await self._welcome(ws, event.welcome)
                        return event.welcome, None, ""
                    if isinstance(event, Failed):
                        refused = f"{event.error.code}: {event.error.message}"
                    else:
                        self._dispatch([event])

    async def _welcome(self, ws: aiohttp.ClientWebSocketResponse, welcome: Welcome) -> None:
        resumed = self.connections > 0
        self.welcome = welcome
        self.connections += 1
        self._calls.scope = scope_key(welcome.scope)
        for frame in self._session.resume():
            await ws.send_str(frame.decode())
        await self._calls.attach(ws)  # every command not answered yet, in order
        self._welcomed.set()
        self._emit(Connected(welcome, self.url or "", resumed))

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, beat: float
    ) -> tuple[int | None, str]:
        bound = max(beat * self._liveness, 0.5)
        last = time.monotonic()
        pinged = False
        while True:
            quiet = time.monotonic() - last
            if quiet >= bound:
                return None, f"nothing received for {quiet:.1f} s (heartbeat {beat:g} s)"
            wait = (beat if not pinged else bound) - quiet
            try:
                msg = await ws.receive(timeout=max(wait, 0.01))
            except TimeoutError:
                if not pinged and time.monotonic() - last >= beat:
                    pinged = True
                    self._spawn(self._ping(ws))
                continue
            last, pinged = time.monotonic(), False
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._dispatch(self._session.receive(msg.data))
            elif msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                pass
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return ws.close_code, str(msg.extra or "")
            else:  # CLOSING, CLOSED, ERROR: the transport went away
                return (ws.close_code if ws.close_code != 1006 else None), str(msg.data or "")

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await self._calls.send_raw(ws, self._session.ping())

    def _lost(self) -> None:
        self.welcome = None
        self._refilling.clear()
        self._calls.detach(self._session.connection_lost())

    async def _refresher(self, token: str) -> None:
        """Refresh the token before its ``exp`` for as long as the connection lasts."""
        if self._refresh_margin is None:
            return
        exp = token_expiry(token)
        while exp is not None:
            lifetime = exp - time.time()
            await asyncio.sleep(max(0.0, lifetime - min(self._refresh_margin, lifetime / 4)))
            try:
                fresh = await get_token(self._token)
                await self.refresh(fresh, timeout=self._request_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("token refresh failed; retrying", exc_info=True)
                await asyncio.sleep(min(5.0, max(0.2, (exp - time.time()) / 4)))
                continue
            exp = token_expiry(fresh)

    # ------------------------------------------------------------------ what arrives

    def _dispatch(self, events: Sequence[object]) -> None:
        for event in events:
            if isinstance(event, Reply):
                if not self._calls.answer(event.request, data=event.data):
                    self._internal_reply(event.request)
            elif isinstance(event, Failed):
                if event.request is None or not self._calls.answer(
                    event.request, error=event.error
                ):
                    self._internal_failure(event)
            elif isinstance(event, Ignored):
                if event.request is not None:
                    self._calls.answer(event.request, exc=ProtocolError(event.message))
                self._emit(event)
            elif isinstance(event, Gap):
                self._emit(event)
                self._refill(event.member)
            elif isinstance(event, Stale | Welcomed):
                pass
            else:
                self._emit(event)  # type: ignore[arg-type]

    def _internal_reply(self, request: object) -> None:
        if isinstance(request, Subscribe):
            self._refilling.discard(request.member)

    def _internal_failure(self, event: Failed) -> None:
        request = event.request
        if isinstance(request, Subscribe):  # a resume or refill of ours
            self._refilling.discard(request.member)
            if event.retryable:
                self._spawn(self._refill_later(request.member))
                return
        self._emit(event)

    def _refill(self, member: str) -> None:
        ws = self._calls.ws
        if ws is None or member in self._refilling:
            return  # the next connection resumes it
        self._refilling.add(member)
        self._spawn(self._calls.send_raw(ws, self._session.refill(member)))

    async def _refill_later(self, member: str) -> None:
        await asyncio.sleep(self._backoff.delay(2))
        if member in self._session.subscriptions:
            self._refill(member)
