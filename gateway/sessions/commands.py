"""Command dispatch: each authenticated client frame becomes a reply frame.

Handlers check scope first (an app token reaches only its own member, a POS only its
merchant's members), then call the ledger or the read path. Domain refusals come back as
``error`` frames with their stable code; the session carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import AuthError, Forbidden, GatewayError, Refused
from gateway.ledger import model
from gateway.ledger.engine import Ledger
from gateway.ledger.reads import Reads
from protocol.codes import ErrorCode
from protocol.messages import (
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    HoldState,
    Outcome,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Release,
    Reserve,
    Result,
    SaleReceipt,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.fanout.feeds import Feeds
    from gateway.sessions.session import Session


def error_frame(request_id: str | None, exc: GatewayError) -> Error:
    return Error(id=request_id, code=exc.code.value, message=exc.message, retryable=exc.retryable)


def outcome_frame(request_id: str, outcome: Outcome) -> Result | Error:
    if outcome.ok and outcome.data is not None:
        return Result(id=request_id, data=outcome.data)
    err = outcome.error
    assert err is not None
    return Error(id=request_id, code=err.code, message=err.message, retryable=err.retryable)


@dataclass(slots=True)
class Services:
    ledger: Ledger
    reads: Reads
    feeds: Feeds
    max_subscriptions: int
    #: Checks a token (``gateway.auth.verify`` with the node's secret and leeway). Left out of
    #: the repr: a ``functools.partial`` shows its arguments, the secret among them.
    verify: Callable[[str], Principal] = field(default=lambda token: _no_tokens(), repr=False)


def _no_tokens() -> Principal:
    raise AuthError("this node checks no tokens")


def origin(p: Principal) -> model.Origin:
    return model.Origin(
        merchant=p.merchant, channel=p.channel, store=p.store or "", terminal=p.terminal or ""
    )


Handler = Callable[["Dispatcher", "Session", "Principal", Any], Awaitable[object]]


class Dispatcher:
    """Routes each client frame type to its handler. Domain modules add their own commands
    with ``register`` (see ``gateway.loyalty``), so this module stays about sessions."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self._handlers: dict[type, Handler] = {
            Ping: _ping,
            Refresh: _refresh,
            Subscribe: _subscribe,
            Unsubscribe: _unsubscribe,
            GetBalance: _balance,
            GetOutcome: _outcome,
            Reserve: _ledger_op,
            Commit: _ledger_op,
            Release: _ledger_op,
        }

    def register(self, frame_type: type, handler: Handler) -> None:
        self._handlers[frame_type] = handler

    async def authorize_member(self, p: Principal, member: str) -> None:
        if p.kind == "app" and member != p.member:
            raise Forbidden("an app session may only reach its own member")
        owner = await self.s.reads.member_merchant(member)
        if owner != p.merchant:
            # another merchant's member is answered exactly as an unknown one: no existence
            # oracle across merchants
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)

    @staticmethod
    def require_pos(p: Principal) -> None:
        if p.kind != "pos":
            raise Forbidden("only POS and shop integrations may change points")

    async def handle(self, session: Session, frame: object) -> object:
        """Return the reply frame for ``frame``; raises ``GatewayError`` for refusals."""
        p = session.principal
        assert p is not None
        handler = self._handlers.get(type(frame))
        if handler is None:
            raise Refused("unsupported command", ErrorCode.UNKNOWN_TYPE)
        return await handler(self, session, p, frame)

    async def subscribe_on_behalf(self, session: Session, frame: Subscribe) -> object:
        """A subscribe another command makes for the session (``cashier_view``): it keeps the
        presence pushes the session has asked for, decided in the session's watch turn, so a
        ``subscribe`` the till sent around it (turning presence on or off) is not undone."""
        p = session.principal
        assert p is not None
        async with watch_turn(session):
            if not frame.presence and self.s.feeds.watches_presence(frame.member, session):
                frame = msgspec.structs.replace(frame, presence=True)
            return await _subscribe_in_turn(self, session, p, frame)


async def _ping(d: Dispatcher, session: Session, p: Principal, frame: Ping) -> object:
    return Result(id=frame.id, data=Pong())


async def _refresh(d: Dispatcher, session: Session, p: Principal, frame: Refresh) -> object:
    """A new token for the same scope: the session goes on past the old one's expiry."""
    new = d.s.verify(frame.token)  # AuthError: token_invalid / token_expired, session kept
    if not new.same_scope(p):
        raise AuthError("a refresh token must have the session's scope")
    session.principal = new
    return Result(id=frame.id, data=Refreshed(expires_at=int(new.expires * 1000)))


