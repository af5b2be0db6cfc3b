"""The ``/ws`` endpoint: accept, authenticate with ``hello``, then serve commands.

Commands are read in order and each runs as its own task so a POS can pipeline; replies carry
the request id. The order they keep among themselves is declared where each is registered
(``router.py``) and kept by ``ordering.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMessage, WSMsgType, web

from gateway import logs
from gateway.errors import AuthError, GatewayError
from gateway.fanout import Feeds, PresenceBook
from gateway.metrics import Metrics
from gateway.sessions.core import ordering
from gateway.sessions.heartbeat import Heartbeat
from gateway.sessions.registry import Registry
from gateway.sessions.router import Call, Router, error_frame
from gateway.sessions.session import CLOSE_TIMEOUT, Session
from gateway.settings import SessionSettings
from protocol.codec import DecodeError, decode_client
from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Error, Hello, Scope, Welcome
from protocol.version import SUPPORTED_VERSIONS, negotiate

if TYPE_CHECKING:
    from gateway.auth import Principal

log = logging.getLogger(__name__)

#: Commands one session may have in flight; past this the session stops reading.
MAX_INFLIGHT = 64


class Endpoint:
    """``/ws`` with everything it needs, passed in by the node: its settings and name, the
    session registry, the command router, the heartbeat, presence (the per-member session
    limit), the feeds (a closed session leaves them), token checks (``verify``), the
    member-to-merchant lookup (``owner_of``), metrics, and how long in-flight commands may
    take to finish when a session ends (``drain_seconds``)."""

    def __init__(
        self,
        settings: SessionSettings,
        node_id: str,
        registry: Registry,
        router: Router,
        heartbeat: Heartbeat,
        presence: PresenceBook,
        feeds: Feeds,
        verify: Callable[[str], Principal],
        owner_of: Callable[[str], Awaitable[str | None]],
        metrics: Metrics,
        drain_seconds: float,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.registry = registry
        self.router = router
        self.heartbeat = heartbeat
        self.presence = presence
        self.feeds = feeds
        self.verify = verify
        self.owner_of = owner_of
        self.metrics = metrics
        self.drain_seconds = drain_seconds

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await websocket(self, request)


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """A browser's page may open ``/ws`` when it came from this node (its ``Origin`` names the
    host the request is addressed to) or from an origin the operator allowed; ``null`` (a
    sandboxed frame, a file) and everything else may not."""
    origin = origin.lower()
    if origin in allowed:
        return True
    scheme, sep, netloc = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and netloc == host.lower()


async def websocket(ep: Endpoint, request: web.Request) -> web.StreamResponse:
    cfg = ep.settings
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request.host, cfg.allowed_origins):
        # Refused before the upgrade: a page elsewhere must not ride a shopper's browser into
        # a session (cross-site websocket hijacking). Tills and servers send no Origin.
        ep.metrics.origin_refused.inc()
        return web.json_response(
            {"error": "origin_forbidden", "message": "this page's origin may not open /ws"},
            status=403,
        )
    # No per-socket heartbeat and no autoping: the node's ``Heartbeat`` pings every session
    # from one timer, and the read loop answers pings and notes pongs itself.
    ws = web.WebSocketResponse(
        heartbeat=None,
        max_msg_size=cfg.max_transport_frame,
        compress=False,
        autoping=False,
        timeout=CLOSE_TIMEOUT,
    )
    await ws.prepare(request)
    registry = ep.registry
    if registry.draining:
        await ws.close(code=CloseCode.DRAINING, message=b"node draining")
        return ws
    if len(registry) >= cfg.max_sessions:
        ep.metrics.close(CloseCode.NODE_FULL)
        await ws.close(code=CloseCode.NODE_FULL, message=b"node full")
        return ws
    if registry.pending >= cfg.max_pending:
        # Idle sockets that never say hello may hold only so many slots: the rest are kept for
        # tills and apps that do (each pending one is closed after GATEWAY_AUTH_TIMEOUT).
        ep.metrics.close(CloseCode.NODE_FULL)
        await ws.close(code=CloseCode.NODE_FULL, message=b"node busy: too many awaiting hello")
        return ws
    session = Session(
        ws,
        request.transport,
        ep.node_id,
        cfg.max_queue_bytes,
        cfg.rate_per_second,
        ep.heartbeat.tick,
    )
    registry.connected(session)
    logs.bind(session=session.id)  # every line this session's handling writes names it
    try:
        await _serve(ep, session)
    finally:
        registry.forget(session)
        for member in session.subscriptions:
            ep.feeds.leave(member, session)
        for task in list(session.inflight):
            task.cancel()
        code = session.on_close or ws.close_code
        if code is not None:
            ep.metrics.close(code)
    return ws


async def _close(session: Session, code: CloseCode, reason: str) -> None:
    session.close_soon(code, reason)
    await asyncio.gather(*session.inflight, return_exceptions=True)


async def _serve(ep: Endpoint, session: Session) -> None:
    hello = await _hello(ep, session)
    if hello is not None and await _welcome(ep, session, *hello):
        await _commands(ep, session)


async def _hello(ep: Endpoint, session: Session) -> tuple[Hello, int] | None:
    """The first frame, which must be a ``hello`` of a version this node speaks; None when it
    is not (the session is closed with why)."""
    try:
        async with asyncio.timeout(ep.settings.auth_timeout):
            msg = await _receive(ep, session)
    except TimeoutError:
        await _close(session, CloseCode.AUTH_TIMEOUT, "no hello in time")
        return None
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    try:
        frame = _decode(msg.data)
    except DecodeError as exc:
        session.send(Error(id=exc.request_id, code=exc.code.value, message=exc.message))
        await _close(session, CloseCode.PROTOCOL_VIOLATION, "first frame must be hello")
        return None
    if not isinstance(frame, Hello):
        session.send(
            Error(
                id=getattr(frame, "id", None),
                code=ErrorCode.NOT_AUTHENTICATED.value,
                message=ErrorCode.NOT_AUTHENTICATED.description,
            )
        )
        await _close(session, CloseCode.TOKEN_INVALID, "not authenticated")
        return None
    version = negotiate(frame.versions)
    if version is None:
        session.send(
            Error(
                id=frame.id,
                code=ErrorCode.UNSUPPORTED_VERSION.value,
                message=f"server supports versions {list(SUPPORTED_VERSIONS)}",
            )
        )
        await _close(session, CloseCode.UNSUPPORTED_VERSION, "unsupported version")
        return None
    return frame, version


async def _welcome(ep: Endpoint, session: Session, frame: Hello, version: int) -> bool:
    """Check the hello's token (and, for an app, its member and the member's session limit),
    then welcome the session; False when it was closed instead."""
    try:
        principal = ep.verify(frame.token)  # the node's secret, keys, leeway
    except AuthError as exc:
        session.send(error_frame(frame.id, exc))
        code = (
            CloseCode.TOKEN_EXPIRED
            if exc.code == ErrorCode.TOKEN_EXPIRED
            else CloseCode.TOKEN_INVALID
        )
        await _close(session, code, exc.message)
        return False
    member_scoped = principal.kind == "app" and principal.member is not None
    if member_scoped:
        # The token's member must be one of the token's merchant: else it would count in (and
        # show in the presence of) another merchant's member, and crowd out its real sessions.
        try:
            owner = await ep.owner_of(principal.member or "")
        except GatewayError as exc:
            session.send(error_frame(frame.id, exc))
            await _close(session, CloseCode.INTERNAL, "store unavailable: reconnect")
            return False
        if owner != principal.merchant:
            session.send(
                error_frame(frame.id, AuthError("the token's member is not its merchant's"))
            )
            await _close(session, CloseCode.TOKEN_INVALID, "token member unknown")
            return False
    if member_scoped and not await ep.presence.join(session.id, principal):
        session.send(
            Error(
                id=frame.id,
                code=ErrorCode.MEMBER_SESSIONS_FULL.value,
                message=ErrorCode.MEMBER_SESSIONS_FULL.description,
                retryable=True,
            )
        )
        await _close(session, CloseCode.MEMBER_SESSIONS_FULL, "member has too many sessions")
        return False
    session.principal = principal
    logs.bind(merchant=principal.merchant)
    ep.registry.admit(session)
    if ep.registry.draining:
        await _close(session, CloseCode.DRAINING, "node draining: reconnect to another node")
        return False
    session.send(
        Welcome(
            id=frame.id,
            version=version,
            session=session.id,
            node=ep.node_id,
            heartbeat_ms=int(ep.settings.heartbeat * 1000),
            scope=Scope(
                kind=principal.kind,
                merchant=principal.merchant,
                store=principal.store,
                terminal=principal.terminal,
                member=principal.member,
                channel=principal.channel,
            ),
        )
    )
    return True


async def _commands(ep: Endpoint, session: Session) -> None:
    """Read and run commands until the session closes, then let the running ones finish."""
    cfg = ep.settings
    while not session.closing:
        msg = await _receive(ep, session)
        if session.closing:
            break  # a close began while this frame was awaited: it is not applied
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            _on_frame(ep, session, msg.data)
            while len(session.inflight) >= MAX_INFLIGHT:
                # Not reading is this node's doing, not the peer's: keep the heartbeat from
                # taking the wait for a dead peer (close 3003) while commands are slow.
                session.seen = ep.heartbeat.tick
                await asyncio.wait(
                    session.inflight, timeout=cfg.heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
        elif msg.type == WSMsgType.ERROR:
            # Transport-level violation (e.g. a frame above the hard limit): aiohttp has
            # already closed the socket with 1009 or 1002. A peer reaped by the heartbeat
            # also lands here (its transport was aborted, ``on_close`` already says 3003).
            return
        else:  # CLOSE, CLOSING, CLOSED
            break
    if session.inflight:
        with contextlib.suppress(Exception):
            await asyncio.wait(session.inflight, timeout=ep.drain_seconds)


async def _receive(ep: Endpoint, session: Session) -> WSMessage:
    """The next data or close message; every frame received (pongs included) marks the session
    alive for the node's heartbeat, and pings are answered here."""
    ws = session.ws
    while True:
        msg = await ws.receive()
        session.seen = ep.heartbeat.tick
        if msg.type is WSMsgType.PONG:
            continue
        if msg.type is WSMsgType.PING:
            if not session.closing:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
            continue
        return msg


