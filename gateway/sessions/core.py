"""The session-level commands: ``ping``, ``refresh`` (a new token for the same scope),
``subscribe`` and ``unsubscribe`` (watch a member's balance and presence through its feed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from gateway.errors import AuthError, Refused
from gateway.fanout import Feeds
from gateway.sessions.ordering import Ordering
from gateway.sessions.router import Call, Router
from gateway.sessions.scope import Scope
from protocol.codes import ErrorCode
from protocol.messages import (
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Result,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.sessions.session import Session


def ordering(session: Session) -> Ordering:
    """The session's order, made the first time a command needs it."""
    if session.order is None:
        session.order = Ordering()
    return session.order


async def ping(call: Call, frame: Ping) -> object:
    return Result(id=frame.id, data=Pong())


class Refreshes:
    def __init__(self, verify: Callable[[str], Principal]) -> None:
        self._verify = verify

    async def refresh(self, call: Call, frame: Refresh) -> object:
        """A new token for the same scope: the session goes on past the old one's expiry."""
        new = self._verify(frame.token)  # AuthError: token_invalid / token_expired, kept
        if not new.same_scope(call.principal):
            raise AuthError("a refresh token must have the session's scope")
        call.session.principal = new
        return Result(id=frame.id, data=Refreshed(expires_at=int(new.expires * 1000)))


class Subscriptions:
    def __init__(self, feeds: Feeds, scope: Scope, max_subscriptions: int) -> None:
        self._feeds = feeds
        self._scope = scope
        self._max = max_subscriptions

    async def subscribe(self, call: Call, frame: Subscribe) -> object:
        async with ordering(call.session).watch():
            return await self._subscribe(call.session, call.principal, frame)

    async def unsubscribe(self, call: Call, frame: Unsubscribe) -> object:
        session = call.session
        async with ordering(session).watch():
            if frame.member in session.subscriptions:
                session.subscriptions.discard(frame.member)
                self._feeds.leave(frame.member, session)
            return Result(id=frame.id, data=Unsubscribed(member=frame.member))

    async def on_behalf(self, session: Session, frame: Subscribe) -> Subscribed:
        """A subscribe another command makes for the session (``cashier_view``): it keeps the
        presence pushes the session has asked for, decided in the session's watch turn, so a
        ``subscribe`` the till sent around it (turning presence on or off) is not undone."""
        p = session.principal
        assert p is not None
        async with ordering(session).watch():
            if not frame.presence and self._feeds.watches_presence(frame.member, session):
                frame = msgspec.structs.replace(frame, presence=True)
            reply = await self._subscribe(session, p, frame)
        assert isinstance(reply.data, Subscribed)
        return reply.data

    async def _subscribe(self, session: Session, p: Principal, frame: Subscribe) -> Result:
        await self._scope.authorize_member(p, frame.member)
        # A POS moving on to the next customer stops watching everyone else, once the new
        # member is watched: a refused subscribe changes nothing.
        others = [m for m in session.subscriptions if m != frame.member] if frame.replace else []
        if frame.member not in session.subscriptions:
            if len(session.subscriptions) - len(others) >= self._max:
                raise Refused(
                    f"at most {self._max} members per session", ErrorCode.TOO_MANY_SUBSCRIPTIONS
                )
            session.subscriptions.add(frame.member)
            watched = False
        else:
            watched = True  # a re-subscribe (a gap fill, a presence change): the feed is kept
        try:
            joined = await self._feeds.join(frame.member, session, frame.since, frame.presence)
        except BaseException:
            if not watched:  # a re-subscribe that failed leaves the subscription as it was
                session.subscriptions.discard(frame.member)
            raise
        for other in others:
            if other in session.subscriptions:
                session.subscriptions.discard(other)
                self._feeds.leave(other, session)
        if session.closing or frame.member not in session.subscriptions:
            self._feeds.leave(frame.member, session)
        # Queued before any later change can be: join() returned without yielding after
        # adding the session to the feed, and the caller queues this reply at once.
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


def register(
    router: Router,
    feeds: Feeds,
    scope: Scope,
    verify: Callable[[str], Principal],
    max_subscriptions: int,
) -> Subscriptions:
    """Register the session-level commands; returns the subscriptions, which other commands
    use to subscribe on a session's behalf."""
    subs = Subscriptions(feeds, scope, max_subscriptions)
    router.add(Ping, ping)
    router.add(Refresh, Refreshes(verify).refresh)
    router.add(Subscribe, subs.subscribe)
    router.add(Unsubscribe, subs.unsubscribe)
    return subs


__all__ = ["Refreshes", "Subscriptions", "ordering", "ping", "register"]