@contextlib.asynccontextmanager
async def watch_turn(session: Session) -> AsyncIterator[None]:
    """Subscription commands of one session take effect one at a time, in the order they were
    read. Each runs as its own task, and a subscribe waits while its member's feed opens: a
    pipelined unsubscribe (or a ``replace``) would otherwise run meanwhile, and the subscribe
    would then add the session to a feed it no longer lists (pushes after the unsubscribe, a
    feed that never closes, the subscription limit bypassed). Enter before any await, so the
    turn is taken when the command's task first runs, which is in read order."""
    before = session.watch_turn
    mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    session.watch_turn = mine
    try:
        if before is not None and not before.done():
            await asyncio.wait((before,))  # never cancels ``before`` if this task is cancelled
        yield
    finally:
        mine.set_result(None)
        if session.watch_turn is mine:
            session.watch_turn = None


async def _unsubscribe(d: Dispatcher, session: Session, p: Principal, frame: Unsubscribe) -> object:
    async with watch_turn(session):
        if frame.member in session.subscriptions:
            session.subscriptions.discard(frame.member)
            d.s.feeds.leave(frame.member, session)
        return Result(id=frame.id, data=Unsubscribed(member=frame.member))


async def _balance(d: Dispatcher, session: Session, p: Principal, frame: GetBalance) -> object:
    await d.authorize_member(p, frame.member)
    bal = await d.s.reads.balance(frame.member)
    if bal is None:
        raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
    return Result(id=frame.id, data=bal)


def op_id(p: Principal, op: str) -> str:
    """The ledger id of a client's ``op``. A register's is its own (receipt numbers, say); an
    app's lives in a space of its member's, so an app can neither take a register's future id
    first (its sale would get idempotency_conflict) nor probe which ids exist. ``~`` and ``/``
    are outside the client id charset: no client can name this space."""
    return op if p.kind == "pos" else f"~app/{p.member}/{op}"


async def _outcome(d: Dispatcher, session: Session, p: Principal, frame: GetOutcome) -> object:
    found = await d.s.reads.outcome(p.merchant, op_id(p, frame.op))
    if found is None or (p.kind == "app" and _outcome_member(found) != p.member):
        raise Refused("no operation with that id", ErrorCode.OPERATION_NOT_FOUND)
    d.s.ledger.replied([found])  # this node's reads now never go below the version it tells
    if found.op != frame.op:  # an app's: told by the id it sent
        data = found.data
        if isinstance(data, SaleReceipt | HoldState):
            data = msgspec.structs.replace(data, op=frame.op)
        found = msgspec.structs.replace(found, op=frame.op, data=data)
    return Result(id=frame.id, data=found)


async def _ledger_op(
    d: Dispatcher, session: Session, p: Principal, frame: Reserve | Commit | Release
) -> object:
    d.require_pos(p)
    o = origin(p)
    op: model.Op
    if isinstance(frame, Reserve):
        op = model.Reserve(frame.op, frame.member, frame.points, frame.ttl_ms, o)
    elif isinstance(frame, Commit):
        op = model.Commit(frame.op, frame.member, frame.hold, frame.points, o)
    else:
        op = model.Release(frame.op, frame.member, frame.hold, o)
    return outcome_frame(frame.id, await d.s.ledger.execute(op))


async def _subscribe(d: Dispatcher, session: Session, p: Principal, frame: Subscribe) -> object:
    async with watch_turn(session):
        return await _subscribe_in_turn(d, session, p, frame)


async def _subscribe_in_turn(
    d: Dispatcher, session: Session, p: Principal, frame: Subscribe
) -> object:
    await d.authorize_member(p, frame.member)
    # A POS moving on to the next customer stops watching everyone else, once the new member
    # is watched: a refused subscribe changes nothing.
    others = [m for m in session.subscriptions if m != frame.member] if frame.replace else []
    if frame.member not in session.subscriptions:
        if len(session.subscriptions) - len(others) >= d.s.max_subscriptions:
            raise Refused(
                f"at most {d.s.max_subscriptions} members per session",
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            )
        session.subscriptions.add(frame.member)
        watched = False
    else:
        watched = True  # a re-subscribe (a gap fill, a presence change): the feed is kept
    try:
        joined = await d.s.feeds.join(frame.member, session, frame.since, frame.presence)
    except BaseException:
        if not watched:  # a re-subscribe that failed leaves the subscription as it was
            session.subscriptions.discard(frame.member)
        raise
    for other in others:
        if other in session.subscriptions:
            session.subscriptions.discard(other)
            d.s.feeds.leave(other, session)
    if session.closing or frame.member not in session.subscriptions:
        d.s.feeds.leave(frame.member, session)
    # Queued before any later change can be: join() returned without yielding after adding
    # the session to the feed, and the caller queues this reply at once.
    return Result(
        id=frame.id,
        data=Subscribed(
            member=frame.member,
            balance=joined.balance,
            missed=joined.missed,
            recovered=joined.recovered,
            presence=joined.presence,
            presence_seq=None if joined.presence is None else joined.presence_seq,
        ),
    )


def _outcome_member(o: Outcome) -> str | None:
    data = o.data
    return getattr(data, "member", None)