def _decode(data: str | bytes) -> object:
    """A text message's command; a binary message is refused whatever it holds (every frame
    is one text message: a client that sends binary has a bug worth seeing)."""
    if isinstance(data, bytes):
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "a frame is a text message, not binary")
    return decode_client(data)


def _on_frame(ep: Endpoint, session: Session, data: str | bytes) -> None:
    cfg = ep.settings
    # Every frame takes a token, a malformed one too, and only an accepted one (decoded and
    # within the rate) ends a run of malformed frames: interleaving valid frames cannot keep a
    # stream of garbage from reaching ``max_bad_frames``.
    try:
        frame = _decode(data)
    except DecodeError as exc:
        session.bucket.take()
        session.bad_frames += 1
        session.send(Error(id=exc.request_id, code=exc.code.value, message=exc.message))
        if session.bad_frames >= cfg.max_bad_frames:
            session.close_soon(CloseCode.PROTOCOL_VIOLATION, "too many malformed frames")
        return
    rid = getattr(frame, "id", None)
    p = session.principal
    if p is not None and p.expires < time.time():  # between two heartbeats, per command
        session.send(Error(id=rid, code=ErrorCode.TOKEN_EXPIRED.value, message="token expired"))
        session.close_soon(CloseCode.TOKEN_EXPIRED, "token expired: refresh before exp")
        return
    if ep.registry.draining:
        session.send(
            Error(
                id=rid,
                code=ErrorCode.DRAINING.value,
                message=ErrorCode.DRAINING.description,
                retryable=True,
            )
        )
        return
    if not session.bucket.take():
        session.send(
            Error(
                id=rid,
                code=ErrorCode.RATE_LIMITED.value,
                message=ErrorCode.RATE_LIMITED.description,
                retryable=True,
            )
        )
        return
    if isinstance(frame, Hello):
        session.send(
            Error(
                id=rid,
                code=ErrorCode.ALREADY_AUTHENTICATED.value,
                message=ErrorCode.ALREADY_AUTHENTICATED.description,
            )
        )
        return
    session.bad_frames = 0
    task = asyncio.create_task(_run(ep, session, frame, rid))
    session.inflight.add(task)
    task.add_done_callback(session.inflight.discard)


async def _run(ep: Endpoint, session: Session, frame: object, rid: str | None) -> None:
    started = time.perf_counter()
    name = _wire_type(frame)
    # Taken before the first await: tasks first run in creation order, which is read order.
    place = ordering(session).place(ep.router.order_of(frame))
    try:
        if place is not None:
            await place.wait()
        principal = session.principal
        assert principal is not None
        reply = await ep.router.handle(Call(session, principal, place), frame)
    except GatewayError as exc:
        reply = error_frame(rid, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("command %s failed", name)
        reply = Error(
            id=rid,
            code=ErrorCode.INTERNAL.value,
            message=ErrorCode.INTERNAL.description,
            retryable=True,
        )
    finally:
        if place is not None:
            place.end()
    session.send(reply)
    ep.metrics.command(name, time.perf_counter() - started, reply)


def _wire_type(frame: object) -> str:
    """The frame's ``type`` on the wire (``balance``, not the class ``GetBalance``)."""
    tag = getattr(getattr(type(frame), "__struct_config__", None), "tag", None)
    return tag if isinstance(tag, str) else type(frame).__name__.lower()
